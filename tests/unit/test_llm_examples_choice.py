from __future__ import annotations

from datetime import UTC, datetime, timedelta

from loopline.processors.llm.examples import pick_examples
from loopline.schemas import Correction, Span

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def correction(i: int, label: str, **fields) -> Correction:
    values = dict(
        id=f"c{i}",
        task="t",
        text=f"text {i}",
        labels=[label],
        reviewer="ana",
        time=T0 + timedelta(minutes=i),
    )
    values.update(fields)
    return Correction(**values)


def test_labels_take_turns_and_the_oldest_comes_first():
    corrections = [correction(i, "a") for i in range(3)] + [correction(10, "b")]
    picked = pick_examples(corrections, limit=3)
    assert [e.text for e in picked] == ["text 0", "text 10", "text 1"]


def test_silver_rejected_and_superseded_corrections_are_not_shown():
    corrections = [
        correction(1, "a", source="llm", reviewer="llm:q"),
        correction(2, "a", decision="reject"),
        correction(3, "a"),
        correction(3, "b", time=T0 + timedelta(hours=1)),  # a later correction of the same id
    ]
    picked = pick_examples(corrections, limit=5)
    assert [(e.text, e.labels) for e in picked] == [("text 3", ("b",))]


def test_entities_are_kept_and_the_choice_is_stable():
    span = Span(start=0, end=4, label="person")
    corrections = [correction(i, "x", labels=[], spans=[span]) for i in range(4)]
    first = pick_examples(corrections, limit=2)
    assert first == pick_examples(list(reversed(corrections)), limit=2)
    assert first[0].spans == (span,)
    assert pick_examples(corrections, limit=0) == []


def test_a_later_silver_answer_does_not_hide_the_gold_one():
    gold = correction(4, "a")
    silver = correction(4, "b", source="llm", reviewer="llm:q", time=T0 + timedelta(hours=1))
    picked = pick_examples([gold, silver], limit=5)
    assert [(e.text, e.labels) for e in picked] == [("text 4", ("a",))]
