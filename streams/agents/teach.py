"""The teach agent: llm.requests -> LLM -> a revised prediction, review when it matters.

Each request ends as an LLM prediction (source `llm`, revision 1), also copied to `review`
when the LLM is unsure or disagrees with the student; or, when the LLM gives no answer
(down, slow, rate-limited, over budget, garbage after retries), as a review item with the
reason. Every answer is also kept on `corrections` as a silver example (`source: llm`)
for the trainer, which weighs it below human labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import faust
from pydantic import ValidationError

from loopline.processors.llm.teacher import LLMAnswer, LLMTeacher
from loopline.processors.routing import Decision, after_llm
from loopline.schemas import Correction, InputError, LLMError, RoutedItem, Suggestion, TaskConfig
from loopline.streams.app import register_batch_agent
from loopline.streams.observe import WorkerMetrics
from loopline.streams.outputs import Output, Record, decode_batch, outputs_for, send_all, settle
from loopline.streams.state import Outcome, OutcomeLedger
from loopline.streams.topics import TaskTopics

STAGE = "teach"


def decode_request(raw: bytes | None) -> RoutedItem:
    try:
        return RoutedItem.model_validate_json(raw or b"")
    except ValidationError as exc:
        raise InputError(
            "schema_violation",
            f"not a RoutedItem ({exc.error_count()} problems, first: {exc.errors()[0]['msg']}); "
            "llm.requests is written by loopline's annotate agent only",
        ) from None


def silver(request: RoutedItem, answer: LLMAnswer, produced_at: datetime) -> Correction:
    """The LLM's answer as a training example. Its time is the request's, so a redelivered
    request yields the same message."""
    return Correction(
        id=request.id,
        task=request.task,
        text=request.item.text,
        labels=answer.annotation.labels,
        spans=answer.annotation.spans,
        source="llm",
        reviewer=f"llm:{answer.model}/{answer.prompt_version}",
        time=produced_at,
    )


def teach_outputs(
    request: RoutedItem, answer: LLMAnswer | LLMError, task: TaskConfig, produced_at: datetime
) -> tuple[list[Output], Decision]:
    """Outputs for one request, and the decision taken. Pure."""
    student = request.suggestions[0].annotation if request.suggestions else None
    llm = answer.annotation if isinstance(answer, LLMAnswer) else answer
    decision = after_llm(student, llm, min_confidence=task.llm.min_confidence)
    suggestions = list(request.suggestions)
    outputs = []
    if isinstance(answer, LLMAnswer):
        suggestions.append(
            Suggestion(
                source="llm",
                model_version=f"{answer.model}/{answer.prompt_version}",
                prompt_version=answer.prompt_version,
                annotation=answer.annotation.with_top_scores(task.scores_top_k),
            )
        )
        correction = silver(request, answer, produced_at)
        outputs.append(Output("corrections", correction.key, correction))
    outputs += outputs_for(request.item, suggestions, decision, task)
    return outputs, decision


class TeachStage:
    def __init__(
        self, task: TaskConfig, topics: TaskTopics, teacher: LLMTeacher, ledger: OutcomeLedger
    ) -> None:
        self.task = task
        self.topics = topics
        self.teacher = teacher
        self.ledger = ledger

    async def handle(self, messages: Sequence[Record]) -> list[Outcome]:
        valid, outputs, outcomes = decode_batch(messages, decode_request, self.task.name, STAGE)
        answers = await self.teacher.answer([request.item.text for _, request in valid])
        for (message, request), answer in zip(valid, answers, strict=True):
            produced_at = datetime.fromtimestamp(message.timestamp, tz=UTC)
            item_outputs, decision = teach_outputs(request, answer, self.task, produced_at)
            item_outputs, item_outcome = settle(
                message,
                item_outputs,
                decision,
                task=self.task.name,
                stage=STAGE,
                max_message_bytes=self.topics.max_message_bytes,
                tokens=answer.usage.total_tokens if isinstance(answer, LLMAnswer) else 0,
            )
            outputs += item_outputs
            outcomes.append(item_outcome)
        await send_all(self.topics, outputs)
        await self.ledger.record(outcomes)
        return outcomes


def register(
    app: faust.App,
    stage: TeachStage,
    *,
    batch_size: int,
    window_s: float,
    metrics: WorkerMetrics | None = None,
) -> None:
    register_batch_agent(
        app,
        stage.topics.llm,
        f"{stage.task.topics.prefix}{STAGE}",
        metrics.observed(STAGE, stage.handle) if metrics else stage.handle,
        batch_size=batch_size,
        window_s=window_s,
    )
