"""What the report shows, computed from the task's messages. Pure: tested without services.

Every item ends in one of three places, and the shares of these over time are the loop's
main figure: `accepted` (the student's answer stands), `llm` (the LLM answered and no
person was asked), `people` (routed to review for an answer; audit samples of accepted items
stay `accepted`: they measure, they are not needed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from loopline.processors.learning.monitoring import AUDIT_REASON
from loopline.schemas import Correction, ModelEvent, Prediction, RoutedItem
from loopline.streams.models.registry import RegistryState

ROUTES = ("accepted", "llm", "people")


@dataclass(frozen=True)
class Stamped:
    """A message with its Kafka timestamp (ms)."""

    message: object
    ms: int


@dataclass
class TaskRecords:
    """The decoded messages of a task's topics, and what could not be decoded."""

    predictions: list[Stamped] = field(default_factory=list)
    llm_requests: list[Stamped] = field(default_factory=list)
    review: list[Stamped] = field(default_factory=list)
    corrections: list[Stamped] = field(default_factory=list)
    registry: RegistryState = field(default_factory=RegistryState)
    undecodable: dict[str, int] = field(default_factory=dict)

    @property
    def gold(self) -> dict[str, Stamped]:
        """The latest gold correction per id."""
        latest: dict[str, Stamped] = {}
        for record in self.corrections:
            correction: Correction = record.message
            if correction.source == "human":
                latest[correction.id] = record
        return latest

    @property
    def silver_count(self) -> int:
        return len({r.message.id for r in self.corrections if r.message.source == "llm"})


@dataclass(frozen=True)
class ItemRoute:
    item_id: str
    route: str
    ms: int


def item_routes(records: TaskRecords) -> list[ItemRoute]:
    """Where each item ended, stamped with when the worker first handled it."""
    first_ms: dict[str, int] = {}
    routes: dict[str, str] = {}

    def seen(item_id: str, ms: int, route: str) -> None:
        first_ms[item_id] = min(ms, first_ms.get(item_id, ms))
        if ROUTES.index(route) >= ROUTES.index(routes.get(item_id, "accepted")):
            routes[item_id] = route

    for record in records.predictions:
        prediction: Prediction = record.message
        if prediction.source == "student":
            seen(prediction.id, record.ms, "accepted")
    for record in records.llm_requests:
        seen(record.message.id, record.ms, "llm")
    for record in records.review:
        routed: RoutedItem = record.message
        seen(routed.id, record.ms, "accepted" if routed.reason == AUDIT_REASON else "people")
    return sorted((ItemRoute(i, routes[i], ms) for i, ms in first_ms.items()), key=lambda r: r.ms)


@dataclass(frozen=True)
class SharesOverTime:
    """Per time bin: its start (ms), items, and the share of each route."""

    starts_ms: list[int]
    counts: list[int]
    shares: dict[str, list[float]]


def shares_over_time(routes: Sequence[ItemRoute], bins: int = 20) -> SharesOverTime:
    """Shares of accepted / LLM / people in equal time bins (empty bins left out)."""
    if not routes:
        return SharesOverTime([], [], {route: [] for route in ROUTES})
    times = np.array([r.ms for r in routes], dtype=float)
    edges = np.linspace(times.min(), times.max() + 1, bins + 1)
    index = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, bins - 1)
    starts, counts, shares = [], [], {route: [] for route in ROUTES}
    for b in range(bins):
        members = [routes[i].route for i in np.flatnonzero(index == b)]
        if not members:
            continue
        starts.append(int(edges[b]))
        counts.append(len(members))
        for route in ROUTES:
            shares[route].append(members.count(route) / len(members))
    return SharesOverTime(starts, counts, shares)


def route_totals(routes: Sequence[ItemRoute]) -> dict[str, int]:
    return {route: sum(r.route == route for r in routes) for route in ROUTES}


def queue_depth(records: TaskRecords) -> tuple[list[int], list[int]]:
    """Items waiting for people over time (ms, depth): +1 when an id is first routed to
    review, -1 when its gold answer is written."""
    routed_ms: dict[str, int] = {}
    for record in records.review:
        routed_ms[record.message.id] = min(record.ms, routed_ms.get(record.message.id, record.ms))
    changes = [(ms, 1) for ms in routed_ms.values()]
    changes += [
        (max(stamped.ms, routed_ms[item_id]), -1)
        for item_id, stamped in records.gold.items()
        if item_id in routed_ms
    ]
    changes.sort()
    depth, times, depths = 0, [], []
    for ms, change in changes:
        depth += change
        times.append(ms)
        depths.append(depth)
    return times, depths


def model_events(registry: RegistryState) -> list[ModelEvent]:
    """Every version's latest event with its status as the registry sees it, oldest first."""
    events = sorted(registry.versions.values(), key=lambda e: e.created_at)
    return [e.model_copy(update={"status": registry.status(e.version)}) for e in events]


@dataclass(frozen=True)
class CurvePoint:
    version: str
    gold: int
    score: float
    status: str


def learning_curve(events: Iterable[ModelEvent], metric: str) -> list[CurvePoint]:
    """Quality on the evaluation set against the gold labels each version was trained on."""
    return [
        CurvePoint(e.version, e.data_counts.get("gold", 0), e.metrics[metric], e.status)
        for e in events
        if metric in e.metrics
    ]


@dataclass(frozen=True)
class TokenSeries:
    """Cumulative LLM tokens spent, and what sending every item to the LLM would have cost."""

    minutes: list[int]
    spent: list[int]
    all_to_llm: list[float]
    tokens_per_llm_item: float | None

    @property
    def total(self) -> int:
        return self.spent[-1] if self.spent else 0

    @property
    def all_to_llm_total(self) -> float:
        return self.all_to_llm[-1] if self.all_to_llm else 0.0


def token_series(
    tokens_by_minute: Mapping[int, int], llm_items: int, routes: Sequence[ItemRoute]
) -> TokenSeries:
    """The baseline prices every item at the mean tokens of the items the LLM answered."""
    per_item = sum(tokens_by_minute.values()) / llm_items if llm_items else None
    item_minutes = [r.ms // 60_000 for r in routes]
    minutes = sorted(set(tokens_by_minute) | set(item_minutes))
    if not minutes:
        return TokenSeries([], [], [], per_item)
    spent = np.cumsum([tokens_by_minute.get(m, 0) for m in minutes]).tolist()
    items = np.searchsorted(np.sort(item_minutes), minutes, side="right")
    all_to_llm = (items * (per_item or 0.0)).tolist()
    return TokenSeries(minutes, [int(s) for s in spent], all_to_llm, per_item)
