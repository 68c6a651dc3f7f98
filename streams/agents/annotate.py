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
from loopline.streams.app import register_batch_agent
from loopline.streams.codec import decode_text
from loopline.streams.observe import WorkerMetrics
from loopline.streams.outputs import decode_batch, outcome, outputs_for, send_all
from loopline.streams.state import Outcome, OutcomeLedger
from loopline.streams.topics import TaskTopics

STAGE = "annotate"


def decide(
    result: Annotation | LooplineError, item: TextIn, task: TaskConfig, *, llm_available: bool
) -> Decision:
    if isinstance(result, LooplineError):
        return Decision("review", "student_error", str(result), priority=1.0)
    return route(result, task.routing, llm_available=llm_available, draw=audit_draw(item.id))


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

    async def handle(self, events: Sequence[faust.EventT]) -> list[Outcome]:
        valid, outputs, outcomes = decode_batch(events, self.decode, self.task.name, STAGE)
        results = await self.student.annotate([item.text for _, item in valid]) if valid else []
        for (message, item), result in zip(valid, results, strict=True):
            decision = decide(result, item, self.task, llm_available=self.llm_available)
            suggestions = suggestions_of(result, self.student.version, self.task)
            outputs += outputs_for(item, suggestions, decision, self.task)
            outcomes.append(outcome(message, decision))
        await send_all(self.topics, outputs)
        await self.ledger.record(outcomes)
        return outcomes


def register(
    app: faust.App,
    stage: AnnotateStage,
    *,
    batch_size: int,
    window_s: float,
    metrics: WorkerMetrics | None = None,
) -> None:
    register_batch_agent(
        app,
        stage.topics.texts,
        f"{stage.task.topics.prefix}{STAGE}",
        metrics.observed(STAGE, stage.handle) if metrics else stage.handle,
        batch_size=batch_size,
        window_s=window_s,
    )
