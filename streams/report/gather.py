"""Reading what the report needs: the task's topics (the truth) and the counters in Redis."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError

from loopline.schemas import (
    Correction,
    Prediction,
    RoutedItem,
    ServiceError,
    TaskConfig,
)
from loopline.streams import worker as worker_assembly
from loopline.streams.agents import teach
from loopline.streams.connections import redis_client
from loopline.streams.models.registry import read_registry
from loopline.streams.report.series import Stamped, TaskRecords
from loopline.streams.review.queue import ReviewQueue
from loopline.streams.settings import Settings
from loopline.streams.topics import read_to_end

TOPICS: dict[str, tuple[str, type[BaseModel]]] = {
    "predictions": ("predictions", Prediction),
    "llm_requests": ("llm", RoutedItem),
    "review": ("review", RoutedItem),
    "corrections": ("corrections", Correction),
}


@dataclass(frozen=True)
class RedisFigures:
    tokens_by_minute: dict[int, int]
    llm_answers: int
    review_pending: int | None
    """Items waiting in the review service now; None when no service has built its queue."""


def read_records(settings: Settings, task: TaskConfig) -> TaskRecords:
    """Every message on the task's topics, in timestamp order (bad ones are counted), and the
    model registry."""
    records = TaskRecords()
    bad: Counter[str] = Counter()
    for field, (role, model) in TOPICS.items():
        stamped = []
        for record in read_to_end(settings, task.topic(role), timeout_s=120.0):
            try:
                message = model.model_validate_json(record.value or b"")
            except ValidationError:
                bad[role] += 1
                continue
            stamped.append(Stamped(message, record.timestamp))
        getattr(records, field).extend(sorted(stamped, key=lambda s: s.ms))
    records.undecodable = dict(bad)
    records.registry = read_registry(settings, task)
    return records


def read_redis(settings: Settings, task: TaskConfig) -> RedisFigures:
    return asyncio.run(_read_redis(settings, task))


async def _read_redis(settings: Settings, task: TaskConfig) -> RedisFigures:
    redis = redis_client(settings)
    try:
        ledger = worker_assembly.ledger(redis, task, teach.STAGE)
        counts = await ledger.counts()
        queue = ReviewQueue(redis, task.topics.prefix)
        pending = (await queue.counts())["pending"] if await queue.is_ready() else None
        return RedisFigures(
            tokens_by_minute=await ledger.tokens_by_minute(),
            llm_answers=counts.get("prediction", 0),
            review_pending=pending,
        )
    except RedisError as exc:
        raise ServiceError(
            f"cannot reach Redis at {settings.redis_url} ({exc}); start it with "
            "`loopline infra up` or set LOOPLINE_REDIS_URL"
        ) from None
    finally:
        await redis.aclose()
