"""What a stage sends for one item, and sending it safely. Shared by every agent.

Building outputs is pure (tested without Kafka); `send_all` is the only I/O, and it waits
for Kafka's acknowledgement so that no offset is committed before its outputs exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from loopline.processors.routing import Decision
from loopline.schemas import (
    InputError,
    Message,
    Prediction,
    RoutedItem,
    Suggestion,
    TaskConfig,
    TextIn,
)
from loopline.streams.codec import dead_letter, encode
from loopline.streams.state import Outcome
from loopline.streams.topics import TaskTopics

T = TypeVar("T")

# What a record batch of one record adds to its key and value, at most: a 61-byte batch
# header and the record's varints (no headers).
RECORD_BATCH_OVERHEAD_BOUND = 128
KEY_PARTITIONER = DefaultPartitioner()
# A later revision of an id supersedes an earlier one on `predictions`.
REVISION = {"student": 0, "llm": 1, "human": 2}


@dataclass(frozen=True)
class Output:
    role: str
    key: str
    message: Message

    @cached_property
    def value(self) -> bytes:
        return encode(self.message)

    @property
    def record_bytes(self) -> int:
        """Its size as one record batch on the wire: what a topic's max.message.bytes bounds."""
        return DefaultRecordBatchBuilder.estimate_size_in_bytes(
            self.key.encode("utf-8"), self.value, []
        )

    def fits(self, max_message_bytes: int) -> bool:
        """Whether its record batch is at most `max_message_bytes`; sized exactly only near
        the limit (the estimate costs more than routing the item)."""
        bound = len(self.key) * 4 + len(self.value) + RECORD_BATCH_OVERHEAD_BOUND
        return bound <= max_message_bytes or self.record_bytes <= max_message_bytes


def outputs_for(
    item: TextIn, suggestions: list[Suggestion], decision: Decision, task: TaskConfig
) -> list[Output]:
    """An accepted item's prediction (from the latest suggestion) and/or its routed copy."""
    outputs = []
    if decision.destination == "accept":
        latest = suggestions[-1]
        prediction = Prediction.from_suggestion(item, task.name, latest, REVISION[latest.source])
        outputs.append(Output("predictions", item.id, prediction))
    if decision.destination != "accept" or decision.review_reason:
        route_to = "review" if decision.review_reason else decision.destination
        routed = RoutedItem(
            id=item.id,
            task=task.name,
            item=item,
            route=route_to,
            suggestions=suggestions,
            reason=decision.review_reason or decision.reason,
            detail=decision.detail,
            priority=decision.priority,
        )
        outputs.append(Output(route_to, item.id, routed))
    return outputs


class Record(Protocol):
    """A consumed Kafka message, as Faust (`event.message`) and aiokafka both give it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp: float | int


def timestamp_s(message: Record) -> float:
    """A consumed message's Kafka timestamp in seconds: Faust gives seconds (a float),
    aiokafka milliseconds (an int)."""
    stamp = message.timestamp
    return stamp / 1000 if isinstance(stamp, int) else stamp


def settle(
    message: Record,
    outputs: list[Output],
    decision: Decision,
    *,
    task: str,
    stage: str,
    max_message_bytes: int,
    tokens: int = 0,
) -> tuple[list[Output], Outcome]:
    """An item's outputs and ledger entry, or, when one output would be larger than the
    output topics accept, a dead letter `output_too_large` in their place: sending it would
    fail, and fail again for every worker that retried the batch."""
    for out in outputs:
        if not out.fits(max_message_bytes):
            size = out.record_bytes
            error = InputError(
                "output_too_large",
                f"the {out.role} message for this item would be {size} bytes, more than the "
                f"{max_message_bytes} bytes the output topics accept (max.message.bytes). "
                "Every output copies the item's text and `meta`: send a smaller `meta` (or "
                "text), or raise max.message.bytes on the task's output topics",
            )
            letter, entry = dead_lettered(message, error, task, stage)
            return [letter], entry
    return outputs, outcome(message, decision, tokens)


def outcome(message: Record, decision: Decision, tokens: int = 0) -> Outcome:
    """The ledger entry of a consumed message: where it went, tagged with any review reason,
    and the LLM tokens it cost."""
    name = {"accept": "prediction", "llm": "llm", "review": "review"}[decision.destination]
    tags = (decision.review_reason,) if decision.review_reason else ()
    minute = int(timestamp_s(message) // 60) if tokens else 0
    return Outcome(message.topic, message.partition, message.offset, name, tags, tokens, minute)


def decode_batch(
    messages: Sequence[Record], decode: Callable[[bytes | None], T], task: str, stage: str
) -> tuple[list[tuple[Record, T]], list[Output], list[Outcome]]:
    """Decoded messages, plus a dead letter (and its ledger entry) for each that failed."""
    valid, letters, outcomes = [], [], []
    for message in messages:
        try:
            valid.append((message, decode(message.value)))
        except InputError as error:
            letter, entry = dead_lettered(message, error, task, stage)
            letters.append(letter)
            outcomes.append(entry)
    return valid, letters, outcomes


def dead_lettered(
    message: Record, error: InputError, task: str, stage: str
) -> tuple[Output, Outcome]:
    """The dead letter of a consumed message, and its ledger entry."""
    letter = dead_letter(
        error,
        message.value,
        task=task,
        stage=stage,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
    )
    entry = Outcome(message.topic, message.partition, message.offset, "deadletter")
    return Output("deadletter", letter.key, letter), entry


async def send_all(topics: TaskTopics, outputs: Sequence[Output]) -> None:
    """Send, then wait until Kafka has every message: only then may offsets be committed.

    Goes to aiokafka under the app's producer, a record batch per partition: Faust's
    per-message `Topic.send`, and even aiokafka's `send`, cost more than annotating the item.
    """
    producer = topics.texts.app.producer._ensure_producer()  # Faust's aiokafka producer
    records = [
        (getattr(topics, out.role).get_topic_name(), out.key.encode("utf-8"), out.value)
        for out in outputs
    ]
    await asyncio.gather(*await send_batched(producer, records))


async def send_batched(
    producer: AIOKafkaProducer,
    records: Sequence[tuple[str, bytes, bytes]],
    timestamp_ms: int | None = None,
) -> list[asyncio.Future]:
    """Hand `records` (topic, key, value) to `producer` as one record batch per topic
    partition (more when one fills up); the futures of their acknowledgements.

    aiokafka's per-message `send` (a future, a partitioner call and the accumulator's
    bookkeeping per message) costs twice the CPU. Keys are partitioned by the default
    partitioner (murmur2, as Kafka's Java client does), so an id's messages share a
    partition whoever sends them.
    """
    partitions: dict[str, list[int]] = {}
    batches: dict[tuple[str, int], BatchBuilder] = {}
    pending = []
    for topic, key, value in records:
        if topic not in partitions:
            partitions[topic] = sorted(await producer.partitions_for(topic))
        target = (topic, KEY_PARTITIONER(key, partitions[topic], partitions[topic]))
        batch = batches.get(target)
        if batch is None or batch.append(key=key, value=value, timestamp=timestamp_ms) is None:
            if batch is not None:  # full: send it, start the next
                pending.append(await producer.send_batch(batch, topic, partition=target[1]))
            # An empty batch takes a record of any size (settle() has bounded it).
            batch = batches[target] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=timestamp_ms)
    for (topic, partition), batch in batches.items():
        pending.append(await producer.send_batch(batch, topic, partition=partition))
    return pending
