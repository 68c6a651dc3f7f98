"""The evaluation gate: does a candidate student replace the one in production? Pure.

Both models are measured on the same gold evaluation set (see `trainset`): the task's main
score (accuracy for textcat, micro-F1 for multilabel, entity F1 for NER), macro-F1, the
calibration error (ECE), and accuracy per confidence band, beside the LLM's accuracy on the
same items where it answered. A candidate is promoted only when its main score is higher by
at least `promote_margin` and its ECE is not higher by more than `max_ece_increase`: a
student that is right more often but claims certainty it lacks would send wrong answers past
the accept threshold. The first model of a task is promoted when it clears `floor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from loopline.processors.calibration import expected_calibration_error
from loopline.processors.data import LabelledText
from loopline.processors.metrics import correct_items, score
from loopline.schemas import Annotation
from loopline.schemas.messages import BandAccuracy
from loopline.schemas.task import LearningConfig, TaskKind

BAND_EDGES = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0)
"""Confidence bands, finer near the top where accept thresholds are set; the last includes 1."""


@dataclass(frozen=True)
class Figures:
    """One model's figures on the evaluation set."""

    main_name: str
    main: float
    macro_f1: float
    ece: float
    n: int
    bands: tuple[BandAccuracy, ...]

    @property
    def metrics(self) -> dict[str, float]:
        return {
            self.main_name: self.main,
            "macro_f1": self.macro_f1,
            "ece": self.ece,
            "eval_n": self.n,
        }


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def measure(
    kind: TaskKind,
    labels: Sequence[str],
    gold: Sequence[LabelledText],
    predicted: Sequence[Annotation],
    llm: Sequence[LabelledText | None] = (),
) -> Figures:
    """Figures of `predicted` against `gold`; `llm[i]` is the LLM's answer to item i, if any."""
    scores = score(kind, labels, gold, predicted)
    confidence = np.array([p.confidence for p in predicted], dtype=float)
    correct = correct_items(kind, gold, predicted)
    llm = list(llm) or [None] * len(gold)
    has_llm = np.array([answer is not None for answer in llm], dtype=bool)
    llm_answers = [_as_annotation(answer) if answer else None for answer in llm]
    llm_correct = correct_items(kind, gold, llm_answers) & has_llm
    return Figures(
        main_name=scores.main_name,
        main=scores.main,
        macro_f1=scores.overall["macro_f1"],
        ece=expected_calibration_error(confidence, correct),
        n=len(gold),
        bands=tuple(_bands(confidence, correct, has_llm, llm_correct)),
    )


def decide(candidate: Figures, production: Figures | None, config: LearningConfig) -> GateDecision:
    """Promote or not, with the reason in words (it goes on the `models` topic and to people)."""
    name = candidate.main_name
    if production is None:
        if candidate.main >= config.floor:
            return GateDecision(
                True,
                f"first model: {name} {candidate.main:.3f} reaches the floor {config.floor:.3f}",
            )
        return GateDecision(
            False, f"first model: {name} {candidate.main:.3f} is below the floor {config.floor:.3f}"
        )
    gain = candidate.main - production.main
    compared = f"{name} {candidate.main:.3f} against {production.main:.3f} in production"
    if gain < config.promote_margin:
        return GateDecision(
            False,
            f"{compared}: gain {gain:+.3f} is less than the margin {config.promote_margin:.3f}",
        )
    ece_increase = candidate.ece - production.ece
    if ece_increase > config.max_ece_increase:
        return GateDecision(
            False,
            f"{compared}, but calibration error {candidate.ece:.3f} against {production.ece:.3f} "
            f"rose by {ece_increase:.3f}, more than {config.max_ece_increase:.3f}",
        )
    return GateDecision(
        True,
        f"{compared} (gain {gain:+.3f}); calibration error {candidate.ece:.3f} "
        f"against {production.ece:.3f}",
    )


def _bands(
    confidence: np.ndarray, correct: np.ndarray, has_llm: np.ndarray, llm_correct: np.ndarray
) -> list[BandAccuracy]:
    bands = []
    last = len(BAND_EDGES) - 2
    for i, (low, high) in enumerate(zip(BAND_EDGES, BAND_EDGES[1:])):
        upper = confidence <= high if i == last else confidence < high
        members = (confidence >= low) & upper
        with_llm = members & has_llm
        bands.append(
            BandAccuracy(
                low=low,
                high=high,
                n=int(members.sum()),
                accuracy=float(correct[members].mean()) if members.any() else None,
                llm_n=int(with_llm.sum()),
                llm_accuracy=float(llm_correct[with_llm].mean()) if with_llm.any() else None,
            )
        )
    return bands


def _as_annotation(example: LabelledText) -> Annotation:
    return Annotation(labels=example.labels, spans=example.spans, confidence=1.0)
