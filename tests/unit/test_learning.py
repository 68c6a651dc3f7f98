"""Corrections into training and evaluation sets, and the promotion gate: pure logic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from loopline.processors.data import LabelledText
from loopline.processors.learning.gate import Figures, decide, measure
from loopline.processors.learning.trainset import (
    MIN_EVAL_ITEMS,
    TrainingSet,
    in_eval_split,
    shortfall,
)
from loopline.schemas import Annotation, Correction
from loopline.schemas.task import LearningConfig

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TRAIN_IDS = [f"id-{i}" for i in range(400) if not in_eval_split(f"id-{i}", 0.2)]
EVAL_IDS = [f"id-{i}" for i in range(400) if in_eval_split(f"id-{i}", 0.2)]


def correction(item_id, label, source="human", minutes=0, decision="accept", text=None):
    return Correction(
        id=item_id,
        task="t",
        text=text or f"text of {item_id}",
        labels=[label] if decision == "accept" else [],
        decision=decision,
        source=source,
        reviewer="ana" if source == "human" else "llm:m",
        time=T0 + timedelta(minutes=minutes),
    )


def fold(*corrections, **options) -> TrainingSet:
    trainset = TrainingSet(eval_share=0.2, silver_weight=0.3, **options)
    for c in corrections:
        trainset.add(c)
    return trainset


def test_the_eval_split_is_stable_and_near_its_share():
    assert [in_eval_split(i, 0.2) for i in TRAIN_IDS + EVAL_IDS] == [False] * len(TRAIN_IDS) + [
        True
    ] * len(EVAL_IDS)
    assert 0.15 < len(EVAL_IDS) / 400 < 0.25


def test_latest_gold_wins_whatever_the_order_it_arrives_in():
    item = TRAIN_IDS[0]
    snapshot = fold(correction(item, "b", minutes=5), correction(item, "a", minutes=1)).snapshot()
    assert [eg.labels for eg in snapshot.train] == [["b"]]


def test_gold_beats_silver_and_silver_trains_with_its_weight():
    gold_id, silver_id = TRAIN_IDS[:2]
    snapshot = fold(
        correction(gold_id, "a", minutes=1),
        correction(gold_id, "b", source="llm", minutes=9),
        correction(silver_id, "c", source="llm"),
    ).snapshot()
    by_label = {eg.labels[0]: eg for eg in snapshot.train}
    assert set(by_label) == {"a", "c"}
    assert by_label["a"].weight == 1.0 and by_label["a"].source == "human"
    assert by_label["c"].weight == 0.3 and by_label["c"].source == "llm"
    assert snapshot.counts["train_gold"] == 1 and snapshot.counts["train_silver"] == 1


def test_a_gold_reject_keeps_the_id_out_of_training():
    item = TRAIN_IDS[0]
    snapshot = fold(
        correction(item, "a", source="llm"), correction(item, "", decision="reject")
    ).snapshot()
    assert snapshot.train == [] and snapshot.counts["gold"] == 1


def test_eval_ids_are_never_trained_on_and_keep_the_llm_answer_as_evidence():
    held, trained = EVAL_IDS[0], TRAIN_IDS[0]
    snapshot = fold(
        correction(held, "a"),
        correction(held, "b", source="llm"),
        correction(EVAL_IDS[1], "c", source="llm"),  # silver only: neither set
        correction(trained, "a"),
    ).snapshot()
    assert [eg.text for eg in snapshot.train] == [f"text of {trained}"]
    assert [eg.labels for eg in snapshot.eval] == [["a"]]
    assert [eg.labels for eg in snapshot.eval_llm] == [["b"]]


def test_a_fixed_eval_file_joins_the_eval_set_and_its_texts_are_not_trained_on():
    fixed = [LabelledText(text="shared text", labels=["a"])]
    snapshot = fold(
        correction(TRAIN_IDS[0], "a", text="shared text"),
        correction(TRAIN_IDS[1], "b"),
        fixed_eval=fixed,
    ).snapshot()
    assert [eg.labels for eg in snapshot.train] == [["b"]]
    assert snapshot.eval == fixed and snapshot.eval_llm == [None]


def test_the_fingerprint_follows_the_data():
    a = fold(correction(TRAIN_IDS[0], "a")).snapshot()
    again = fold(correction(TRAIN_IDS[0], "a")).snapshot()
    changed = fold(correction(TRAIN_IDS[0], "b")).snapshot()
    assert a.data_hash == again.data_hash != changed.data_hash


def test_shortfall_says_how_many_more_labels_are_needed():
    few = fold(*(correction(i, "a") for i in TRAIN_IDS[:30] + EVAL_IDS[:5])).snapshot()
    assert f"{MIN_EVAL_ITEMS} needed" in shortfall(few, 0.2)
    enough_eval = fold(*(correction(i, "a") for i in TRAIN_IDS[:30] + EVAL_IDS[:25])).snapshot()
    assert "100 needed" in shortfall(enough_eval, 0.2)
    enough = fold(*(correction(i, "a") for i in TRAIN_IDS[:100] + EVAL_IDS[:25])).snapshot()
    assert shortfall(enough, 0.2) is None


# the gate -----------------------------------------------------------------------------------


def figures(main: float, ece: float = 0.05) -> Figures:
    return Figures("accuracy", main, main, ece, 100, ())


CONFIG = LearningConfig(promote_margin=0.01, max_ece_increase=0.02, floor=0.5)


@pytest.mark.parametrize(
    ("candidate", "production", "promote", "words"),
    [
        (figures(0.6), None, True, "reaches the floor"),
        (figures(0.4), None, False, "below the floor"),
        (figures(0.82), figures(0.80), True, "gain +0.020"),
        (figures(0.805), figures(0.80), False, "less than the margin"),
        (figures(0.70), figures(0.80), False, "less than the margin"),
        (figures(0.85, ece=0.10), figures(0.80, ece=0.05), False, "calibration error"),
        (figures(0.85, ece=0.06), figures(0.80, ece=0.05), True, "gain +0.050"),
    ],
)
def test_the_gate_promotes_only_a_clearly_better_not_worse_calibrated_model(
    candidate, production, promote, words
):
    decision = decide(candidate, production, CONFIG)
    assert decision.promote is promote
    assert words in decision.reason


def test_measure_scores_calibration_and_bands_beside_the_llm():
    gold = [LabelledText(text=str(i), labels=["a" if i % 2 else "b"]) for i in range(10)]
    predicted = [
        Annotation(labels=["a"], confidence=0.95 if i < 5 else 0.55) for i in range(10)
    ]  # right on odd items only
    llm = [
        LabelledText(text=str(i), labels=eg.labels) if i < 5 else None for i, eg in enumerate(gold)
    ]
    result = measure("textcat", ["a", "b"], gold, predicted, llm)
    assert result.main_name == "accuracy" and result.main == 0.5 and result.n == 10
    high = next(b for b in result.bands if b.low == 0.95)
    low = next(b for b in result.bands if b.low == 0.5)
    assert (high.n, high.accuracy, high.llm_n, high.llm_accuracy) == (5, 0.4, 5, 1.0)
    assert (low.n, low.accuracy, low.llm_n, low.llm_accuracy) == (5, 0.6, 0, None)
    assert abs(result.ece - (5 * 0.55 + 5 * 0.05) / 10) < 1e-9
    assert sum(b.n for b in result.bands) == 10
