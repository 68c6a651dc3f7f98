"""`loopline llm annotate`: silver JSONL the student can read, resumable, failures reported."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopline.processors.data import read_examples
from loopline.processors.llm.client import Usage
from loopline.processors.llm.teacher import LLMAnswer
from loopline.schemas import Annotation, DataError, Span, TaskConfig
from loopline.streams.cli import app
from loopline.streams.cli.llm import (
    TextItem,
    answered_ids,
    on_token_boundaries,
    read_texts,
    silver_record,
)
from tests.fixtures.llm import FakeLLM, Reply, chat_reply, last_user_text

LABELS = {"PlayMusic": "Play a song now.", "GetWeather": "Ask about the weather."}


def task(kind: str = "textcat") -> TaskConfig:
    labels = {"person": "People.", "location": "Places."} if kind == "ner" else LABELS
    return TaskConfig(name="demo", kind=kind, labels=labels, topics={"prefix": "t."})


def write_task(path: Path, kind: str = "textcat") -> Path:
    path.write_text(json.dumps(task(kind).model_dump(mode="json")), encoding="utf-8")
    return path


def answer(annotation: Annotation) -> LLMAnswer:
    return LLMAnswer(
        annotation=annotation,
        model="m",
        prompt_version="textcat.v1",
        usage=Usage(),
        confidence_from="logprobs",
        raw="{}",
    )


def test_texts_are_read_with_ids_and_bad_lines_named(tmp_path: Path) -> None:
    good = tmp_path / "in.jsonl"
    good.write_text('{"text": "a", "label": "x"}\n\n{"id": 7, "text": "b"}\n{"text": "a"}\n')
    items = read_texts(good)
    assert [(i.id, i.text) for i in items][1] == ("7", "b")
    assert len(items) == 2  # the repeated text has the same derived id
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"txt": "b"}\n')
    with pytest.raises(DataError, match='bad.jsonl:2: missing or empty "text"'):
        read_texts(bad)


def test_silver_lines_are_read_back_as_llm_examples(tmp_path: Path) -> None:
    item = TextItem(id="1", text="Ann flew to Rome", meta={"k": 1})
    records = [
        silver_record(item, task(), answer(Annotation(labels=["GetWeather"], confidence=0.7))),
        silver_record(
            item,
            task("ner"),
            answer(
                Annotation(spans=[Span(start=0, end=3, label="person", score=0.9)], confidence=1)
            ),
        ),
    ]
    assert records[0]["_source"] == "llm" and records[0]["_confidence"] == 0.7
    assert records[0]["_model"] == "m" and records[0]["_prompt_version"] == "textcat.v1"
    for record, kind in zip(records, ["textcat", "ner"], strict=True):
        path = tmp_path / f"{kind}.jsonl"
        path.write_text(json.dumps(record) + "\n")
        (example,) = read_examples(path, task(kind))
        assert example.source == "llm"
    assert example.spans == [Span(start=0, end=3, label="person")]


def test_spans_off_token_boundaries_are_left_out() -> None:
    spans = [Span(start=0, end=3, label="person"), Span(start=4, end=6, label="person")]
    kept, off = on_token_boundaries("Ann flew", spans)
    assert kept == spans[:1] and off == 1


def test_answered_ids_ignore_a_half_written_last_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a", "text": "x"}\n{"id": "b", "te')
    assert answered_ids(out) == {"a"}
    assert answered_ids(tmp_path / "none.jsonl") == set()


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_annotate_writes_silver_reports_failures_and_resumes(
    tmp_path: Path, fake_llm: FakeLLM
) -> None:
    def respond(payload: dict) -> Reply:
        text = last_user_text(payload)
        if text == "boom":
            return Reply(500, "exploded")
        return chat_reply(json.dumps({"label": "GetWeather" if "rain" in text else "PlayMusic"}))

    fake_llm.responder = respond
    texts = tmp_path / "texts.jsonl"
    texts.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in ["rain today?", "play jazz", "boom"])
    )
    out = tmp_path / "silver.jsonl"
    env = {
        "LOOPLINE_LLM_BASE_URL": fake_llm.base_url,
        "LOOPLINE_LLM_MODEL": "fake-model",
        "LOOPLINE_LLM_RETRIES": "0",
        "LOOPLINE_REDIS_URL": f"redis://127.0.0.1:{unused_port()}/0",
    }
    task_file = write_task(tmp_path / "t.yml")
    command = ["llm", "annotate", str(texts), "--task", str(task_file), "--out", str(out)]
    result = CliRunner().invoke(app, command, env=env)
    assert result.exit_code == 1, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "without the shared cache" in output
    assert "1 failed (llm_unavailable: 1)" in output
    labels = {r["text"]: r["label"] for r in map(json.loads, out.read_text().splitlines())}
    assert labels == {"rain today?": "GetWeather", "play jazz": "PlayMusic"}
    (failure,) = map(json.loads, (tmp_path / "silver.failed.jsonl").read_text().splitlines())
    assert failure["text"] == "boom" and "exploded" in failure["reason"]

    fake_llm.requests.clear()
    fake_llm.responder = lambda payload: chat_reply('{"label": "PlayMusic"}')
    result = CliRunner().invoke(app, command, env=env)
    assert result.exit_code == 0, result.output
    assert "2 already in" in " ".join(result.output.split())
    assert [last_user_text(p) for p in fake_llm.requests] == ["boom"]
    assert len(out.read_text().splitlines()) == 3
    assert (tmp_path / "silver.failed.jsonl").read_text() == ""
