"""Scores on small cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from loopline.processors.data import LabelledText
from loopline.processors.metrics import accepted_accuracy, correct_items, score
from loopline.schemas import Annotation, Span


def gold(*labels: str) -> LabelledText:
    return LabelledText(text="t", labels=list(labels))


def said(*labels: str) -> Annotation:
    return Annotation(labels=list(labels), confidence=0.5)


def entities(*spans: tuple[int, int, str]) -> list[Span]:
    return [Span(start=s, end=e, label=label) for s, e, label in spans]


def test_exclusive_textcat_accuracy_macro_f1_and_per_label():
    golds = [gold("a"), gold("a"), gold("b"), gold("c")]
    predicted = [said("a"), said("b"), said("b"), None]
    scores = score("textcat", ["a", "b", "c", "d"], golds, predicted)
    assert scores.overall["accuracy"] == pytest.approx(0.5)
    # a: P 1, R 1/2; b: P 1/2, R 1; c: 0; d: neither in gold nor predicted, left out
    assert scores.per_label["a"].f1 == pytest.approx(2 / 3)
    assert scores.per_label["b"].precision == pytest.approx(0.5)
    assert scores.per_label["b"].recall == pytest.approx(1.0)
    assert scores.per_label["c"].f1 == 0.0
    assert scores.overall["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert (scores.main_name, scores.main) == ("accuracy", pytest.approx(0.5))


def test_a_label_only_predicted_counts_in_macro_f1():
    scores = score("textcat", ["a", "b"], [gold("a"), gold("a")], [said("a"), said("b")])
    # a: P 1, R 1/2, F 2/3; b: predicted once, never gold: F 0
    assert scores.overall["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


def test_multilabel_micro_macro_and_exact_set_accuracy():
    golds = [gold("x", "y"), gold("x"), gold()]
    predicted = [said("x"), said("x", "y"), said("y")]
    scores = score("textcat_multilabel", ["x", "y"], golds, predicted)
    # x: tp 2; y: tp 0, fp 2, fn 1 -> micro P 2/4, R 2/3
    assert scores.overall["micro_f1"] == pytest.approx(4 / 7)
    assert scores.overall["macro_f1"] == pytest.approx(0.5)
    assert scores.overall["accuracy"] == 0.0
    assert scores.per_label["y"].support == 1
    assert scores.per_label["y"].predicted == 2


def test_ner_exact_match_per_type_and_overall():
    golds = [
        LabelledText(text="Ada in Paris", spans=entities((0, 3, "person"), (7, 12, "city"))),
        LabelledText(text="Grace", spans=entities((0, 5, "person"))),
    ]
    predicted = [
        Annotation(spans=entities((0, 3, "person"), (7, 12, "person")), confidence=1),
        None,
    ]
    scores = score("ner", ["person", "city"], golds, predicted)
    assert scores.per_label["person"].precision == pytest.approx(0.5)
    assert scores.per_label["person"].recall == pytest.approx(0.5)
    assert scores.per_label["city"].f1 == 0.0
    assert scores.overall["precision"] == pytest.approx(0.5)
    assert scores.overall["recall"] == pytest.approx(1 / 3)
    assert scores.overall["f1"] == pytest.approx(0.4)


def test_correct_items_needs_the_whole_annotation_right():
    golds = [gold("a"), gold("b"), gold()]
    predicted = [said("a"), said("a"), None]
    assert correct_items("textcat_multilabel", golds, predicted).tolist() == [True, False, False]
    ner_gold = [
        LabelledText(text="x", spans=[]),
        LabelledText(text="Ada", spans=entities((0, 3, "person"))),
    ]
    ner_said = [Annotation(confidence=1), Annotation(spans=entities((0, 3, "city")), confidence=1)]
    assert correct_items("ner", ner_gold, ner_said).tolist() == [True, False]


def test_accepted_accuracy_and_share():
    confidence = np.array([0.95, 0.9, 0.5, 0.2])
    correct = np.array([True, False, True, False])
    assert accepted_accuracy(confidence, correct, 0.9) == (0.5, 0.5)
    assert accepted_accuracy(confidence, correct, 0.99) == (None, 0.0)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 gold items but 1 predictions"):
        score("textcat", ["a"], [gold("a"), gold("a")], [said("a")])
