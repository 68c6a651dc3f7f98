"""The annotate agent: texts -> decode -> student -> route -> predictions | llm | review.

Every consumed offset ends as exactly one outcome: a prediction, a routed item, or a dead
letter. Outputs of a batch are acknowledged by Kafka before its offsets can be committed,
so a worker killed at any moment loses nothing (it may repeat outputs, byte for byte).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import faust

from loopline.processors.protocol import Processor
from loopline.processors.routing import Decision, audit_draw, route
from loopline.schemas import (
    Annotation,
    InputError,
    LooplineError,
    Message,
    Prediction,
    RoutedItem,
    Suggestion,
    TaskConfig,
    TextIn,
)
from loopline.streams.app import crash_loudly
from loopline.streams.codec import dead_letter, decode_text, encode
from loopline.streams.state import Outcome, OutcomeLedger
from loopline.streams.topics import TaskTopics

STAGE = "annotate"


@dataclass(frozen=True)
class Output:
    role: str
    key: str
    message: Message


def decide(
    result: Annotation | LooplineError, item: TextIn, task: TaskConfig, *, llm_available: bool
) -> Decision:
    if isinstance(result, LooplineError):
        return Decision("review", "student_error", str(result), priority=1.0)
    return route(result, task.routing, llm_available=llm_available, draw=audit_draw(item.id))


def outputs_for(
    item: TextIn, result: Annotation | LooplineError, version: str, decision: Decision,
    task: TaskConfig,
) -> list[Output]:
    """The messages one item produces. Pure: the agent only sends them."""
    suggestions = []
    if isinstance(result, Annotation):
        annotation = result.with_top_scores(task.scores_top_k)
        suggestions.append(Suggestion(source="student", model_version=version, annotation=annotation))
    outputs = []
    if decision.destination == "accept":
        prediction = Prediction.from_suggestion(item, task.name, suggestions[0], revision=0)
        outputs.append(Output("predictions", item.id, prediction))
    if decision.destination != "accept" or decision.audit:
        route_to = "review" if decision.audit else decision.destination
        routed = RoutedItem(
            id=item.id,
            task=task.name,
            item=item,
            route=route_to,
            suggestions=suggestions,
            reason="audit" if decision.audit else decision.reason,
            detail=decision.detail,
            priority=decision.priority,
        )
        outputs.append(Output(route_to, item.id, routed))
    return outputs


def outcome_of(decision: Decision) -> str:
    return {"accept": "prediction", "llm": "llm", "review": "review"}[decision.destination]


class AnnotateStage:
    """One batch at a time: validate, process, route, send, count."""

    def __init__(
        self,
        task: TaskConfig,
        topics: TaskTopics,
        student: Processor,
        ledger: OutcomeLedger,
        *,
        llm_available: bool,
    ) -> None:
        self.task = task
        self.topics = topics
        self.student = student
        self.ledger = ledger
        self.llm_available = llm_available

    async def handle(self, events: Sequence[faust.EventT]) -> None:
        outputs: list[Output] = []
        outcomes: list[Outcome] = []
        valid: list[tuple[faust.types.Message, TextIn]] = []
        for event in events:
            message = event.message
            try:
                valid.append((message, decode_text(message.value, self.task.max_text_chars)))
            except InputError as error:
                letter = dead_letter(
                    error, message.value, task=self.task.name, stage=STAGE,
                    topic=message.topic, partition=message.partition, offset=message.offset,
                )
                outputs.append(Output("deadletter", letter.key, letter))
                outcomes.append(_outcome(message, "deadletter"))
        results = await self.student.annotate([item.text for _, item in valid]) if valid else []
        for (message, item), result in zip(valid, results, strict=True):
            decision = decide(result, item, self.task, llm_available=self.llm_available)
            outputs += outputs_for(item, result, self.student.version, decision, self.task)
            tags = ("audit",) if decision.audit else ()
            outcomes.append(_outcome(message, outcome_of(decision), tags))
        await send_all(self.topics, outputs)
        await self.ledger.record(outcomes)


def _outcome(message: faust.types.Message, outcome: str, tags: tuple[str, ...] = ()) -> Outcome:
    return Outcome(message.topic, message.partition, message.offset, outcome, tags)


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


def register(app: faust.App, stage: AnnotateStage, *, batch_size: int, window_s: float) -> None:
    @app.agent(stage.topics.texts, name=f"{stage.task.topics.prefix}{STAGE}")
    async def annotate(stream: faust.StreamT) -> None:
        try:
            async for events in stream.take_events(batch_size, within=window_s):
                await stage.handle(events)
        except Exception as exc:  # a bug, not bad input: bad input went to deadletter
            await crash_loudly(app, STAGE, exc)
