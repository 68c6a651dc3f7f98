"""Routing that follows evidence: fit the accept threshold and the LLM's bands on gold labels.

Pure functions. The evidence is one row per gold item of the evaluation set (never trained
on): the student's calibrated confidence, whether it was right, and, where the LLM answered
the same item (silver corrections carry its answer), whether the LLM was right.

- The accept threshold is the lowest confidence at which the gold items at or above it reach
  `routing.target_accuracy`: the most items accepted for the accuracy asked.
- Below it, confidence bands of about equal evidence compare the two annotators on the same
  items with a one-sided sign test on the items exactly one of them got right. Items both
  got right, or both wrong, say nothing about which is better; so the test stays fair on
  the items people actually review (mostly those where the student and the LLM disagree).
  A band goes to the LLM when it is measurably better there, to people when enough
  evidence shows it is not, and keeps going to the LLM while there is too little evidence
  (else the LLM would never answer there again, and the question could never be settled).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from loopline.processors.data import LabelledText
from loopline.processors.metrics import correct_items
from loopline.schemas import Annotation
from loopline.schemas.policy import BandEvidence, RoutingPolicy, ThresholdEvidence
from loopline.schemas.task import RoutingConfig, TaskKind


@dataclass(frozen=True)
class GoldEvidence:
    """One gold item: how sure the student was, and who got it right."""

    confidence: float
    student_correct: bool
    llm_correct: bool | None = None


@dataclass(frozen=True)
class FitSettings:
    """How much evidence a fit needs. The defaults suit evaluation sets of 100 to 2,000."""

    min_items: int = 30
    max_bands: int = 4
    min_band_items: int = 20
    min_discordant: int = 6
    alpha: float = 0.05


def gold_evidence(
    kind: TaskKind,
    gold: Sequence[LabelledText],
    student: Sequence[Annotation],
    llm: Sequence[Annotation | LabelledText | None],
) -> list[GoldEvidence]:
    """Evidence rows from the student's and (where given) the LLM's answers to gold items
    (an Annotation, or a silver LabelledText)."""
    student_right = correct_items(kind, gold, student)
    llm_right = correct_items(kind, gold, llm)
    return [
        GoldEvidence(
            confidence=annotation.confidence,
            student_correct=bool(right),
            llm_correct=bool(llm_ok) if answer is not None else None,
        )
        for annotation, right, answer, llm_ok in zip(student, student_right, llm, llm_right)
    ]


def fit_accept_threshold(
    evidence: Sequence[GoldEvidence], target_accuracy: float
) -> ThresholdEvidence:
    """The lowest threshold whose accepted gold items reach the target; 1.0 if none does."""
    confidence = np.array([row.confidence for row in evidence], dtype=float)
    correct = np.array([row.student_correct for row in evidence], dtype=bool)
    order = np.argsort(-confidence, kind="stable")
    confidence, correct = confidence[order], correct[order]
    accepted = np.arange(1, len(confidence) + 1)
    accuracy = np.cumsum(correct) / accepted
    # A threshold equal to an item's confidence accepts every item tied with it.
    last_of_tie = np.append(confidence[1:] != confidence[:-1], True)
    reaching = np.flatnonzero(last_of_tie & (accuracy >= target_accuracy))
    if reaching.size == 0:
        return ThresholdEvidence(
            target_accuracy=target_accuracy,
            threshold=1.0,
            reached=False,
            items=len(evidence),
            accepted=int((confidence >= 1.0).sum()),
            accepted_correct=int(correct[confidence >= 1.0].sum()),
        )
    cut = int(reaching[-1])
    return ThresholdEvidence(
        target_accuracy=target_accuracy,
        threshold=float(confidence[cut]),
        reached=True,
        items=len(evidence),
        accepted=cut + 1,
        accepted_correct=int(correct[: cut + 1].sum()),
    )


def sign_test(wins: int, losses: int) -> float:
    """One-sided p-value of at least `wins` successes in `wins + losses` fair coin tosses."""
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


def fit_llm_bands(
    evidence: Sequence[GoldEvidence], accept_threshold: float, settings: FitSettings
) -> list[BandEvidence]:
    """Bands of about equal evidence covering [0, 1), compared on items below the threshold
    that the LLM answered."""
    rows = [r for r in evidence if r.llm_correct is not None and r.confidence < accept_threshold]
    if not rows:
        return []
    confidence = np.array([r.confidence for r in rows])
    n_bands = max(1, min(settings.max_bands, len(rows) // settings.min_band_items))
    inner = np.unique(np.round(np.quantile(confidence, np.linspace(0, 1, n_bands + 1)[1:-1]), 4))
    edges = [0.0, *(float(e) for e in inner if 0.0 < e < 1.0), 1.0]
    return [
        _band(low, high, [r for r in rows if low <= r.confidence < high], settings)
        for low, high in zip(edges, edges[1:])
    ]


def _band(
    low: float, high: float, rows: Sequence[GoldEvidence], settings: FitSettings
) -> BandEvidence:
    llm_only = sum(r.llm_correct and not r.student_correct for r in rows)
    student_only = sum(r.student_correct and not r.llm_correct for r in rows)
    p_value = sign_test(llm_only, student_only) if llm_only + student_only else None
    if llm_only + student_only < settings.min_discordant:
        verdict = "too_little_evidence"
    elif p_value is not None and p_value < settings.alpha:
        verdict = "llm_better"
    else:
        verdict = "llm_not_better"
    return BandEvidence(
        low=low,
        high=high,
        items=len(rows),
        student_correct=sum(r.student_correct for r in rows),
        llm_correct=sum(bool(r.llm_correct) for r in rows),
        llm_only=llm_only,
        student_only=student_only,
        p_value=p_value,
        verdict=verdict,
    )


def llm_bands_of(bands: Sequence[BandEvidence]) -> list[tuple[float, float]]:
    """The bands that go to the LLM, adjacent ones merged."""
    merged: list[tuple[float, float]] = []
    for band in bands:
        if not band.uses_llm:
            continue
        if merged and merged[-1][1] == band.low:
            merged[-1] = (merged[-1][0], band.high)
        else:
            merged.append((band.low, band.high))
    return merged


def fit_policy(
    evidence: Sequence[GoldEvidence],
    routing: RoutingConfig,
    settings: FitSettings | None = None,
) -> RoutingPolicy:
    """The policy the evidence supports; parts it cannot support are left unset, with a note."""
    settings = settings or FitSettings()
    if len(evidence) < settings.min_items:
        return RoutingPolicy(
            notes=[
                f"{len(evidence)} gold items in the evaluation set; a fit needs "
                f"{settings.min_items}: the task's routing applies"
            ]
        )
    notes = []
    threshold_evidence = None
    threshold = routing.accept_threshold
    if routing.target_accuracy is None:
        notes.append("routing.target_accuracy is not set: the accept threshold is not fitted")
    else:
        threshold_evidence = fit_accept_threshold(evidence, routing.target_accuracy)
        threshold = threshold_evidence.threshold
        if not threshold_evidence.reached:
            notes.append(
                f"no threshold reaches accuracy {routing.target_accuracy} on the gold items: "
                "only items the student is certain of are accepted"
            )
    bands = fit_llm_bands(evidence, threshold, settings)
    if not bands:
        notes.append("the LLM answered none of the unsure gold items: every band goes to it")
    return RoutingPolicy(
        accept_threshold=threshold_evidence.threshold if threshold_evidence else None,
        llm_bands=llm_bands_of(bands) if bands else None,
        threshold_evidence=threshold_evidence,
        band_evidence=bands,
        notes=notes,
    )


def effective_routing(routing: RoutingConfig, policy: RoutingPolicy | None) -> RoutingConfig:
    """The task's routing with the fitted values filled in where the task file set none."""
    if policy is None:
        return routing
    written = routing.model_fields_set
    update: dict = {}
    if policy.accept_threshold is not None and "accept_threshold" not in written:
        update["accept_threshold"] = policy.accept_threshold
    if policy.llm_bands is not None and not written & {"llm_min_confidence", "llm_bands"}:
        update["llm_bands"] = policy.llm_bands
    return routing.model_copy(update=update)
