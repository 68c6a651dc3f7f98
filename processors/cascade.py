"""Student-then-LLM at a confidence threshold, computed from each annotator's answers.

With a deterministic LLM (temperature 0), the cascade at threshold t gives exactly the
student's answer where its confidence is at least t and the LLM's answer elsewhere. So one
pass of each annotator over the data yields the whole accuracy / LLM-share / cost curve,
without asking the LLM again for every threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from loopline.processors.data import LabelledText
from loopline.processors.metrics import score
from loopline.schemas import Annotation, TaskConfig


@dataclass(frozen=True)
class AnnotatorRun:
    """One annotator's answers over the data (None where it gave none), with its costs."""

    answers: list[Annotation | None]
    seconds: list[float]
    tokens: list[int]


@dataclass(frozen=True)
class CascadePoint:
    name: str
    threshold: float | None
    quality: float
    llm_share: float
    items_per_s: float
    tokens: int
    cost: float

    def as_dict(self) -> dict:
        return asdict(self)


def quality(
    task: TaskConfig, gold: Sequence[LabelledText], answers: list[Annotation | None]
) -> float:
    """The task's main figure (accuracy, micro-F1 or entity F1); no answer counts as wrong."""
    return score(task.kind, task.label_names, gold, answers).main


def cascade_point(
    task: TaskConfig,
    gold: Sequence[LabelledText],
    student: AnnotatorRun,
    llm: AnnotatorRun,
    threshold: float,
    price_per_1k_tokens: float,
) -> CascadePoint:
    routed = [a is None or a.confidence < threshold for a in student.answers]
    answers = [
        teacher if r else own for own, teacher, r in zip(student.answers, llm.answers, routed)
    ]
    seconds = sum(student.seconds) + sum(t for t, r in zip(llm.seconds, routed) if r)
    tokens = sum(t for t, r in zip(llm.tokens, routed) if r)
    return CascadePoint(
        name=f"student then LLM below {threshold:g}",
        threshold=threshold,
        quality=quality(task, gold, answers),
        llm_share=sum(routed) / len(routed),
        items_per_s=len(gold) / seconds if seconds else 0.0,
        tokens=tokens,
        cost=tokens / 1000 * price_per_1k_tokens,
    )


def alone(
    name: str,
    task: TaskConfig,
    gold: Sequence[LabelledText],
    run: AnnotatorRun,
    llm_share: float,
    price_per_1k_tokens: float,
) -> CascadePoint:
    seconds = sum(run.seconds)
    tokens = sum(run.tokens)
    return CascadePoint(
        name=name,
        threshold=None,
        quality=quality(task, gold, run.answers),
        llm_share=llm_share,
        items_per_s=len(gold) / seconds if seconds else 0.0,
        tokens=tokens,
        cost=tokens / 1000 * price_per_1k_tokens,
    )


def best_within_share(points: Sequence[CascadePoint], max_share: float) -> CascadePoint | None:
    """The most accurate cascade that sends at most `max_share` of items to the LLM."""
    eligible = [p for p in points if p.threshold is not None and p.llm_share <= max_share]
    return max(eligible, key=lambda p: p.quality, default=None)
