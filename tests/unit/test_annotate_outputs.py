from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from loopline.schemas import Annotation, Prediction, RoutedItem, TaskConfig, TextIn
from loopline.schemas.errors import ModelError
from loopline.streams.agents.annotate import decide, suggestions_of
from loopline.streams.outputs import Output, outputs_for

TASK = TaskConfig(
    name="demo",
    kind="textcat",
    labels={"a": "label a", "b": "label b"},
    topics={"prefix": "t."},
    routing={"accept_threshold": 0.8},
)
ITEM = TextIn(id="i1", text="hello", meta={"src": "test"})


def answer(confidence: float) -> Annotation:
    return Annotation(
        labels=["a"], scores={"a": confidence, "b": 1 - confidence}, confidence=confidence
    )


def test_confident_item_becomes_one_prediction_with_meta():
    result = answer(0.95)
    decision = decide(result, ITEM, TASK.routing, llm_available=True)
    [out] = outputs_for(ITEM, suggestions_of(result, "v1", TASK), decision, TASK)
    assert out.role == "predictions" and out.key == "i1"
    assert isinstance(out.message, Prediction)
    assert out.message.labels == ["a"] and out.message.revision == 0
    assert out.message.source == "student" and out.message.model_version == "v1"
    assert out.message.meta == {"src": "test"}


def test_unsure_item_goes_to_llm_with_student_suggestion():
    result = answer(0.6)
    decision = decide(result, ITEM, TASK.routing, llm_available=True)
    [out] = outputs_for(ITEM, suggestions_of(result, "v1", TASK), decision, TASK)
    assert out.role == "llm"
    assert isinstance(out.message, RoutedItem)
    assert out.message.reason == "low_confidence"
    assert out.message.suggestions[0].annotation == result
    assert out.message.item == ITEM


def test_unsure_item_without_llm_goes_to_review():
    decision = decide(answer(0.6), ITEM, TASK.routing, llm_available=False)
    [out] = outputs_for(ITEM, suggestions_of(answer(0.6), "v1", TASK), decision, TASK)
    assert out.role == "review"


def test_audited_item_is_predicted_and_reviewed():
    task = TASK.model_copy(update={"routing": TASK.routing.model_copy(update={"audit_rate": 1.0})})
    decision = decide(answer(0.99), ITEM, task.routing, llm_available=True)
    roles = [
        out.role
        for out in outputs_for(ITEM, suggestions_of(answer(0.99), "v1", task), decision, task)
    ]
    assert roles == ["predictions", "review"]
    assert decision.review_reason == "audit"


def test_processor_error_sends_item_to_review_without_suggestion():
    error = ModelError("student failed")
    decision = decide(error, ITEM, TASK.routing, llm_available=True)
    [out] = outputs_for(ITEM, suggestions_of(error, "v1", TASK), decision, TASK)
    assert out.role == "review" and out.message.suggestions == []
    assert out.message.reason == "student_error"


def test_outputs_carry_only_the_top_scores():
    scores = {f"l{i}": (i + 1) / 100 for i in range(10)}
    result = Annotation(labels=["l9"], scores=scores, confidence=0.95)
    task = TASK.model_copy(update={"scores_top_k": 3})
    decision = decide(result, ITEM, task.routing, llm_available=True)
    [out] = outputs_for(ITEM, suggestions_of(result, "v1", task), decision, task)
    assert list(out.message.scores) == ["l9", "l8", "l7"]
    assert out.message.confidence == 0.95


@given(
    item_id=st.from_regex(r"[\w.:-]{1,64}", fullmatch=True),
    text=st.text(min_size=1, max_size=2000),
    limit=st.integers(min_value=0, max_value=9000),
)
def test_the_quick_size_check_agrees_with_the_exact_record_size(item_id, text, limit):
    out = Output("predictions", item_id, TextIn(id=item_id, text=text))
    assert out.fits(limit) == (out.record_bytes <= limit)
