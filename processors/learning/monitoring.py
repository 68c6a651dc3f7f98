"""Continuous evaluation: live accuracy per model version from the audit sample. Pure.

Accepted items are sampled for review by a hash of their id (`routing.audit_rate`), so the
ones people answered are an unbiased sample of what each version accepted in production.
Their accuracy, with a Wilson interval, is compared with the version's gate figure: a version
whose interval lies wholly below that figure is flagged (the world moved, or the evaluation
set did not represent it).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from loopline.schemas import Correction, RoutedItem

AUDIT_REASON = "audit"
Z_95 = 1.959964


@dataclass(frozen=True)
class AuditResult:
    """One audited item: the version whose accepted answer it was, and whether people agreed."""

    item_id: str
    version: str
    correct: bool


@dataclass(frozen=True)
class LiveAccuracy:
    version: str
    n: int
    correct: int
    low: float
    high: float
    gate: float | None

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def flagged(self) -> bool:
        """The whole interval is below the gate figure: more than chance can explain."""
        return self.gate is not None and self.n > 0 and self.high < self.gate


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion: sound near 0 and 1 and for small n."""
    if n == 0:
        return 0.0, 1.0
    share = successes / n
    centre = share + z * z / (2 * n)
    spread = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    denominator = 1 + z * z / n
    return max(0.0, (centre - spread) / denominator), min(1.0, (centre + spread) / denominator)


def audit_results(
    routed: Iterable[RoutedItem], gold: Mapping[str, Correction]
) -> list[AuditResult]:
    """Audit items people decided on (`ignore` answers say nothing and are left out)."""
    results = {}
    for item in routed:
        answer = gold.get(item.id)
        student = next((s for s in item.suggestions if s.source == "student"), None)
        if item.reason != AUDIT_REASON or answer is None or student is None:
            continue
        if answer.decision == "ignore":
            continue
        results[item.id] = AuditResult(item.id, student.model_version, agrees(answer, student))
    return list(results.values())


def agrees(answer: Correction, suggestion) -> bool:
    """The whole answer matches: same labels and same labelled spans; a rejection never does."""
    if answer.decision == "reject":
        return False
    annotation = suggestion.annotation
    return set(answer.labels) == set(annotation.labels) and {
        (s.start, s.end, s.label) for s in answer.spans
    } == {(s.start, s.end, s.label) for s in annotation.spans}


def live_accuracy(
    results: Iterable[AuditResult], gate_figures: Mapping[str, float]
) -> list[LiveAccuracy]:
    """Per version, in the order first audited: accuracy, its 95 % interval, the gate figure."""
    tallies: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for result in results:
        tally = tallies[result.version]
        tally[0] += 1
        tally[1] += result.correct
    return [
        LiveAccuracy(version, n, correct, *wilson_interval(correct, n), gate_figures.get(version))
        for version, (n, correct) in tallies.items()
    ]
