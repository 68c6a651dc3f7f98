"""Scores of predicted annotations against gold ones. Pure functions, no I/O.

A missing prediction (`None`, e.g. an LLM call that failed) counts as an answer with no
labels and no spans: wrong for exclusive textcat, all negatives otherwise. Macro averages
run over the labels that occur in the gold data or the predictions; a label with neither
has no defined F1 and is left out rather than counted as 0 or 1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from loopline.processors.data import LabelledText
from loopline.schemas import Annotation
from loopline.schemas.task import TaskKind

Prediction = Annotation | None

MAIN_METRIC: dict[TaskKind, str] = {
    "textcat": "accuracy",
    "textcat_multilabel": "micro_f1",
    "ner": "f1",
}
"""The one figure to compare models of a task kind by: accuracy, micro-F1 or entity F1."""


@dataclass(frozen=True)
class LabelScore:
    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


@dataclass(frozen=True)
class Scores:
    """Headline figures (`overall`) and per-label precision/recall/F1 for one data set."""

    kind: TaskKind
    n: int
    overall: dict[str, float]
    per_label: dict[str, LabelScore]

    @property
    def main_name(self) -> str:
        return MAIN_METRIC[self.kind]

    @property
    def main(self) -> float:
        return self.overall[self.main_name]

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "n": self.n,
            **self.overall,
            "per_label": {label: asdict(s) for label, s in self.per_label.items()},
        }


def score(
    kind: TaskKind,
    labels: Sequence[str],
    gold: Sequence[LabelledText],
    predicted: Sequence[Prediction],
) -> Scores:
    """Score predictions for a task of `kind` with the task's `labels`."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold items but {len(predicted)} predictions")
    if kind == "textcat":
        return textcat_scores(labels, gold, predicted)
    if kind == "textcat_multilabel":
        return multilabel_scores(labels, gold, predicted)
    return ner_scores(labels, gold, predicted)


def textcat_scores(
    labels: Sequence[str], gold: Sequence[LabelledText], predicted: Sequence[Prediction]
) -> Scores:
    """Exclusive classes: accuracy, macro-F1 and per-label P/R/F."""
    true_positives, false_positives, false_negatives = Counter(), Counter(), Counter()
    for gold_item, prediction in zip(gold, predicted):
        gold_label = gold_item.labels[0]
        predicted_label = prediction.labels[0] if prediction and prediction.labels else None
        if predicted_label == gold_label:
            true_positives[gold_label] += 1
            continue
        false_negatives[gold_label] += 1
        if predicted_label is not None:
            false_positives[predicted_label] += 1
    per_label = _per_label(labels, true_positives, false_positives, false_negatives)
    accuracy = sum(true_positives.values()) / len(gold) if gold else 0.0
    overall = {"accuracy": accuracy, "macro_f1": _macro_f1(per_label)}
    return Scores("textcat", len(gold), overall, per_label)


def multilabel_scores(
    labels: Sequence[str], gold: Sequence[LabelledText], predicted: Sequence[Prediction]
) -> Scores:
    """Independent labels: exact-set accuracy, micro- and macro-F1, per-label P/R/F."""
    gold_sets = [set(g.labels) for g in gold]
    predicted_sets = [set(p.labels) if p else set() for p in predicted]
    counts = _set_counts(gold_sets, predicted_sets)
    per_label = _per_label(labels, *counts)
    exact = sum(g == p for g, p in zip(gold_sets, predicted_sets))
    overall = {
        "accuracy": exact / len(gold) if gold else 0.0,
        "micro_f1": _prf(*(sum(c.values()) for c in counts))[2],
        "macro_f1": _macro_f1(per_label),
    }
    return Scores("textcat_multilabel", len(gold), overall, per_label)


def ner_scores(
    labels: Sequence[str], gold: Sequence[LabelledText], predicted: Sequence[Prediction]
) -> Scores:
    """Entities count only on an exact match of start, end and label (as in CoNLL scoring)."""
    gold_sets = [_span_set(g.spans) for g in gold]
    predicted_sets = [_span_set(p.spans) if p else set() for p in predicted]
    counts = _set_counts(gold_sets, predicted_sets, label_of=lambda span: span[2])
    per_label = _per_label(labels, *counts)
    precision, recall, f1 = _prf(*(sum(c.values()) for c in counts))
    overall = {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "macro_f1": _macro_f1(per_label),
    }
    return Scores("ner", len(gold), overall, per_label)


def correct_items(
    kind: TaskKind, gold: Sequence[LabelledText], predicted: Sequence[Prediction]
) -> np.ndarray:
    """Whether each whole annotation is right: the event a confidence is a probability of."""
    as_set = _whole_annotation[kind]
    right = (p is not None and as_set(g) == as_set(p) for g, p in zip(gold, predicted))
    return np.fromiter(right, dtype=bool, count=len(gold))


def accepted_accuracy(
    confidence: np.ndarray, correct: np.ndarray, threshold: float
) -> tuple[float | None, float]:
    """Accuracy of the items at or above `threshold`, and their share (None if there are none)."""
    accepted = np.asarray(confidence) >= threshold
    share = float(accepted.mean()) if accepted.size else 0.0
    if not accepted.any():
        return None, share
    return float(np.asarray(correct)[accepted].mean()), share


def _span_set(spans) -> set[tuple[int, int, str]]:
    return {(s.start, s.end, s.label) for s in spans}


def _label_set(item: LabelledText | Annotation) -> set:
    return set(item.labels)


def _entity_set(item: LabelledText | Annotation) -> set:
    return _span_set(item.spans)


_whole_annotation = {"textcat": _label_set, "textcat_multilabel": _label_set, "ner": _entity_set}


def _set_counts(gold_sets, predicted_sets, label_of=lambda item: item):
    true_positives, false_positives, false_negatives = Counter(), Counter(), Counter()
    for gold_set, predicted_set in zip(gold_sets, predicted_sets):
        true_positives.update(label_of(x) for x in gold_set & predicted_set)
        false_positives.update(label_of(x) for x in predicted_set - gold_set)
        false_negatives.update(label_of(x) for x in gold_set - predicted_set)
    return true_positives, false_positives, false_negatives


def _per_label(labels, true_positives, false_positives, false_negatives) -> dict[str, LabelScore]:
    scores = {}
    for label in labels:
        tp, fp, fn = true_positives[label], false_positives[label], false_negatives[label]
        precision, recall, f1 = _prf(tp, fp, fn)
        scores[label] = LabelScore(precision, recall, f1, support=tp + fn, predicted=tp + fp)
    return scores


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _macro_f1(per_label: dict[str, LabelScore]) -> float:
    """Mean F1 over labels that were in the gold data or were predicted."""
    seen = [s.f1 for s in per_label.values() if s.support or s.predicted]
    return float(np.mean(seen)) if seen else 0.0
