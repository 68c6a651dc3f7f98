from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from loopline.processors.learning.monitoring import (
    AuditResult,
    audit_results,
    live_accuracy,
    wilson_interval,
)
from loopline.schemas import Annotation, Correction, RoutedItem, Suggestion, TextIn

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def routed(item_id: str, label: str, version: str, reason: str = "audit") -> RoutedItem:
    suggestion = Suggestion(
        source="student",
        model_version=version,
        annotation=Annotation(labels=[label], confidence=0.95),
    )
    return RoutedItem(
        id=item_id,
        task="t",
        item=TextIn(id=item_id, text=f"text {item_id}"),
        route="review",
        suggestions=[suggestion],
        reason=reason,
    )


def gold(item_id: str, label: str | None, decision: str = "accept") -> Correction:
    return Correction(
        id=item_id,
        task="t",
        text=f"text {item_id}",
        labels=[label] if label else [],
        decision=decision,
        reviewer="ana",
        time=NOW,
    )


def test_wilson_interval_known_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and 0.72 < low < 0.73


def test_wilson_interval_covers_the_true_rate_about_95_percent_of_the_time():
    draw = random.Random(0)
    covered = 0
    for _ in range(2000):
        successes = sum(draw.random() < 0.9 for _ in range(50))
        low, high = wilson_interval(successes, 50)
        covered += low <= 0.9 <= high
    assert 0.93 < covered / 2000 < 0.98  # binomial coverage wobbles around 95 %


def test_audit_results_only_count_answered_audit_items():
    items = [
        routed("a", "x", "v1"),
        routed("b", "x", "v1"),
        routed("c", "x", "v2"),
        routed("d", "x", "v2", reason="low_confidence_no_llm"),  # not an audit sample
        routed("e", "x", "v2"),  # no human answer yet
        routed("f", "x", "v2"),  # ignored by the reviewer
        routed("g", "x", "v2"),  # rejected: none of the labels fit
    ]
    answers = {
        "a": gold("a", "x"),
        "b": gold("b", "y"),
        "c": gold("c", "x"),
        "d": gold("d", "x"),
        "f": gold("f", None, "ignore"),
        "g": gold("g", None, "reject"),
    }
    results = audit_results(items, answers)
    assert [(r.item_id, r.version, r.correct) for r in results] == [
        ("a", "v1", True),
        ("b", "v1", False),
        ("c", "v2", True),
        ("g", "v2", False),
    ]


def test_an_item_routed_twice_counts_once():
    items = [routed("a", "x", "v1"), routed("a", "x", "v1")]
    assert len(audit_results(items, {"a": gold("a", "x")})) == 1


def test_a_version_clearly_below_its_gate_figure_is_flagged():
    results = [AuditResult(f"a{i}", "v1", i < 70) for i in range(100)]  # 0.70 live
    results += [AuditResult(f"b{i}", "v2", i < 9) for i in range(10)]  # 0.90 live, few items
    by_version = {r.version: r for r in live_accuracy(results, {"v1": 0.90, "v2": 0.95})}
    v1, v2 = by_version["v1"], by_version["v2"]
    assert v1.accuracy == pytest.approx(0.70) and v1.high < 0.90 and v1.flagged
    assert v2.low < 0.95 < v2.high and not v2.flagged  # ten items cannot tell
    unknown = live_accuracy(results, {})
    assert not any(r.flagged for r in unknown)
