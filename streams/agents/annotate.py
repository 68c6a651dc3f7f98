"""The annotate agent: texts -> decode -> student -> route -> predictions | llm | review.

Every consumed offset ends as exactly one outcome: a prediction, a routed item, or a dead
letter. Outputs of a batch are acknowledged by Kafka before its offsets can be committed,
so a worker killed at any moment loses nothing (it may repeat outputs, byte for byte).
"""

from __future__ import annotations

from collections.abc import Sequence

import faust

from loopline.processors.protocol import Processor
from loopline.processors.routing import Decision, audit_draw, route
from loopline.schemas import Annotation, LooplineError, Suggestion, TaskConfig, TextIn
from loopline.schemas.task import RoutingConfig
from loopline.streams.app import register_batch_agent
from loopline.streams.codec import decode_text
from loopline.streams.outputs import decode_batch, outcome, outputs_for, send_all
from loopline.streams.state import OutcomeLedger
from loopline.streams.topics import TaskTopics

STAGE = "annotate"


def decide(
    result: Annotation | LooplineError,
    item: TextIn,
    routing: RoutingConfig,
    *,
    llm_available: bool,
) -> Decision:
    if isinstance(result, LooplineError):
        return Decision("review", "student_error", str(result), priority=1.0)
    return route(result, routing, llm_available=llm_available, draw=audit_draw(item.id))


def suggestions_of(
    result: Annotation | LooplineError, version: str, task: TaskConfig
) -> list[Suggestion]:
    if isinstance(result, LooplineError):
        return []
    annotation = result.with_top_scores(task.scores_top_k)
    return [Suggestion(source="student", model_version=version, annotation=annotation)]


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

    def decode(self, raw: bytes | None) -> TextIn:
        return decode_text(raw, self.task.max_text_chars)

    def routing(self) -> RoutingConfig:
        """The routing of the model that answered the last batch: a student that follows the
        registry carries the policy fitted with its version; otherwise the task's."""
        return getattr(self.student, "routing", self.task.routing)

    async def handle(self, events: Sequence[faust.EventT]) -> None:
        valid, outputs, outcomes = decode_batch(events, self.decode, self.task.name, STAGE)
        results = await self.student.annotate([item.text for _, item in valid]) if valid else []
        routing = self.routing()
        for (message, item), result in zip(valid, results, strict=True):
            decision = decide(result, item, routing, llm_available=self.llm_available)
            suggestions = suggestions_of(result, self.student.version, self.task)
            outputs += outputs_for(item, suggestions, decision, self.task)
            outcomes.append(outcome(message, decision))
        await send_all(self.topics, outputs)
        await self.ledger.record(outcomes)


def register(app: faust.App, stage: AnnotateStage, *, batch_size: int, window_s: float) -> None:
    register_batch_agent(
        app,
        stage.topics.texts,
        f"{stage.task.topics.prefix}{STAGE}",
        stage.handle,
        batch_size=batch_size,
        window_s=window_s,
    )
