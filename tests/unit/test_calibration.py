"""Temperature scaling fixes a synthetic overconfident model; ECE measures it."""

from __future__ import annotations

import numpy as np
import pytest

from loopline.processors.calibration import (
    apply_binary_temperatures,
    apply_platt,
    apply_temperature,
    expected_calibration_error,
    fit_binary_temperatures,
    fit_platt,
    fit_temperature,
    minimise_scalar,
    reliability_bins,
)


def overconfident_model(n: int, k: int, sharpen: float, seed: int = 0):
    """Labels drawn from softmax(z); the model reports softmax(sharpen * z): overconfident."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(n, k))
    true_p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    gold = np.array([rng.choice(k, p=row) for row in true_p])
    said = np.exp(sharpen * logits)
    said /= said.sum(axis=1, keepdims=True)
    return said, gold


def top_confidence(probs, gold):
    best = probs.argmax(axis=1)
    return probs.max(axis=1), best == gold


def test_temperature_undoes_overconfidence_and_lowers_ece():
    probs, gold = overconfident_model(4000, 5, sharpen=3.0)
    temperature = fit_temperature(probs[:2000], gold[:2000])
    assert temperature == pytest.approx(3.0, rel=0.15)
    before = expected_calibration_error(*top_confidence(probs[2000:], gold[2000:]))
    calibrated = apply_temperature(probs[2000:], temperature)
    after = expected_calibration_error(*top_confidence(calibrated, gold[2000:]))
    assert before > 0.15
    assert after < 0.04
    assert (calibrated.argmax(axis=1) == probs[2000:].argmax(axis=1)).all()


def test_underconfident_model_gets_temperature_below_one():
    probs, gold = overconfident_model(3000, 4, sharpen=0.5, seed=1)
    assert fit_temperature(probs, gold) == pytest.approx(0.5, rel=0.15)


def test_binary_temperatures_per_label():
    rng = np.random.default_rng(2)
    logits = rng.normal(0.0, 2.0, size=(4000, 2))
    gold = rng.random((4000, 2)) < 1 / (1 + np.exp(-logits))
    said = 1 / (1 + np.exp(-logits * np.array([4.0, 1.0])))
    temperatures = fit_binary_temperatures(said, gold)
    assert temperatures[0] == pytest.approx(4.0, rel=0.15)
    assert temperatures[1] == pytest.approx(1.0, rel=0.15)
    calibrated = apply_binary_temperatures(said, temperatures)
    assert np.allclose(calibrated, 1 / (1 + np.exp(-logits)), atol=0.05)


def test_ece_and_bins_by_hand():
    confidence = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([True, False, True, True])
    bins = reliability_bins(confidence, correct, n_bins=10)
    assert [(b.lower, b.count, b.accuracy) for b in bins] == [(0.5, 2, 1.0), (0.9, 2, 0.5)]
    # half the items have a gap of 0.45, half a gap of 0.45
    assert expected_calibration_error(confidence, correct, n_bins=10) == pytest.approx(0.45)
    assert expected_calibration_error(np.array([1.0]), np.array([True])) == 0.0


def test_golden_section_finds_the_minimum():
    assert minimise_scalar(lambda x: (x - 1.25) ** 2, -3.0, 4.0) == pytest.approx(1.25, abs=1e-3)


def test_platt_scaling_fixes_confidence_a_temperature_cannot():
    rng = np.random.default_rng(3)
    said = rng.uniform(0.01, 0.999, size=6000)
    logit = np.log(said) - np.log1p(-said)
    correct = rng.random(6000) < 1 / (1 + np.exp(-(0.5 * logit - 1.0)))
    slope, intercept = fit_platt(said[:3000], correct[:3000])
    assert (slope, intercept) == (pytest.approx(0.5, abs=0.1), pytest.approx(-1.0, abs=0.15))
    before = expected_calibration_error(said[3000:], correct[3000:])
    after = expected_calibration_error(apply_platt(said[3000:], slope, intercept), correct[3000:])
    assert before > 0.2 and after < 0.04


def test_platt_stays_finite_on_separable_data():
    slope, intercept = fit_platt(np.array([0.2, 0.3, 0.8, 0.9]), np.array([0, 0, 1, 1]))
    assert np.isfinite([slope, intercept]).all() and slope > 0
