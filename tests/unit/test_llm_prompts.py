"""Prompts: versioned, a byte-identical prefix for every item, and a JSON Schema per task kind."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from loopline.processors.llm.prompts import Example, answer_schema, build_prompt
from loopline.schemas import ConfigError, Correction, Span, TaskConfig


def task(kind: str = "textcat") -> TaskConfig:
    return TaskConfig(
        name="demo",
        kind=kind,
        labels={"PlayMusic": "Play a song now.", "GetWeather": "Ask about the weather."},
        topics={"prefix": "t."},
    )


def test_every_item_shares_a_byte_identical_prefix_and_ends_with_its_text() -> None:
    prompt = build_prompt(task(), [Example("play jazz", labels=("PlayMusic",))])
    first, second = prompt.messages("will it rain"), prompt.messages("play some Bach")
    assert json.dumps(first[:-1]) == json.dumps(second[:-1])
    assert first[-1] == {"role": "user", "content": "Text: will it rain"}
    assert prompt.version == "textcat.v1"


def test_labels_descriptions_and_examples_are_in_the_prefix() -> None:
    prompt = build_prompt(task(), [Example("play jazz", labels=("PlayMusic",))])
    system = prompt.prefix[0]["content"]
    assert "- PlayMusic: Play a song now." in system
    assert "- GetWeather: Ask about the weather." in system
    assert prompt.prefix[1:] == (
        {"role": "user", "content": "Text: play jazz"},
        {"role": "assistant", "content": '{"label": "PlayMusic"}'},
    )


def test_the_fingerprint_changes_with_the_examples_not_with_the_item() -> None:
    plain = build_prompt(task())
    shown = build_prompt(task(), [Example("sunny?", labels=("GetWeather",))])
    assert plain.fingerprint == build_prompt(task()).fingerprint
    assert plain.fingerprint != shown.fingerprint


def test_schema_per_kind() -> None:
    labels = ["a", "b"]
    textcat = answer_schema("textcat", labels)
    assert textcat["properties"]["label"] == {"type": "string", "enum": labels}
    assert textcat["required"] == ["label"] and textcat["additionalProperties"] is False
    multi = answer_schema("textcat_multilabel", labels)["properties"]["labels"]
    assert multi["type"] == "array" and multi["items"]["enum"] == labels
    entity = answer_schema("ner", labels)["properties"]["entities"]["items"]
    assert entity["properties"]["label"]["enum"] == labels
    assert entity["required"] == ["text", "label"]


def test_ner_examples_answer_with_their_span_words_in_text_order() -> None:
    example = Example(
        "Ann met Bob in Rome",
        spans=(Span(start=15, end=19, label="GetWeather"), Span(start=0, end=3, label="PlayMusic")),
    )
    prompt = build_prompt(task("ner"), [example])
    assert json.loads(prompt.prefix[2]["content"]) == {
        "entities": [{"text": "Ann", "label": "PlayMusic"}, {"text": "Rome", "label": "GetWeather"}]
    }
    assert prompt.version == "ner.v1"


@pytest.mark.parametrize(
    "example, message",
    [
        (Example("x", labels=("Dance",)), "labels \\['Dance'\\]"),
        (Example("x", labels=()), "needs exactly one"),
        (Example("x", labels=("PlayMusic", "GetWeather")), "needs exactly one"),
    ],
)
def test_bad_examples_are_refused(example: Example, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_prompt(task(), [example])


def test_answers_get_room_for_their_kind_and_ner_for_the_length_of_the_text() -> None:
    assert build_prompt(task()).max_tokens("x" * 5000) == 48
    ner = build_prompt(task("ner"))
    assert ner.max_tokens("x" * 100) == 132
    assert ner.max_tokens("x" * 5000) == 1024


def test_a_human_correction_becomes_an_example() -> None:
    correction = Correction(
        id="1",
        task="demo",
        text="is it sunny",
        labels=["GetWeather"],
        reviewer="ann",
        time=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert Example.from_correction(correction) == Example("is it sunny", ("GetWeather",))
