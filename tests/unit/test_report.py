from __future__ import annotations

import re
from datetime import UTC, datetime

from loopline.schemas import (
    Annotation,
    Correction,
    ModelEvent,
    Prediction,
    RoutedItem,
    Suggestion,
    TextIn,
    load_task,
)
from loopline.schemas.messages import BandAccuracy
from loopline.streams.models.registry import RegistryState, promotion, registration, rejection
from loopline.streams.report.gather import RedisFigures
from loopline.streams.report.page import build_report, gate_figure, render_html
from loopline.streams.report.series import (
    Stamped,
    TaskRecords,
    item_routes,
    learning_curve,
    model_events,
    queue_depth,
    route_totals,
    shares_over_time,
    token_series,
)
from tests.integration.streaming import EXAMPLES

TASK = load_task(EXAMPLES / "snips" / "task.yml")
LABEL = TASK.label_names[0]
OTHER = TASK.label_names[1]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
NO_REDIS = RedisFigures(tokens_by_minute={}, llm_answers=0, review_pending=None)


def suggestion(label: str, version: str = "v1") -> Suggestion:
    annotation = Annotation(labels=[label], confidence=0.95)
    return Suggestion(source="student", model_version=version, annotation=annotation)


def prediction(item_id: str, source: str = "student") -> Prediction:
    return Prediction(
        id=item_id,
        task=TASK.name,
        labels=[LABEL],
        confidence=0.95,
        source=source,
        model_version="v1",
        revision={"student": 0, "llm": 1, "human": 2}[source],
    )


def routed(item_id: str, route: str, reason: str, label: str = LABEL) -> RoutedItem:
    return RoutedItem(
        id=item_id,
        task=TASK.name,
        item=TextIn(id=item_id, text=f"text {item_id}"),
        route=route,
        suggestions=[suggestion(label)],
        reason=reason,
    )


def gold(item_id: str, label: str = LABEL, source: str = "human") -> Correction:
    return Correction(
        id=item_id,
        task=TASK.name,
        text=f"text {item_id}",
        labels=[label],
        source=source,
        reviewer="ana" if source == "human" else "llm:x",
        time=NOW,
    )


def event(version: str, gold_count: int, accuracy: float, minute: int) -> ModelEvent:
    return ModelEvent(
        task=TASK.name,
        version=version,
        artifact=f"{TASK.name}/{version}",
        metrics={"accuracy": accuracy, "ece": 0.03},
        bands=[
            BandAccuracy(low=0.0, high=0.9, n=50, accuracy=0.5),
            BandAccuracy(low=0.9, high=1.0, n=50, accuracy=0.96),
        ],
        data_counts={"gold": gold_count, "silver": 10},
        created_at=datetime(2026, 1, 1, 0, minute, tzinfo=UTC),
    )


def sample_records() -> TaskRecords:
    """Ten items over ten minutes: early ones go to people, later ones are accepted."""
    minute = 60_000
    records = TaskRecords()
    records.review += [
        Stamped(routed(f"i{i}", "review", "low_confidence_no_llm"), i * minute) for i in range(3)
    ]
    records.llm_requests += [Stamped(routed("i3", "llm", "low_confidence"), 3 * minute)]
    records.predictions += [Stamped(prediction("i3", "llm"), 3 * minute + 5)]
    records.predictions += [Stamped(prediction(f"i{i}"), i * minute) for i in range(4, 10)]
    # i4 and i5 were accepted and sampled for audit; people agreed with i4, not with i5.
    records.review += [
        Stamped(routed("i4", "review", "audit"), 4 * minute),
        Stamped(routed("i5", "review", "audit"), 5 * minute),
    ]
    records.corrections += [
        Stamped(gold("i0"), 5 * minute),
        Stamped(gold("i1"), 6 * minute),
        Stamped(gold("i4"), 7 * minute),
        Stamped(gold("i5", OTHER), 8 * minute),
        Stamped(gold("i3", source="llm"), 3 * minute),
    ]
    registry = RegistryState()
    first, second, third = (
        event("v1", 20, 0.8, 1),
        event("v2", 60, 0.9, 2),
        event("v3", 90, 0.85, 3),
    )
    for key, value in registration(first) + promotion(registry, first, "first"):
        registry.apply(key, value)
    for key, value in promotion(registry, second, "better"):
        registry.apply(key, value)
    for key, value in rejection(third, "worse"):
        registry.apply(key, value)
    records.registry = registry
    return records


def test_each_item_ends_in_one_place():
    routes = item_routes(sample_records())
    assert [r.item_id for r in routes] == [f"i{i}" for i in range(10)]
    assert route_totals(routes) == {"accepted": 6, "llm": 1, "people": 3}
    shares = shares_over_time(routes, bins=2)
    assert shares.counts == [5, 5]
    assert shares.shares["people"] == [0.6, 0.0] and shares.shares["accepted"] == [0.2, 1.0]


def test_queue_depth_rises_with_routed_items_and_falls_with_answers():
    times, depths = queue_depth(sample_records())
    # Minute 5: i0 answered, i5 routed; then i1, i4, i5 answered.
    assert depths == [1, 2, 3, 4, 3, 4, 3, 2, 1]


def test_learning_curve_and_registry_status():
    events = model_events(sample_records().registry)
    assert [(e.version, e.status) for e in events] == [
        ("v1", "retired"),
        ("v2", "production"),
        ("v3", "rejected"),
    ]
    assert [(p.gold, p.score) for p in learning_curve(events, "accuracy")] == [
        (20, 0.8),
        (60, 0.9),
        (90, 0.85),
    ]


def test_tokens_against_all_to_the_llm():
    routes = item_routes(sample_records())
    series = token_series({3: 300}, llm_items=1, routes=routes)
    assert series.tokens_per_llm_item == 300
    assert series.total == 300 and series.all_to_llm_total == 3000


def test_gate_figure_is_the_accuracy_of_items_the_version_would_accept():
    assert gate_figure(event("v1", 1, 0.8, 1), TASK.routing, "accuracy") == 0.96


def test_page_has_every_section_with_plots():
    page = build_report(
        TASK,
        sample_records(),
        RedisFigures(tokens_by_minute={3: 300}, llm_answers=1, review_pending=2),
        price_per_1k=0.5,
    )
    assert page.summary["people"] == "3 (30.0%)"
    text = render_html(page)
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', text)) == 5
    assert "0.15 against 1.50" in text  # cost of 300 tokens against 3,000
    assert "2 items pending now" in text
    assert "v2</td><td>production" in text
    # Live accuracy: v1 accepted i4 and i5; people agreed once.
    assert "<td>v1</td><td>2</td><td>1</td><td>0.500</td>" in text


def test_an_empty_task_explains_every_section():
    text = render_html(build_report(TASK, TaskRecords(), NO_REDIS, price_per_1k=0.0))
    assert "<img" not in text
    for why in (
        "No model event on",
        "No item has been annotated yet",
        "The LLM has answered nothing yet",
        "No live accuracy yet",
        "Nothing has been routed to people yet",
    ):
        assert why in text
