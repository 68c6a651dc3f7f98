"""Making scores mean probabilities: temperature and Platt scaling, calibration error. Numpy only.

Raw spaCy scores are overconfident: after a few epochs errors at 0.99 are common. One
temperature `T` per model (per label for independent labels) divides the logits; `T > 1`
softens, `T < 1` sharpens. It is fitted by minimising the negative log-likelihood of held-out
gold labels (Guo et al. 2017, "On Calibration of Modern Neural Networks"), which keeps the
ranking of labels, so accuracy does not change, only what the scores claim.

spaCy gives probabilities, not logits; `log p` are the logits up to a per-row constant,
which a softmax ignores, so scaling `log p` is exact temperature scaling.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

EPSILON = 1e-7
"""Probabilities are clipped to [EPSILON, 1 - EPSILON] before logs: float32 gives 0s and 1s."""
LOG_T_BOUNDS = (math.log(0.01), math.log(100.0))
"""Search range for temperatures: bag-of-words scores can need T < 0.1 (underconfident)."""


# fitting ------------------------------------------------------------------------------------


def fit_temperature(probs: np.ndarray, gold: np.ndarray) -> float:
    """The temperature that minimises the NLL of `gold` class indices under softmax(log p / T)."""
    logits = _log(probs)
    rows = np.arange(len(gold))

    def nll(log_t: float) -> float:
        scaled = logits / math.exp(log_t)
        return float(np.mean(_logsumexp(scaled) - scaled[rows, gold]))

    return math.exp(minimise_scalar(nll, *LOG_T_BOUNDS))


def fit_binary_temperatures(probs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Per label (column), the temperature for sigmoid(logit(p) / T) minimising binary NLL."""
    logits = _logit(probs)
    gold = np.asarray(gold, dtype=bool)
    return np.array([_fit_binary(logits[:, j], gold[:, j]) for j in range(logits.shape[1])])


def _fit_binary(logits: np.ndarray, gold: np.ndarray) -> float:
    signs = np.where(gold, 1.0, -1.0)

    def nll(log_t: float) -> float:
        return float(np.mean(np.logaddexp(0.0, -signs * logits / math.exp(log_t))))

    return math.exp(minimise_scalar(nll, *LOG_T_BOUNDS))


def fit_platt(confidence: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of a logistic regression of `correct` on logit(`confidence`).

    Platt scaling, for confidences that are products of dependent probabilities (NER items),
    where one temperature cannot fix both ends. Newton's method on the mean log-loss with a
    small ridge so that separable data still gives finite parameters.
    """
    x = _logit(confidence)
    y = np.asarray(correct, dtype=np.float64)
    design = np.column_stack([x, np.ones_like(x)])
    params = np.array([1.0, 0.0])
    ridge = 1e-3 * np.eye(2)
    for _ in range(100):
        p = _sigmoid(design @ params)
        gradient = design.T @ (p - y) / len(y) + ridge @ (params - [1.0, 0.0])
        hessian = (design * (p * (1 - p))[:, None]).T @ design / len(y) + ridge
        step = np.linalg.solve(hessian, gradient)
        params -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(params[0]), float(params[1])


def minimise_scalar(
    f: Callable[[float], float], low: float, high: float, tol: float = 1e-4
) -> float:
    """Golden-section search for the minimum of a unimodal `f` on [low, high]."""
    ratio = (math.sqrt(5) - 1) / 2
    a, b = low, high
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2


# applying -----------------------------------------------------------------------------------


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax-normalised probabilities with logits divided by `temperature` (row-wise)."""
    scaled = _log(probs) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    np.exp(scaled, out=scaled)
    scaled /= scaled.sum(axis=1, keepdims=True)
    return scaled


def apply_binary_temperatures(probs: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """Independent probabilities with each column's logit divided by its temperature."""
    return _sigmoid(_logit(probs) / temperatures)


def apply_platt(confidence: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Confidences mapped through the fitted logistic curve."""
    return _sigmoid(slope * _logit(confidence) + intercept)


# measuring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence band: how sure the model said it was, and how often it was right."""

    lower: float
    upper: float
    count: int
    confidence: float
    accuracy: float


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> list[ReliabilityBin]:
    """Equal-width confidence bins over [0, 1]; empty bins are left out."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    index = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    bins = []
    for b in np.unique(index):
        members = index == b
        bins.append(
            ReliabilityBin(
                lower=b / n_bins,
                upper=(b + 1) / n_bins,
                count=int(members.sum()),
                confidence=float(confidence[members].mean()),
                accuracy=float(correct[members].mean()),
            )
        )
    return bins


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> float:
    """Count-weighted mean gap between confidence and accuracy over the bins (0 is perfect)."""
    bins = reliability_bins(confidence, correct, n_bins)
    total = sum(b.count for b in bins)
    if not total:
        return 0.0
    return sum(b.count * abs(b.accuracy - b.confidence) for b in bins) / total


# helpers ------------------------------------------------------------------------------------


def _log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), EPSILON, 1.0))


def _logit(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), EPSILON, 1.0 - EPSILON)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _logsumexp(x: np.ndarray) -> np.ndarray:
    peak = x.max(axis=1)
    return peak + np.log(np.exp(x - peak[:, None]).sum(axis=1))
