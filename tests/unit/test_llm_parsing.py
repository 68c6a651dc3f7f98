"""The tolerant answer parser: JSON found in fences and prose, garbage refused with an excerpt."""

from __future__ import annotations

import pytest

from loopline.processors.llm.parsing import Mention, extract_json, match_label, parse_answer
from loopline.schemas import LLMBadAnswer

LABELS = ["PlayMusic", "GetWeather", "BookRestaurant"]


@pytest.mark.parametrize(
    "raw",
    [
        '{"label": "GetWeather"}',
        '```json\n{"label": "GetWeather"}\n```',
        '```\n{"label": "GetWeather"}\n```',
        'Sure! Here is the answer: {"label": "GetWeather"} Hope this helps.',
        "{'label': 'GetWeather'}",
        '{"label": "GetWeather",}',
        '  \n{"label": "GetWeather"}\n\n',
    ],
)
def test_json_is_found_in_fences_prose_and_python_quotes(raw: str) -> None:
    assert extract_json(raw) == {"label": "GetWeather"}


def test_brackets_inside_strings_do_not_end_the_object() -> None:
    raw = 'Answer: {"entities": [{"text": "a } b ]", "label": "x"}]} and more {'
    assert extract_json(raw) == {"entities": [{"text": "a } b ]", "label": "x"}]}


@pytest.mark.parametrize("raw", ["", "   ", "I cannot help with that.", "{label: GetWeather"])
def test_garbage_raises_bad_answer_with_an_excerpt(raw: str) -> None:
    with pytest.raises(LLMBadAnswer) as error:
        extract_json(raw)
    assert error.value.code == "llm_bad_answer"
    assert raw.strip()[:20] in str(error.value)


def test_textcat_reads_the_label_and_forgives_case_and_spacing() -> None:
    assert parse_answer("textcat", LABELS, '{"label": "get weather"}').labels == ("GetWeather",)
    assert parse_answer("textcat", LABELS, '{"labels": ["PlayMusic"]}').labels == ("PlayMusic",)
    assert parse_answer("textcat", LABELS, "BookRestaurant").labels == ("BookRestaurant",)


def test_textcat_label_off_the_schema_is_a_bad_answer() -> None:
    with pytest.raises(LLMBadAnswer, match="'Weather' is not one of the task's labels"):
        parse_answer("textcat", LABELS, '{"label": "Weather"}')


def test_multilabel_reads_a_list_dedupes_and_refuses_unknown_labels() -> None:
    answer = parse_answer("textcat_multilabel", LABELS, '{"labels": ["PlayMusic", "playmusic"]}')
    assert answer.labels == ("PlayMusic",)
    assert parse_answer("textcat_multilabel", LABELS, '{"labels": []}').labels == ()
    with pytest.raises(LLMBadAnswer, match="'Dance'"):
        parse_answer("textcat_multilabel", LABELS, '{"labels": ["PlayMusic", "Dance"]}')
    with pytest.raises(LLMBadAnswer, match="no list of labels"):
        parse_answer("textcat_multilabel", LABELS, '{"labels": 3}')


def test_ner_keeps_good_entities_and_counts_the_rejected() -> None:
    raw = (
        '{"entities": [{"text": "Paris", "label": "location"}, {"text": "Bob", "label": "alien"},'
        ' {"text": "", "label": "person"}, "junk", {"text": "Ann", "label": "PERSON"}]}'
    )
    answer = parse_answer("ner", ["person", "location"], raw)
    assert answer.mentions == (Mention("Paris", "location"), Mention("Ann", "person"))
    assert answer.rejected == 3


def test_ner_without_a_list_is_a_bad_answer() -> None:
    with pytest.raises(LLMBadAnswer, match="no list of entities"):
        parse_answer("ner", ["person"], '{"entities": "none"}')


def test_match_label_refuses_ambiguous_and_non_string_values() -> None:
    assert match_label("a-b", ["a_b", "A B"]) is None
    assert match_label(3, ["3"]) is None
    assert match_label("A_B", ["a b", "c"]) == "a b"
