"""What a stage sends for one item, and sending it safely. Shared by every agent.

Building outputs is pure (tested without Kafka); `send_all` is the only I/O, and it waits
for Kafka's acknowledgement so that no offset is committed before its outputs exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import faust

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

# A later revision of an id supersedes an earlier one on `predictions`.
REVISION = {"student": 0, "llm": 1, "human": 2}


@dataclass(frozen=True)
class Output:
    role: str
    key: str
    message: Message


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


def outcome(message: faust.types.Message, decision: Decision, tokens: int = 0) -> Outcome:
    """The ledger entry of a consumed message: where it went, tagged with any review reason,
    and the LLM tokens it cost."""
    name = {"accept": "prediction", "llm": "llm", "review": "review"}[decision.destination]
    tags = (decision.review_reason,) if decision.review_reason else ()
    minute = int(message.timestamp // 60)
    return Outcome(message.topic, message.partition, message.offset, name, tags, tokens, minute)


def decode_batch(
    events: Sequence[faust.EventT], decode: Callable[[bytes | None], T], task: str, stage: str
) -> tuple[list[tuple[faust.types.Message, T]], list[Output], list[Outcome]]:
    """Decoded messages, plus a dead letter (and its ledger entry) for each that failed."""
    valid, letters, outcomes = [], [], []
    for event in events:
        message = event.message
        try:
            valid.append((message, decode(message.value)))
        except InputError as error:
            letter = dead_letter(
                error,
                message.value,
                task=task,
                stage=stage,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
            )
            letters.append(Output("deadletter", letter.key, letter))
            outcomes.append(Outcome(message.topic, message.partition, message.offset, "deadletter"))
    return valid, letters, outcomes


async def send_all(topics: TaskTopics, outputs: Sequence[Output]) -> None:
    """Send, then wait until Kafka has every message: only then may offsets be committed.

    Goes to the producer directly: Faust's per-message `Topic.send` bookkeeping costs more
    than annotating the item.
    """
    producer = topics.texts.app.producer
    pending = [
        await producer.send(
            getattr(topics, out.role).get_topic_name(),
            out.key.encode("utf-8"),
            encode(out.message),
            partition=None,
            timestamp=None,
            headers=None,
        )
        for out in outputs
    ]
    await asyncio.gather(*pending)
