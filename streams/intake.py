"""Batch intake for the hot path: whole batches straight from an aiokafka consumer, two at
a time.

Faust hands its agents one event at a time; profiled, that intake took a third of a
worker's event loop, more than the stage's own work. The annotate stage only ever wants
batches, so it reads them itself, in a consumer group of its own, inside the Faust app
(started and stopped with the worker; teach stays a Faust agent).

A batch goes through two steps: `prepare` (decode, the student in its child process) and
`finish` (route, send, wait for Kafka's acknowledgements, count). Run one after the other,
each process waited for the other half of the time; so the next batch is prepared while the
one before finishes. `finish` and the commits run strictly in batch order.

Guarantees, as before: a batch's outputs are acknowledged by Kafka before its offsets are
committed; on a rebalance the batch finishing finishes and commits before the partitions
are given up, and a batch fetched before the rebalance is dropped unfinished: whoever owns
its partitions afterwards reads it again from the committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from mode import Service

log = logging.getLogger("loopline")

Prepare = Callable[[Sequence[ConsumerRecord]], Awaitable[Any]]
# Takes what `prepare` returned; returns what became of each record (for `on_done`).
Finish = Callable[[Any], Awaitable[Sequence[Any]]]
# The records of a finished batch, what became of them, and the seconds since it was fetched.
Done = Callable[[Sequence[ConsumerRecord], Sequence[Any], float], None]
# Batches in flight: one being prepared while the one before it finishes.
PIPELINE_DEPTH = 2


def next_offsets(records: Sequence[ConsumerRecord]) -> dict[TopicPartition, OffsetAndMetadata]:
    """The offsets to commit once `records` are done: one past the last, per partition."""
    last: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        last[tp] = max(last.get(tp, -1), record.offset)
    return {tp: OffsetAndMetadata(offset + 1, "") for tp, offset in last.items()}


class BatchIntake(Service, ConsumerRebalanceListener):
    """Prepares and finishes batches of at most `batch_size` records, waiting at most
    `window_s` for one."""

    def __init__(
        self,
        consumer_options: dict,
        topic: str,
        group: str,
        prepare: Prepare,
        finish: Finish,
        *,
        batch_size: int,
        window_s: float,
        on_error: Callable[[BaseException], Awaitable[None]],
        on_done: Done | None = None,
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
        self.prepare = prepare
        self.finish = finish
        self.batch_size = batch_size
        self.window_ms = max(1, int(window_s * 1000))
        self.on_error = on_error
        self.on_done = on_done
        # Held while a batch finishes and commits; a rebalance waits for it.
        self._batch_lock = asyncio.Lock()
        # Each batch's task, oldest first; a task returns False when its batch failed.
        self._in_flight: deque[asyncio.Task[bool]] = deque()
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
        # Like the Faust agents: batches in flight are not waited for; their offsets are not
        # committed, so the next owner of their partitions redoes them.
        for task in (*self._in_flight, self._lag_base):
            if task is not None:
                task.cancel()
        if self.consumer is not None:
            await self.consumer.stop()

    @Service.task
    async def _fetch_and_handle(self) -> None:
        while not self.should_stop:
            # A free place first, then the records: taken when they can start, a batch holds
            # everything that arrived meanwhile, and none of it waits in hand.
            while len(self._in_flight) >= PIPELINE_DEPTH:
                if not await self._in_flight.popleft():
                    return  # a batch failed: on_error is stopping the worker
            fetched = await self.consumer.getmany(
                timeout_ms=self.window_ms, max_records=self.batch_size
            )
            records = [record for batch in fetched.values() for record in batch]
            if not records:
                continue
            generation = self._generation
            before = self._in_flight[-1] if self._in_flight else None
            self._in_flight.append(
                asyncio.create_task(self._handle_in_turn(records, generation, before))
            )

    async def _handle_in_turn(
        self, records: list[ConsumerRecord], generation: int, before: asyncio.Task[bool] | None
    ) -> bool:
        """Prepare at once; finish and commit after the batch `before` has."""
        started = time.perf_counter()
        try:
            prepared = await self.prepare(records)
        except Exception as exc:  # a bug: expected errors were routed by `prepare`
            await self.on_error(exc)
            return False
        if before is not None and not await before:
            return False
        async with self._batch_lock:
            if generation != self._generation:
                return True
            try:
                outcomes = await self.finish(prepared)
            except Exception as exc:  # a bug: expected errors were routed by `finish`
                await self.on_error(exc)
                return False
            await self._commit(records)
        if self.on_done is not None:
            self.on_done(records, outcomes, time.perf_counter() - started)
        return True

    async def _commit(self, records: list[ConsumerRecord]) -> None:
        offsets = next_offsets(records)
        try:
            await self.consumer.commit(offsets)
            self._committed.update({tp: meta.offset for tp, meta in offsets.items()})
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on meanwhile: the outputs are in Kafka, and the next owner of
            # these partitions redoes the records, byte for byte.
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
        """Let the batch finishing commit before the partitions move; batches fetched
        before now are stale."""
        async with self._batch_lock:
            self._generation += 1

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        # Read apart from the rebalance, which must not wait on more requests to the group.
        self._committed = {}
        self._lag_base = asyncio.create_task(self._read_committed(list(assigned)))

    async def _read_committed(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            self._committed.setdefault(tp, await self.consumer.committed(tp) or 0)
