"""Pure parts of the queue and the message keys: order, merging, silver keys apart from gold."""

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from loopline.schemas import Annotation, Correction, RoutedItem, Suggestion, TextIn
from loopline.streams.review.queue import merge_routed, queue_score

ids = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=200)


def test_priority_first_then_age():
    old, new = 1_700_000_000_000, 1_800_000_000_000
    assert queue_score(0.9, new) < queue_score(0.5, old)  # more urgent first
    assert queue_score(0.5, old) < queue_score(0.5, new)  # then older first
    assert queue_score(2.0, old) == queue_score(1.0, old)  # clamped
    assert float(queue_score(0.0, 4_000_000_000_000)) == queue_score(0.0, 4_000_000_000_000)


def _suggestion(source: str, version: str, label: str) -> Suggestion:
    return Suggestion(
        source=source,
        model_version=version,
        annotation=Annotation(labels=[label], confidence=0.5),
    )


def test_routed_twice_is_one_entry_with_every_suggestion():
    item = TextIn(id="7", text="card?")
    student = _suggestion("student", "s1", "a")
    llm = _suggestion("llm", "q", "b")
    first = RoutedItem(
        id="7",
        task="t",
        item=item,
        route="review",
        suggestions=[student],
        reason="low",
        detail="student unsure",
        priority=0.6,
    )
    second = RoutedItem(
        id="7",
        task="t",
        item=item,
        route="review",
        suggestions=[student, llm],
        reason="llm_disagrees",
        detail="they disagree",
        priority=0.2,
    )
    merged = merge_routed([first, second])
    assert [s.source for s in merged.suggestions] == ["student", "llm"]
    assert merged.priority == 0.6
    assert merged.reason == "llm_disagrees"
    assert merged.detail == "student unsure; they disagree"


@given(ids, ids)
def test_a_silver_key_never_equals_a_gold_key(gold_id, silver_id):
    time = datetime(2026, 1, 1, tzinfo=UTC)
    gold = Correction(id=gold_id, task="t", text="x", source="human", reviewer="ana", time=time)
    silver = Correction(id=silver_id, task="t", text="x", source="llm", reviewer="llm:q", time=time)
    assert gold.key == gold_id
    assert silver.key != gold.key
    assert silver.key.startswith(silver_id)


def test_ids_with_control_characters_are_refused():
    with pytest.raises(ValidationError, match="pattern"):
        TextIn(id="a\x1fllm", text="x")
