"""The annotate stage: texts -> decode -> student -> route -> predictions | llm | review.

Every consumed offset ends as exactly one outcome: a prediction, a routed item, or a dead
letter. Outputs of a batch are acknowledged by Kafka before its offsets are committed, so a
worker killed at any moment loses nothing (it may repeat outputs, byte for byte). It reads
`texts` in batches through its own intake (see `streams.intake`), in the consumer group
`<prefix>annotate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import faust

from loopline.processors.protocol import Processor, annotate_isolating_failures
from loopline.processors.routing import Decision, audit_draw, route
from loopline.schemas import Annotation, LooplineError, Suggestion, TaskConfig, TextIn
from loopline.schemas.task import RoutingConfig
from loopline.streams.app import crash_loudly
from loopline.streams.codec import decode_text
from loopline.streams.connections import aiokafka_options
from loopline.streams.intake import BatchIntake
from loopline.streams.observe import WorkerMetrics
from loopline.streams.outputs import (
    Output,
    Record,
    decode_batch,
    outputs_for,
    send_all,
    settle,
)
from loopline.streams.settings import Settings
from loopline.streams.state import Outcome, OutcomeLedger
from loopline.streams.topics import TaskTopics

STAGE = "annotate"


def group_id(task: TaskConfig) -> str:
    """The consumer group of every worker's annotate intake, for the task's `texts`."""
    return f"{task.topics.prefix}{STAGE}"


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


@dataclass
class Annotated:
    """A batch between the student and Kafka: the decoded items with the student's answers
    (and the version and routing that go with them), the dead letters of the rest."""

    valid: list[tuple[Record, TextIn]]
    results: list[Annotation | LooplineError]
    version: str
    routing: RoutingConfig
    letters: list[Output]
    outcomes: list[Outcome]


class AnnotateStage:
    """A batch in two steps: decode and annotate; then route, send and count."""

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

    async def annotate(self, messages: Sequence[Record]) -> Annotated:
        """Decode and ask the student: this may run while the batch before is being sent."""
        valid, letters, outcomes = decode_batch(messages, self.decode, self.task.name, STAGE)
        texts = [item.text for _, item in valid]
        results = await annotate_isolating_failures(self.student, texts) if valid else []
        return Annotated(valid, results, self.student.version, self.routing(), letters, outcomes)

    async def send(self, batch: Annotated) -> list[Outcome]:
        """Route, send and count a batch, in batch order: its outputs are acknowledged by Kafka
        when this returns."""
        outputs, outcomes = batch.letters, batch.outcomes
        for (message, item), result in zip(batch.valid, batch.results, strict=True):
            decision = decide(result, item, batch.routing, llm_available=self.llm_available)
            suggestions = suggestions_of(result, batch.version, self.task)
            item_outputs, item_outcome = settle(
                message,
                outputs_for(item, suggestions, decision, self.task),
                decision,
                task=self.task.name,
                stage=STAGE,
                max_message_bytes=self.topics.max_message_bytes,
            )
            outputs += item_outputs
            outcomes.append(item_outcome)
        await send_all(self.topics, outputs)
        await self.ledger.record(outcomes)
        return outcomes


def register(
    app: faust.App, stage: AnnotateStage, settings: Settings, metrics: WorkerMetrics | None = None
) -> BatchIntake:
    """Start the stage's batch intake with the app, and stop the worker if it fails."""
    intake = BatchIntake(
        aiokafka_options(settings),
        stage.topics.texts.get_topic_name(),
        group_id(stage.task),
        stage.annotate,
        stage.send,
        batch_size=settings.batch_size,
        window_s=settings.batch_window_s,
        on_error=lambda exc: crash_loudly(app, STAGE, exc),
        on_done=partial(metrics.observe_batch, STAGE) if metrics else None,
    )
    app.service(intake)
    return intake
