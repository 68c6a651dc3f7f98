"""Cascades by confidence, computed from each annotator's answers. Pure functions.

Student-then-LLM (for `bench teacher`): with a deterministic LLM (temperature 0), the
cascade at threshold t gives exactly the student's answer where its confidence is at least
t and the LLM's answer elsewhere. So one pass of each annotator over the data yields the
whole accuracy / LLM-share / cost curve, without asking the LLM again for every threshold.

Students by cost (architecture `cascade`): the same rule between students, one threshold
per step but the last, chosen on held-out data by `choose_thresholds`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

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


# students by cost ---------------------------------------------------------------------------

NEVER = math.nextafter(1.0, 2.0)
"""A threshold above every confidence: the step passes every item on."""


def answering_step(confidence: Sequence[np.ndarray], thresholds: Sequence[float]) -> np.ndarray:
    """Which step answers each item: the first whose confidence reaches its threshold, else
    the last. `confidence[s]` holds step s's confidence on every item."""
    step = np.full(len(confidence[-1]), len(confidence) - 1)
    for index in reversed(range(len(thresholds))):
        step = np.where(np.asarray(confidence[index]) >= thresholds[index], index, step)
    return step


def choose_thresholds(
    confidence: Sequence[np.ndarray],
    correct: Sequence[np.ndarray],
    floor: float,
    tolerance: float,
) -> list[float]:
    """Per step but the last, the lowest threshold (at least `floor`) at which the cascade's
    accuracy stays within `tolerance` of the later steps' alone; `NEVER` if none does.

    Chosen from the last step backwards, so each step is measured against the cascade of
    the steps after it. `floor` is the routing accept threshold: below it an item kept by a
    cheap step would go to the LLM or to people anyway, where a later step might have been
    sure of it.
    """
    rest = np.asarray(correct[-1], dtype=bool)
    thresholds: list[float] = []
    for conf, right in zip(reversed(confidence[:-1]), reversed(correct[:-1])):
        conf, right = np.asarray(conf, dtype=float), np.asarray(right, dtype=bool)
        threshold = lowest_safe_threshold(conf, right, rest, floor, tolerance)
        rest = np.where(conf >= threshold, right, rest)
        thresholds.append(threshold)
    return thresholds[::-1]


def lowest_safe_threshold(
    confidence: np.ndarray, right: np.ndarray, rest: np.ndarray, floor: float, tolerance: float
) -> float:
    """The lowest t >= floor at which keeping this step's answers where its confidence is at
    least t (`right`) and the rest's elsewhere (`rest`) loses at most `tolerance` accuracy.

    Keeping the k most confident items (ties kept together) gives accuracy
    (sum(rest) + sum over kept of (right - rest)) / n, for every k at once with a cumsum.
    """
    n = len(confidence)
    if n == 0:
        return NEVER
    order = np.argsort(-confidence, kind="stable")
    ordered = confidence[order]
    gain = np.concatenate(([0], np.cumsum(right[order].astype(int) - rest[order].astype(int))))
    accuracy = (rest.sum() + gain) / n  # accuracy[k]: the k most confident kept
    kept = np.arange(1, n + 1)
    boundary = np.append(ordered[:-1] > ordered[1:], True)  # no tie split after item k
    safe = boundary & (ordered >= floor) & (accuracy[kept] >= rest.mean() - tolerance - 1e-12)
    if not safe.any():
        return NEVER
    return float(ordered[np.flatnonzero(safe)[-1]])
