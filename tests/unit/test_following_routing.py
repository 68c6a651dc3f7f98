"""A worker that follows the registry routes each batch by the policy of the version that
answered it."""

from __future__ import annotations

import asyncio

from loopline.schemas import Annotation
from loopline.schemas.task import RoutingConfig
from loopline.streams.models.follow import FollowingStudent


class Model:
    """Stands in for a model in a child process: always 0.8 sure."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.closed = False

    async def annotate(self, texts):
        return [Annotation(labels=["a"], confidence=0.8) for _ in texts]

    def close(self) -> None:
        self.closed = True


def test_the_routing_swaps_with_the_model_between_batches():
    async def scenario():
        old, new = Model("v1"), Model("v2")
        student = FollowingStudent(old, RoutingConfig(accept_threshold=0.9))
        await student.annotate(["x"])
        seen = [(student.version, student.routing.accept_threshold)]
        await student.offer(new, RoutingConfig(accept_threshold=0.75))
        await student.annotate(["x"])
        seen.append((student.version, student.routing.accept_threshold))
        return seen, old.closed

    seen, old_closed = asyncio.run(scenario())
    assert seen == [("v1", 0.9), ("v2", 0.75)]
    assert old_closed
