"""Batch intake for the hot path: whole batches straight from an aiokafka consumer.

Faust hands its agents one event at a time; profiled, that intake took a third of a
worker's event loop, more than the stage's own work. The annotate stage only ever wants
batches, so it reads them itself, in a consumer group of its own, inside the Faust app
(started and stopped with the worker; teach stays a Faust agent).

Guarantees, as before: a batch's outputs are acknowledged by Kafka before its offsets are
committed; batches are handled one at a time, in order, while the next one is fetched; on a
rebalance the batch in flight finishes and commits before the partitions are given up, and
a batch fetched before the rebalance is dropped unhandled: whoever owns its partitions
afterwards reads it again from the committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from mode import Service

log = logging.getLogger("loopline")

Handler = Callable[[Sequence[ConsumerRecord]], Awaitable[None]]


def next_offsets(records: Sequence[ConsumerRecord]) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offsets to commit once `records` are done: one past the last, per partition."""
    last: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        last[tp] = max(last.get(tp, -1), record.offset)
    return {tp: OffsetAndMetadata(offset + 1, "") for tp, offset in last.items()}


class BatchIntake(Service, ConsumerRebalanceListener):
    """Feeds `handle` batches of at most `batch_size` records, waiting at most `window_s`."""

    def __init__(
        self,
        consumer_options: dict,
        topic: str,
        group: str,
        handle: Handler,
        *,
        batch_size: int,
        window_s: float,
        on_error: Callable[[BaseException], Awaitable[None]],
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.consumer_options = {
            **consumer_options,
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": batch_size,
            # Group joins wait for a dead member for session_timeout: keep failover quick.
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 1_000,
        }
        self.consumer: AIOKafkaConsumer | None = None
        self.topic = topic
        self.handle = handle
        self.batch_size = batch_size
        self.window_ms = max(1, int(window_s * 1000))
        self.on_error = on_error
        # Held while a batch is handled and committed; a rebalance waits for it.
        self._batch_lock = asyncio.Lock()
        self._in_flight: asyncio.Task | None = None
        # Bumped by each rebalance: a batch fetched in an earlier generation is stale.
        self._generation = 0
        # The group's committed offset of each assigned partition, for the lag metric.
        self._committed: dict[TopicPartition, int] = {}
        self._lag_base: asyncio.Task | None = None

    async def on_start(self) -> None:
        # aiokafka clients belong to the running event loop: made here, not in __init__.
        self.consumer = AIOKafkaConsumer(**self.consumer_options)
        await self.consumer.start()
        self.consumer.subscribe([self.topic], listener=self)

    async def on_stop(self) -> None:
        # Like the Faust agents: a batch in flight is not waited for; its offsets are not
        # committed, so the next owner of its partitions redoes it.
        for task in (self._in_flight, self._lag_base):
            if task is not None:
                task.cancel()
        if self.consumer is not None:
            await self.consumer.stop()

    @Service.task
    async def _fetch_and_handle(self) -> None:
        while not self.should_stop:
            fetched = await self.consumer.getmany(
                timeout_ms=self.window_ms, max_records=self.batch_size
            )
            records = [record for batch in fetched.values() for record in batch]
            if not records:
                continue
            generation = self._generation
            if self._in_flight is not None:
                await self._in_flight
            self._in_flight = asyncio.create_task(self._handle_then_commit(records, generation))

    async def _handle_then_commit(self, records: list[ConsumerRecord], generation: int) -> None:
        async with self._batch_lock:
            if generation != self._generation:
                return
            try:
                await self.handle(records)
            except Exception as exc:  # a bug: expected errors were routed by `handle`
                await self.on_error(exc)
                return
            offsets = next_offsets(records)
            try:
                await self.consumer.commit(offsets)
                self._committed.update({tp: meta.offset for tp, meta in offsets.items()})
            except (CommitFailedError, IllegalStateError) as exc:
                # The group moved on meanwhile: the outputs are in Kafka, and the next owner
                # of these partitions redoes the records, byte for byte.
                log.warning("offsets not committed after a rebalance: %s", exc)

    def lag(self) -> dict[TopicPartition, int]:
        """Messages of each assigned partition not yet committed by this worker."""
        if self.consumer is None:
            return {}
        lags = {}
        for tp in self.consumer.assignment():
            end = self.consumer.highwater(tp)
            if end is not None and tp in self._committed:
                lags[tp] = end - self._committed[tp]
        return lags

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        """Let the batch in flight finish and commit before the partitions move; batches
        fetched before now are stale."""
        async with self._batch_lock:
            self._generation += 1

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        # Read apart from the rebalance, which must not wait on more requests to the group.
        self._committed = {}
        self._lag_base = asyncio.create_task(self._read_committed(list(assigned)))

    async def _read_committed(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            self._committed.setdefault(tp, await self.consumer.committed(tp) or 0)
