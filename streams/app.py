"""The Faust app of one task: its consumer group, topics and agents.

All workers of a task share its consumer groups (named after the topic prefix: Faust's for
the agents, `annotate`'s for its batch intake), so starting another worker is all it takes
to split the partitions between them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import faust

from loopline.schemas import TaskConfig
from loopline.schemas.task import TOPIC_SUFFIXES
from loopline.streams.connections import faust_options
from loopline.streams.settings import Settings
from loopline.streams.topics import TaskTopics, declare, max_message_bytes

log = logging.getLogger("loopline")


def group_id(task: TaskConfig) -> str:
    return f"{task.topics.prefix}workers"


def create_app(settings: Settings, task: TaskConfig) -> tuple[faust.App, TaskTopics]:
    """The worker's app; its producer may send records as large as the output topics take."""
    outputs = [task.topic(role) for role in TOPIC_SUFFIXES if role != "texts"]
    limit = max_message_bytes(settings, outputs)
    datadir = settings.state_dir / "faust" / group_id(task)
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        group_id(task),
        **faust_options(settings),
        store="memory://",
        web_enabled=False,
        datadir=str(datadir),
        topic_partitions=task.topics.partitions,
        topic_replication_factor=task.topics.replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        # Group joins wait session_timeout/2 for a dead member: keep failover quick.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        # Stages hand the producer whole record batches (see `outputs.send_all`): lingering
        # would only delay them.
        producer_linger=0.0,
        producer_acks=-1,
        producer_max_request_size=limit,
        # On shutdown, do not wait for in-flight batches (an LLM batch can take a minute):
        # their offsets are not committed, so the next worker simply redoes them.
        stream_wait_empty=False,
    )
    return app, declare(app, task, limit)


def register_batch_agent(
    app: faust.App,
    topic: faust.TopicT,
    name: str,
    handle: Callable[[Sequence[faust.types.Message]], Awaitable[object]],
    *,
    batch_size: int,
    window_s: float,
) -> None:
    """An agent that hands `handle` the messages of batches of at most `batch_size` events,
    waiting at most `window_s` to fill one.

    While one batch is handled, the next one fills: Faust's intake and the model overlap. A
    batch's messages stay held (Faust's reference count) until `handle` has returned, that
    is until its outputs are in Kafka, so no offset is committed before its outputs exist.
    Batches are handled one after another, in order.
    """

    async def handle_then_release(events: Sequence[faust.EventT]) -> None:
        try:
            await handle([event.message for event in events])
        except Exception as exc:  # a bug: expected errors were routed by `handle`
            await crash_loudly(app, name, exc)
            return
        for event in events:
            event.message.ack(app.consumer)

    @app.agent(topic, name=name)
    async def agent(stream: faust.StreamT) -> None:
        in_flight: asyncio.Task | None = None
        async for events in stream.take_events(batch_size, within=window_s):
            for event in events:
                event.message.incref()  # released by handle_then_release
            if in_flight is not None:
                await in_flight
            in_flight = asyncio.create_task(handle_then_release(events))


async def crash_loudly(app: faust.App, agent: str, exc: BaseException) -> None:
    """Stop the whole worker on a bug, instead of Faust's silent agent restart."""
    log.critical(
        "agent %s failed with an unexpected error; stopping the worker", agent, exc_info=exc
    )
    await app.crash(exc)
