from __future__ import annotations

import pytest

from loopline.processors.routing import audit_draw, route
from loopline.schemas import Annotation
from loopline.schemas.task import RoutingConfig


def annotation(confidence: float) -> Annotation:
    return Annotation(labels=["a"], scores={"a": confidence}, confidence=confidence)


POLICY = RoutingConfig(accept_threshold=0.9, llm_min_confidence=0.3, audit_rate=0.0)


@pytest.mark.parametrize(
    ("confidence", "llm", "destination", "reason"),
    [
        (0.95, True, "accept", "confident"),
        (0.90, True, "accept", "confident"),  # at the threshold counts as confident
        (0.89, True, "llm", "low_confidence"),
        (0.30, True, "llm", "low_confidence"),
        (0.29, True, "review", "below_llm_band"),
        (0.50, False, "review", "low_confidence_no_llm"),
        (0.95, False, "accept", "confident"),
    ],
)
def test_route_by_confidence(confidence, llm, destination, reason):
    decision = route(annotation(confidence), POLICY, llm_available=llm, draw=0.5)
    assert (decision.destination, decision.reason) == (destination, reason)
    assert decision.review_reason is None


def test_less_confident_items_get_higher_review_priority():
    low = route(annotation(0.1), POLICY, llm_available=False, draw=0.5)
    mid = route(annotation(0.6), POLICY, llm_available=False, draw=0.5)
    assert low.priority > mid.priority


def test_audit_samples_only_accepted_items_at_the_configured_rate():
    policy = RoutingConfig(accept_threshold=0.9, audit_rate=0.1)
    draws = [audit_draw(f"item-{i}") for i in range(20_000)]
    audited = [
        route(annotation(0.99), policy, llm_available=True, draw=d).review_reason == "audit"
        for d in draws
    ]
    assert 0.09 < sum(audited) / len(audited) < 0.11
    unsure = route(annotation(0.5), policy, llm_available=True, draw=0.0)
    assert unsure.destination == "llm" and unsure.review_reason is None


def test_audit_draw_is_stable_and_uniform_enough():
    assert audit_draw("x") == audit_draw("x")
    assert all(0.0 <= audit_draw(str(i)) < 1.0 for i in range(1000))
