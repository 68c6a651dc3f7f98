"""Reading and writing Prodigy-style JSONL: every kind of bad line names its file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spacy.tokens import DocBin

from loopline.processors.data import (
    LabelledText,
    read_examples,
    to_docbin,
    to_spacy_examples,
    tokenizer_pipeline,
    write_examples,
)
from loopline.schemas import DataError, Span, TaskConfig

INTENTS = TaskConfig(
    name="intents",
    kind="textcat",
    labels={"greet": "Says hello.", "bye": "Says goodbye."},
    topics={"prefix": "t."},
)
TOPICS = TaskConfig(
    name="topics",
    kind="textcat_multilabel",
    labels={"sport": "About sport.", "money": "About money."},
    topics={"prefix": "t."},
)
ENTITIES = TaskConfig(
    name="entities",
    kind="ner",
    labels={"person": "A person.", "city": "A city."},
    topics={"prefix": "t."},
)


def write_lines(tmp_path: Path, *lines: str | dict) -> Path:
    path = tmp_path / "data.jsonl"
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def test_reads_textcat_label_and_accept_and_skips_rejected(tmp_path):
    path = write_lines(
        tmp_path,
        {"text": "hello there", "label": "greet"},
        "",
        {"text": "see you", "accept": ["bye"], "answer": "accept"},
        {"text": "hi", "label": "bye", "answer": "reject"},
        {"text": "hm", "label": "bye", "answer": "ignore"},
    )
    examples = read_examples(path, INTENTS)
    assert [(eg.text, eg.labels) for eg in examples] == [
        ("hello there", ["greet"]),
        ("see you", ["bye"]),
    ]
    assert all(eg.source == "human" and eg.weight == 1.0 for eg in examples)


def test_reads_silver_source_and_weight(tmp_path):
    path = write_lines(tmp_path, {"text": "hi", "label": "greet", "_source": "llm", "weight": 0.5})
    (example,) = read_examples(path, INTENTS)
    assert (example.source, example.weight) == ("llm", 0.5)


def test_reads_multilabel_sets_including_empty(tmp_path):
    path = write_lines(
        tmp_path,
        {"text": "match fees", "accept": ["sport", "money", "sport"]},
        {"text": "nothing", "accept": []},
    )
    examples = read_examples(path, TOPICS)
    assert [eg.labels for eg in examples] == [["sport", "money"], []]


def test_reads_ner_spans_sorted(tmp_path):
    text = "Ada went to Paris"
    path = write_lines(
        tmp_path,
        {
            "text": text,
            "spans": [
                {"start": 12, "end": 17, "label": "city"},
                {"start": 0, "end": 3, "label": "person"},
            ],
        },
        {"text": "nobody here", "spans": []},
    )
    first, second = read_examples(path, ENTITIES)
    assert [(s.start, s.end, s.label) for s in first.spans] == [(0, 3, "person"), (12, 17, "city")]
    assert second.spans == []


@pytest.mark.parametrize(
    ("task", "line", "message"),
    [
        (INTENTS, '{"text": "hi", "label": "greet"', "not valid JSON"),
        (INTENTS, '["hi", "greet"]', "expected a JSON object"),
        (INTENTS, {"label": "greet"}, 'missing or empty "text"'),
        (INTENTS, {"text": "   ", "label": "greet"}, 'missing or empty "text"'),
        (INTENTS, {"text": "hi"}, "no label"),
        (INTENTS, {"text": "hi", "label": "wave"}, "unknown label 'wave'"),
        (INTENTS, {"text": "hi", "label": 3}, '"label" must be a label name'),
        (INTENTS, {"text": "hi", "accept": "greet"}, '"accept" must be a list'),
        (INTENTS, {"text": "hi", "accept": ["greet", "bye"]}, "give exactly one"),
        (INTENTS, {"text": "hi", "accept": []}, "give exactly one"),
        (INTENTS, {"text": "hi", "label": "greet", "answer": "maybe"}, '"answer" is'),
        (INTENTS, {"text": "hi", "label": "greet", "_source": "robot"}, '"_source" is'),
        (INTENTS, {"text": "hi", "label": "greet", "weight": 0}, '"weight" is 0'),
        (INTENTS, {"text": "hi", "label": "greet", "weight": "1"}, '"weight" is'),
        (INTENTS, {"text": "hi", "label": "greet", "weight": True}, '"weight" is'),
        (ENTITIES, {"text": "Ada"}, 'no "spans" list'),
        (ENTITIES, {"text": "Ada", "spans": ["Ada"]}, "spans[0] must be an object"),
        (
            ENTITIES,
            {"text": "Ada", "spans": [{"start": 0, "end": "3", "label": "person"}]},
            "integer",
        ),
        (ENTITIES, {"text": "Ada", "spans": [{"start": 0, "end": 3}]}, 'needs a "label"'),
        (
            ENTITIES,
            {"text": "Ada", "spans": [{"start": 0, "end": 3, "label": "dog"}]},
            "unknown label 'dog'",
        ),
        (
            ENTITIES,
            {"text": "Ada", "spans": [{"start": 0, "end": 4, "label": "person"}]},
            "outside the text",
        ),
        (
            ENTITIES,
            {"text": "Ada", "spans": [{"start": 2, "end": 2, "label": "person"}]},
            "outside the text",
        ),
        (
            ENTITIES,
            {"text": "Adams", "spans": [{"start": 0, "end": 3, "label": "person"}]},
            "token boundaries",
        ),
        (
            ENTITIES,
            {
                "text": "Ada Lovelace",
                "spans": [
                    {"start": 0, "end": 12, "label": "person"},
                    {"start": 4, "end": 12, "label": "person"},
                ],
            },
            "overlap",
        ),
    ],
)
def test_bad_lines_name_file_line_and_problem(tmp_path, task, line, message):
    good = {"text": "fine", "label": "greet"} if task is INTENTS else {"text": "x", "spans": []}
    path = write_lines(tmp_path, good, line)
    with pytest.raises(DataError) as error:
        read_examples(path, task)
    assert str(error.value).startswith(f"{path}:2: ")
    assert message in str(error.value)


def test_undecodable_bytes_name_the_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"text": "ok", "label": "greet"}\n{"text": "caf\xe9", "label": "greet"}\n')
    with pytest.raises(DataError, match=r"data.jsonl:2: not valid UTF-8"):
        read_examples(path, INTENTS)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_examples(tmp_path / "nope.jsonl", INTENTS)
    with pytest.raises(DataError, match="is a directory"):
        read_examples(tmp_path, INTENTS)
    path = write_lines(tmp_path, {"text": "hi", "label": "greet", "answer": "reject"})
    with pytest.raises(DataError, match="no usable examples"):
        read_examples(path, INTENTS)


@pytest.mark.parametrize("task", [INTENTS, TOPICS, ENTITIES])
def test_written_examples_read_back_unchanged(tmp_path, task):
    examples = {
        "textcat": [LabelledText(text="hi", labels=["greet"], source="llm", weight=0.25)],
        "textcat_multilabel": [LabelledText(text="none", labels=[])],
        "ner": [
            LabelledText(text="Ada in Paris", spans=[Span(start=7, end=12, label="city")]),
            LabelledText(text="nobody", spans=[]),
        ],
    }[task.kind]
    path = tmp_path / "out.jsonl"
    assert write_examples(path, examples) == len(examples)
    assert read_examples(path, task) == examples


def test_spacy_examples_carry_cats_and_entities():
    nlp = tokenizer_pipeline()
    (textcat,) = to_spacy_examples(nlp, [LabelledText(text="hi", labels=["bye"])], INTENTS)
    assert textcat.reference.cats == {"greet": 0.0, "bye": 1.0}
    entities = [LabelledText(text="Ada in Paris", spans=[Span(start=7, end=12, label="city")])]
    (ner,) = to_spacy_examples(nlp, entities, ENTITIES)
    assert [(e.text, e.label_) for e in ner.reference.ents] == [("Paris", "city")]
    assert [(s.text, s.label_) for s in ner.reference.spans["sc"]] == [("Paris", "city")]


def test_docbin_round_trips_through_spacy(tmp_path):
    entities = [LabelledText(text="Ada in Paris", spans=[Span(start=0, end=3, label="person")])]
    path = tmp_path / "train.spacy"
    to_docbin(entities, ENTITIES).to_disk(path)
    (doc,) = DocBin().from_disk(path).get_docs(tokenizer_pipeline().vocab)
    assert [(e.text, e.label_) for e in doc.ents] == [("Ada", "person")]


def test_windows_line_ends_and_byte_order_mark_are_fine(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"text": "hi", "label": "greet"}\r\n{"text": "bye", "label": "bye"}\r\n'
    )
    assert [eg.labels for eg in read_examples(path, INTENTS)] == [["greet"], ["bye"]]
