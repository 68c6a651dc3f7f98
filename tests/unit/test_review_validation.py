"""Answer validation against the task: what is accepted, and the message when not."""

import pytest

from loopline.schemas import InvalidAnswer, Span
from loopline.streams.review.validation import check_answer, token_offsets
from tests.fixtures.models import quick_task

BANKING = quick_task("banking77")
NER = quick_task("wnut17")
MULTI = BANKING.model_copy(update={"kind": "textcat_multilabel"})
TEXT = "I met Ana Lopez in New York yesterday."


def test_textcat_takes_exactly_one_known_label():
    checked = check_answer(BANKING, "card?", "accept", ["card_arrival"])
    assert checked.labels == ("card_arrival",)
    with pytest.raises(InvalidAnswer, match="exactly one label"):
        check_answer(BANKING, "card?", "accept", ["card_arrival", "age_limit"])
    with pytest.raises(InvalidAnswer, match="unknown label 'nope'.*pick one"):
        check_answer(BANKING, "card?", "accept", ["nope"])
    with pytest.raises(InvalidAnswer, match="send labels, not spans"):
        check_answer(
            BANKING, "card?", "accept", ["card_arrival"], [Span(start=0, end=4, label="x")]
        )


def test_multilabel_needs_a_label_and_drops_repeats():
    checked = check_answer(MULTI, "t", "accept", ["age_limit", "card_arrival", "age_limit"])
    assert checked.labels == ("age_limit", "card_arrival")
    with pytest.raises(InvalidAnswer, match="answer reject when none fits"):
        check_answer(MULTI, "t", "accept", [])


def test_reject_and_ignore_carry_nothing():
    assert check_answer(BANKING, "t", "reject").labels == ()
    assert check_answer(NER, TEXT, "ignore").spans == ()
    with pytest.raises(InvalidAnswer, match="reject answer carries no labels"):
        check_answer(BANKING, "t", "reject", ["card_arrival"])


def test_ner_spans_on_tokens_inside_the_text_not_overlapping():
    person = Span(start=6, end=15, label="person", score=0.3)
    place = Span(start=19, end=27, label="location")
    checked = check_answer(NER, TEXT, "accept", spans=[place, person])
    assert [(s.start, s.end, s.score) for s in checked.spans] == [(6, 15, None), (19, 27, None)]
    assert check_answer(NER, TEXT, "accept", spans=[]).spans == ()
    with pytest.raises(InvalidAnswer, match="token boundaries; select whole words"):
        check_answer(NER, TEXT, "accept", spans=[Span(start=7, end=15, label="person")])
    with pytest.raises(InvalidAnswer, match="outside the text"):
        check_answer(NER, TEXT, "accept", spans=[Span(start=30, end=99, label="person")])
    with pytest.raises(InvalidAnswer, match="overlap"):
        check_answer(NER, TEXT, "accept", spans=[person, Span(start=10, end=15, label="person")])
    with pytest.raises(InvalidAnswer, match="unknown label"):
        check_answer(NER, TEXT, "accept", spans=[Span(start=6, end=9, label="city")])
    with pytest.raises(InvalidAnswer, match="send spans, not labels"):
        check_answer(NER, TEXT, "accept", ["person"])


def test_token_offsets_cover_the_words():
    offsets = token_offsets(TEXT)
    assert [TEXT[a:b] for a, b in offsets][:4] == ["I", "met", "Ana", "Lopez"]
    assert offsets[-1] == (len(TEXT) - 1, len(TEXT))  # the full stop
