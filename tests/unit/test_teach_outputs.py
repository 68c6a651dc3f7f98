from __future__ import annotations

from datetime import UTC, datetime

import pytest

from loopline.processors.llm.client import Usage
from loopline.processors.llm.teacher import LLMAnswer
from loopline.processors.routing import after_llm, same_answer
from loopline.schemas import (
    Annotation,
    Correction,
    InputError,
    LLMUnavailable,
    Prediction,
    RoutedItem,
    Span,
    Suggestion,
    TaskConfig,
    TextIn,
)
from loopline.streams.agents.teach import decode_request, teach_outputs
from loopline.streams.codec import encode

TASK = TaskConfig(
    name="demo",
    kind="textcat",
    labels={"a": "label a", "b": "label b"},
    topics={"prefix": "t."},
    llm={"min_confidence": 0.6},
)
AT = datetime(2026, 11, 28, tzinfo=UTC)


def annotation(label: str, confidence: float) -> Annotation:
    return Annotation(labels=[label], scores={label: confidence}, confidence=confidence)


def request(student_label: str = "a") -> RoutedItem:
    student = Suggestion(
        source="student", model_version="s1", annotation=annotation(student_label, 0.5)
    )
    return RoutedItem(
        id="i1",
        task="demo",
        item=TextIn(id="i1", text="hello", meta={"k": 1}),
        route="llm",
        suggestions=[student],
        reason="low_confidence",
        detail="",
        priority=0.5,
    )


def llm_answer(label: str, confidence: float) -> LLMAnswer:
    return LLMAnswer(
        annotation=annotation(label, confidence),
        model="qwen",
        prompt_version="textcat.v1",
        confidence_from="logprobs",
        raw="{}",
        usage=Usage(),
    )


def test_agreeing_confident_llm_answer_is_published_as_revision_one():
    outputs, decision = teach_outputs(request("a"), llm_answer("a", 0.9), TASK, AT)
    roles = [out.role for out in outputs]
    assert roles == ["corrections", "predictions"]
    prediction = outputs[1].message
    assert isinstance(prediction, Prediction)
    assert (prediction.source, prediction.revision, prediction.labels) == ("llm", 1, ["a"])
    assert prediction.model_version == "qwen/textcat.v1" and prediction.meta == {"k": 1}
    assert decision.review_reason is None


def test_disagreement_is_published_and_sent_to_review_with_both_suggestions():
    outputs, decision = teach_outputs(request("a"), llm_answer("b", 0.95), TASK, AT)
    assert [out.role for out in outputs] == ["corrections", "predictions", "review"]
    review = outputs[2].message
    assert review.reason == "llm_disagrees" and review.route == "review"
    assert [s.source for s in review.suggestions] == ["student", "llm"]
    assert review.suggestions[1].prompt_version == "textcat.v1"


def test_unsure_llm_answer_goes_to_review_too():
    outputs, decision = teach_outputs(request("a"), llm_answer("a", 0.3), TASK, AT)
    assert [out.role for out in outputs] == ["corrections", "predictions", "review"]
    assert outputs[2].message.reason == "llm_unsure"


def test_failed_llm_sends_item_to_review_with_the_reason_and_nothing_else():
    error = LLMUnavailable("connection refused after 3 retries")
    outputs, decision = teach_outputs(request("a"), error, TASK, AT)
    [review] = outputs
    assert review.role == "review"
    assert review.message.reason == "llm_unavailable"
    assert "connection refused" in review.message.detail
    assert [s.source for s in review.message.suggestions] == ["student"]


def test_llm_answer_is_kept_as_a_silver_correction_with_a_stable_time():
    outputs, _ = teach_outputs(request("a"), llm_answer("b", 0.9), TASK, AT)
    silver = outputs[0].message
    assert isinstance(silver, Correction)
    assert (silver.source, silver.labels, silver.text, silver.time) == ("llm", ["b"], "hello", AT)
    again, _ = teach_outputs(request("a"), llm_answer("b", 0.9), TASK, AT)
    assert encode(again[0].message) == encode(silver)


def test_same_answer_compares_label_sets_and_spans():
    assert same_answer(
        Annotation(labels=["a", "b"], confidence=1), Annotation(labels=["b", "a"], confidence=0)
    )
    one = Annotation(spans=[Span(start=0, end=3, label="x")], confidence=1)
    other = Annotation(spans=[Span(start=0, end=4, label="x")], confidence=1)
    assert same_answer(one, one) and not same_answer(one, other)


def test_after_llm_without_student_suggestion_trusts_a_confident_llm():
    decision = after_llm(None, annotation("a", 0.9), min_confidence=0.6)
    assert decision.destination == "accept" and decision.review_reason is None


def test_bad_request_bytes_are_an_input_error():
    with pytest.raises(InputError, match="RoutedItem"):
        decode_request(b'{"id": 1}')
