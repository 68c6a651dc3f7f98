"""Prodigy-style JSONL out and in, and the token store (pure parts)."""

import json

import pytest

from loopline.schemas import Annotation, InvalidAnswer, RoutedItem, Span, Suggestion, TextIn
from loopline.streams.review.prodigy import export_record, import_record
from loopline.streams.review.tokens import TokenRecord, TokenStore, token_hash
from tests.fixtures.models import quick_task

BANKING = quick_task("banking77")
NER = quick_task("wnut17")


def routed(annotation: Annotation) -> RoutedItem:
    item = TextIn(id="42", text="I met Ana in Paris", meta={"channel": "chat"})
    suggestion = Suggestion(source="llm", model_version="q", annotation=annotation)
    return RoutedItem(
        id="42", task="t", item=item, route="review", suggestions=[suggestion], reason="llm_unsure"
    )


def test_export_classification_has_options_and_the_suggestion():
    record = export_record(routed(Annotation(labels=["card_arrival"], confidence=0.6)), BANKING)
    assert record["accept"] == ["card_arrival"]
    assert len(record["options"]) == 77
    assert record["meta"]["id"] == "42" and record["meta"]["channel"] == "chat"
    assert record["meta"]["llm"] == "card_arrival (0.60)"


def test_export_then_import_ner_round_trips():
    spans = [Span(start=13, end=18, label="location")]
    record = export_record(routed(Annotation(spans=spans, confidence=0.7)), NER)
    record["answer"] = "accept"
    imported = import_record(json.loads(json.dumps(record)), NER)
    assert imported.item.id == "42"
    assert imported.answer.spans == (Span(start=13, end=18, label="location"),)


def test_import_choices_reject_and_reviewer():
    line = {"text": "where is my card", "accept": ["card_arrival"], "answer": "accept"}
    imported = import_record({**line, "_annotator_id": "ana"}, BANKING)
    assert imported.answer.labels == ("card_arrival",) and imported.reviewer == "ana"
    assert imported.item.id  # derived from the text
    rejected = import_record({**line, "answer": "reject"}, BANKING)
    assert rejected.answer.decision == "reject" and rejected.answer.labels == ()
    single = import_record({"text": "x", "label": "age_limit", "answer": "accept"}, BANKING)
    assert single.answer.labels == ("age_limit",)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([1, 2], "not a JSON object"),
        ({"answer": "accept"}, 'no "text"'),
        ({"text": "x", "answer": "maybe"}, "use accept, reject or ignore"),
        ({"text": "x", "accept": ["nope"], "answer": "accept"}, "unknown label"),
        ({"text": "x", "meta": {"id": "a\x00"}, "answer": "ignore"}, "bad id"),
    ],
)
def test_import_refuses_with_a_reason(record, message):
    with pytest.raises(InvalidAnswer, match=message):
        import_record(record, BANKING)


def test_token_store_follows_adds_replacements_and_tombstones():
    store = TokenStore()

    def record(role: str, token: str) -> bytes:
        return (
            TokenRecord(
                name="ana", role=role, sha256=token_hash(token), created_at="2026-01-01T00:00:00Z"
            )
            .model_dump_json()
            .encode()
        )

    store.apply("ana", record("reviewer", "t1"))
    assert store.lookup("t1").role == "reviewer"
    store.apply("ana", record("admin", "t2"))  # a new token replaces the old one
    assert store.lookup("t1") is None and store.lookup("t2").role == "admin"
    store.apply("ana", None)  # revoked
    assert store.lookup("t2") is None and store.roles() == {}
    store.apply("bob", b"not json")
    assert store.roles() == {}
