from __future__ import annotations

import random

import pytest

from loopline.processors.data import LabelledText
from loopline.processors.learning.policy import (
    FitSettings,
    GoldEvidence,
    effective_routing,
    fit_accept_threshold,
    fit_llm_bands,
    fit_policy,
    gold_evidence,
    llm_bands_of,
    sign_test,
)
from loopline.processors.routing import route
from loopline.schemas import Annotation
from loopline.schemas.task import RoutingConfig


def calibrated(n: int, seed: int = 0, llm_accuracy: float | None = None) -> list[GoldEvidence]:
    """Items whose confidence is their probability of being right; the LLM right at a fixed rate."""
    draw = random.Random(seed)
    rows = []
    for _ in range(n):
        confidence = draw.random()
        llm = None if llm_accuracy is None else draw.random() < llm_accuracy
        rows.append(GoldEvidence(confidence, draw.random() < confidence, llm))
    return rows


def test_threshold_is_the_lowest_that_reaches_the_target():
    rows = [
        GoldEvidence(0.99, True),
        GoldEvidence(0.95, True),
        GoldEvidence(0.90, False),
        GoldEvidence(0.85, True),
        GoldEvidence(0.80, True),
        GoldEvidence(0.70, False),
        GoldEvidence(0.60, False),
    ]
    # From the top: 1/1, 2/2, 2/3, 3/4, 4/5 = 0.8, 4/6, 4/7.
    fit = fit_accept_threshold(rows, target_accuracy=0.8)
    assert (fit.threshold, fit.accepted, fit.accepted_correct, fit.reached) == (0.80, 5, 4, True)
    assert fit_accept_threshold(rows, target_accuracy=0.95).threshold == 0.95


def test_ties_are_accepted_together():
    rows = [GoldEvidence(0.9, True), GoldEvidence(0.8, True), GoldEvidence(0.8, False)]
    fit = fit_accept_threshold(rows, target_accuracy=0.7)
    # Threshold 0.8 accepts both tied items (2/3 < 0.7), so 0.9 it is.
    assert (fit.threshold, fit.accepted) == (0.9, 1)


def test_a_target_never_reached_accepts_only_certainty():
    rows = [GoldEvidence(0.9, False), GoldEvidence(0.5, True)]
    fit = fit_accept_threshold(rows, target_accuracy=0.99)
    assert (fit.reached, fit.threshold, fit.accepted) == (False, 1.0, 0)


def test_fitted_threshold_meets_the_target_on_fresh_calibrated_data():
    fit = fit_accept_threshold(calibrated(4000, seed=1), target_accuracy=0.9)
    fresh = calibrated(20000, seed=2)
    accepted = [r for r in fresh if r.confidence >= fit.threshold]
    accuracy = sum(r.student_correct for r in accepted) / len(accepted)
    assert 0.78 < fit.threshold < 0.84  # mean of U(t, 1) is 0.9 at t = 0.8
    assert accuracy == pytest.approx(0.9, abs=0.015)


def test_sign_test():
    assert sign_test(5, 0) == pytest.approx(1 / 32)
    assert sign_test(0, 5) == 1.0
    assert sign_test(3, 3) == pytest.approx(42 / 64)


def test_llm_goes_where_it_is_measurably_better_and_people_get_the_rest():
    draw = random.Random(3)
    rows = []
    for _ in range(400):
        confidence = draw.random() * 0.9
        student_right = draw.random() < confidence
        # The LLM is right 80 % of the time everywhere: better than the student at low
        # confidence, worse near the top.
        rows.append(GoldEvidence(confidence, student_right, draw.random() < 0.8))
    bands = fit_llm_bands(rows, accept_threshold=0.9, settings=FitSettings())
    assert len(bands) == 4
    assert bands[0].low == 0.0 and bands[-1].high == 1.0
    assert [b.verdict for b in bands[:2]] == ["llm_better", "llm_better"]
    assert bands[-1].verdict == "llm_not_better"
    assert sum(b.items for b in bands) == 400
    merged = llm_bands_of(bands)
    assert merged[0][0] == 0.0 and merged[-1][1] <= bands[-1].low


def test_bands_with_too_little_evidence_keep_the_llm():
    rows = [GoldEvidence(0.3, False, True), GoldEvidence(0.4, True, False)] * 2
    (band,) = fit_llm_bands(rows, accept_threshold=0.9, settings=FitSettings())
    assert band.verdict == "too_little_evidence" and band.uses_llm
    assert (band.llm_only, band.student_only, band.items) == (2, 2, 4)


def test_items_at_or_above_the_threshold_are_not_band_evidence():
    rows = [GoldEvidence(0.95, False, True)] * 50
    assert fit_llm_bands(rows, accept_threshold=0.9, settings=FitSettings()) == []


def test_fit_policy_with_too_few_items_fits_nothing():
    policy = fit_policy(calibrated(10), RoutingConfig(target_accuracy=0.9))
    assert policy.accept_threshold is None and policy.llm_bands is None
    assert "a fit needs 30" in policy.notes[0]


def test_fit_policy_without_target_fits_only_bands():
    policy = fit_policy(calibrated(300, llm_accuracy=0.85), RoutingConfig())
    assert policy.accept_threshold is None and policy.threshold_evidence is None
    assert policy.band_evidence and policy.llm_bands is not None
    assert any("target_accuracy is not set" in note for note in policy.notes)


def test_fit_policy_round_trips_as_json():
    policy = fit_policy(calibrated(300, llm_accuracy=0.85), RoutingConfig(target_accuracy=0.9))
    assert type(policy).model_validate_json(policy.model_dump_json()) == policy


def test_values_written_in_the_task_file_win():
    policy = fit_policy(calibrated(500, llm_accuracy=0.95), RoutingConfig(target_accuracy=0.9))
    assert policy.accept_threshold is not None and policy.llm_bands is not None
    unset = RoutingConfig.model_validate({"target_accuracy": 0.9})
    fitted = effective_routing(unset, policy)
    assert fitted.accept_threshold == policy.accept_threshold
    assert fitted.llm_bands == policy.llm_bands
    written = RoutingConfig.model_validate({"accept_threshold": 0.97, "llm_min_confidence": 0.2})
    kept = effective_routing(written, policy)
    assert (kept.accept_threshold, kept.llm_bands) == (0.97, None)
    assert effective_routing(unset, None) is unset


def test_routing_follows_the_fitted_bands():
    routing = RoutingConfig(accept_threshold=0.9, llm_bands=[(0.0, 0.5)])

    def where(confidence: float) -> tuple[str, str]:
        annotation = Annotation(labels=["a"], confidence=confidence)
        decision = route(annotation, routing, llm_available=True, draw=0.5)
        return decision.destination, decision.reason

    assert where(0.3) == ("llm", "low_confidence")
    assert where(0.7) == ("review", "llm_not_better")
    assert where(0.95) == ("accept", "confident")


def test_bands_must_be_intervals_inside_0_1():
    with pytest.raises(ValueError, match="not a band"):
        RoutingConfig(llm_bands=[(0.5, 0.4)])


def test_gold_evidence_from_answers():
    gold = [LabelledText(text=t, labels=[label]) for t, label in [("a", "x"), ("b", "y")]]
    student = [Annotation(labels=["x"], confidence=0.8), Annotation(labels=["x"], confidence=0.4)]
    llm = [None, Annotation(labels=["y"], confidence=0.9)]
    rows = gold_evidence("textcat", gold, student, llm)
    assert rows == [GoldEvidence(0.8, True, None), GoldEvidence(0.4, False, True)]
