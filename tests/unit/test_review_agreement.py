"""Majority decisions and agreement figures (percent agreement, Cohen's kappa)."""

import pytest

from loopline.schemas import Annotation, Span, Suggestion
from loopline.streams.review.agreement import (
    answer_key,
    cohen_kappa,
    decide,
    pairwise,
    parse_key,
    percent_agreement,
    suggestion_kept,
)

A = answer_key("accept", ["a"], [])
B = answer_key("accept", ["b"], [])
C = answer_key("accept", ["c"], [])


def test_answer_keys_ignore_order_and_round_trip():
    spans = [Span(start=5, end=9, label="x"), Span(start=0, end=3, label="y")]
    key = answer_key("accept", [], spans)
    assert key == answer_key("accept", [], list(reversed(spans)))
    assert answer_key("accept", ["b", "a"], []) == answer_key("accept", ["a", "b"], [])
    decision, labels, parsed = parse_key(key)
    assert decision == "accept" and labels == []
    assert [(s.start, s.end, s.label) for s in parsed] == [(0, 3, "y"), (5, 9, "x")]


def test_one_answer_decides_without_overlap():
    assert decide([A], 1) == A
    assert decide([], 1) is None


def test_overlap_waits_then_majority_decides():
    assert decide([A], 2) is None
    assert decide([A, A], 2) == A
    assert decide([A, B], 2) is None  # disagreement: one more reviewer
    assert decide([A, B, B], 2) == B
    assert decide([A, B, C], 2) is None
    assert decide([A, B, C, C], 2) is None  # 2 of 4 is no majority
    assert decide([A, B, C, B, C], 2) == B  # 2k+1 answers: most common, earliest on a tie


def test_kappa_textbook_example():
    # 50 items: both yes 20, yes/no 5, no/yes 10, both no 15 -> po 0.7, pe 0.5, kappa 0.4
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)
    assert cohen_kappa([("y", "n"), ("n", "y")]) == pytest.approx(-1.0)
    assert cohen_kappa([("y", "y"), ("y", "y")]) is None  # chance agreement is certain
    assert cohen_kappa([]) is None


def test_pairwise_and_overall_agreement():
    answers = {
        "i1": {"ana": A, "bob": A, "cy": B},
        "i2": {"ana": B, "bob": A},
        "i3": {"ana": A},
    }
    pairs = {(p.a, p.b): p for p in pairwise(answers)}
    assert set(pairs) == {("ana", "bob"), ("ana", "cy"), ("bob", "cy")}
    assert pairs[("ana", "bob")].items == 2
    assert pairs[("ana", "bob")].percent == 0.5
    assert pairs[("ana", "cy")].percent == 0.0
    # i1: 3 pairs, 1 agrees; i2: 1 pair, 0 agree
    assert percent_agreement(answers) == pytest.approx(1 / 4)
    assert percent_agreement({"i3": {"ana": A}}) is None


def test_kept_means_the_preselected_suggestion_was_answered():
    student = Suggestion(
        source="student", model_version="s", annotation=Annotation(labels=["a"], confidence=0.4)
    )
    llm = Suggestion(
        source="llm", model_version="l", annotation=Annotation(labels=["b"], confidence=0.8)
    )
    assert suggestion_kept(B, [student, llm])
    assert not suggestion_kept(A, [student, llm])
    assert not suggestion_kept(answer_key("reject", [], []), [student, llm])
    assert not suggestion_kept(A, [])
