"""Keeping the queue in Redis in step with the topics it is a projection of.

Every service instance reads all partitions of `review`, `answers` and `corrections` (no
consumer-group commits: the next offset of each partition is stored in Redis, updated in the
same Lua script as the change it records, so a record is applied exactly once however many
instances read it). When Redis loses its state (FLUSHALL, a new server) the generation
marker disappears: the ingest starts a new generation, reads the topics again from the
start, and only then lets the queue serve items, so nothing already decided is served.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import ValidationError

from loopline.schemas import Answer, Correction, RoutedItem, ServiceError, TaskConfig
from loopline.streams.review.agreement import answer_key
from loopline.streams.review.queue import AppliedAnswer, ReviewQueue
from loopline.streams.review.service import held_from_answer

log = logging.getLogger(__name__)

ROLES = ("review", "answers", "corrections")


class Ingest:
    """Applies the task's review, answers and corrections topics to the queue."""

    def __init__(self, task: TaskConfig, queue: ReviewQueue, consumer: AIOKafkaConsumer) -> None:
        self.task = task
        self.queue = queue
        self.consumer = consumer
        self.generation: str | None = None
        self.ready = asyncio.Event()
        self._catch_up: dict[TopicPartition, int] = {}
        self._roles = {task.topic(role): role for role in ROLES}
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask `run` to return after the step in progress (cancelling it mid-way can leave a
        Redis call hanging)."""
        self._stopping.set()

    async def run(self) -> None:
        """Follow the topics until `stop` (the consumer must be started)."""
        # aiokafka has no public call that loads partition metadata for assigned topics.
        cluster = await self.consumer._client.fetch_all_metadata()
        partitions = []
        for topic in self._roles:
            numbers = cluster.partitions_for_topic(topic)
            if not numbers:
                raise ServiceError(f"topic {topic} does not exist; the service creates it at start")
            partitions += [TopicPartition(topic, p) for p in sorted(numbers)]
        self.consumer.assign(partitions)
        while not self._stopping.is_set():
            await self.step(partitions)

    async def step(self, partitions: list[TopicPartition]) -> None:
        if await self.queue.current_generation() != self.generation or self.generation is None:
            await self._restart(partitions)
        batches = await self.consumer.getmany(timeout_ms=200, max_records=2000)
        for tp, records in batches.items():
            if not await self._apply(tp, records):
                return  # Redis was flushed under us: restart on the next step
        if not self.ready.is_set() and await self._caught_up():
            await self.queue.mark_ready(self.generation or "")
            self.ready.set()

    async def _caught_up(self) -> bool:
        for tp, end in self._catch_up.items():
            if await self.consumer.position(tp) < end:
                return False
        return True

    async def _restart(self, partitions: list[TopicPartition]) -> None:
        """Start reading where the projection of the current generation stands."""
        self.ready.clear()
        self.generation = await self.queue.generation(uuid.uuid4().hex)
        offsets = await self.queue.offsets()
        for tp in partitions:
            self.consumer.seek(tp, offsets.get(f"{tp.topic}:{tp.partition}", 0))
        ends = await self.consumer.end_offsets(partitions)
        self._catch_up = {tp: end for tp, end in ends.items()}
        log.info("review ingest: generation %s, reading %d partitions", self.generation, len(ends))

    async def _apply(self, tp: TopicPartition, records: list[ConsumerRecord]) -> bool:
        role = self._roles[tp.topic]
        where = f"{tp.topic}:{tp.partition}"
        generation = self.generation or ""
        if role == "review":
            items = [
                (r.offset, item, r.value, r.timestamp)
                for r in records
                if (item := _parse(RoutedItem, r)) is not None
            ]
            return not items or await self.queue.apply_review(generation, where, items)
        if role == "answers":
            answers = [
                AppliedAnswer(
                    answer_id=answer.answer_id,
                    item_id=answer.id,
                    held=held_from_answer(answer),
                    lease_id=answer.lease_id,
                    offset=r.offset,
                )
                for r in records
                if (answer := _parse(Answer, r)) is not None
            ]
            return not answers or await self.queue.apply_answers(answers, (generation, where))
        decided = [
            (r.offset, c.id, answer_key(c.decision, c.labels, c.spans))
            for r in records
            if (c := _parse(Correction, r)) is not None and c.source == "human"
        ]
        return not decided or await self.queue.apply_decided(generation, where, decided)


def _parse(model: type, record: ConsumerRecord):  # noqa: ANN202 (a message or None)
    try:
        return model.model_validate_json(record.value or b"")
    except ValidationError as exc:
        log.warning(
            "skipping %s:%s@%s, not a %s: %s",
            record.topic,
            record.partition,
            record.offset,
            model.__name__,
            exc.errors()[0]["msg"],
        )
        return None
