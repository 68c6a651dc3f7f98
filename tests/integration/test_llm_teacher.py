"""The LLM teacher against real llama.cpp servers: SmolLM2 for plumbing, Qwen for quality."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from loopline.processors.data import read_examples
from loopline.processors.llm import LLMAnswer, ResponseCache, make_llm_teacher
from loopline.schemas import load_task
from loopline.streams.cli import app
from tests.fixtures.services import TEST_LLM_MODEL

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[2] / "examples"
TIMEOUT_S = 180.0  # CPU inference on a shared 2-core machine can be slow
QUALITY_ITEMS = 30
QUALITY_FLOOR = 0.6


def gold(task: str, count: int) -> list[dict]:
    lines = (EXAMPLES / task / "test.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:count]]


def answers(base_url: str, model: str, task_dir: str, texts: list[str], **kwargs) -> list:
    teacher = make_llm_teacher(
        task=load_task(EXAMPLES / task_dir),
        base_url=base_url,
        model=model,
        timeout=TIMEOUT_S,
        retries=1,
        **kwargs,
    )

    async def run():
        try:
            return await teacher.answer(texts), teacher.usage
        finally:
            await teacher.aclose()

    return asyncio.run(run())


def test_textcat_answers_parse_with_usage_and_logprob_confidence(llm_server: str) -> None:
    texts = [item["text"] for item in gold("snips", 4)]
    results, usage = answers(llm_server, TEST_LLM_MODEL, "snips", texts)
    labels = set(load_task(EXAMPLES / "snips").labels)
    assert all(isinstance(r, LLMAnswer) for r in results), results
    assert all(r.annotation.labels[0] in labels for r in results)
    assert all(r.confidence_from == "logprobs" for r in results)
    assert all(0.0 < r.annotation.confidence <= 1.0 for r in results)
    assert all(r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0 for r in results)
    assert usage.requests == 4
    assert usage.cached_tokens > 0  # the shared prefix was reused from the server's cache


def test_ner_answers_become_spans_in_the_text(llm_server: str) -> None:
    texts = ["Ann Smith flew from Paris to Berlin on Monday .", "I love my new iPhone from Apple ."]
    results, _ = answers(llm_server, TEST_LLM_MODEL, "wnut17", texts)
    assert all(isinstance(r, LLMAnswer) for r in results), results
    for text, result in zip(texts, results, strict=True):
        spans = result.annotation.spans
        assert all(0 <= s.start < s.end <= len(text) for s in spans)
        assert all(a.end <= b.start for a, b in itertools.pairwise(spans))  # sorted, no overlaps
        assert result.prompt_version == "ner.v1"


def test_a_repeated_text_is_answered_from_the_redis_cache(llm_server: str, redis_url: str) -> None:
    task = f"test-{uuid.uuid4().hex[:8]}"

    async def run():
        redis = Redis.from_url(redis_url)
        teacher = make_llm_teacher(
            task=load_task(EXAMPLES / "snips").model_copy(update={"name": task}),
            base_url=llm_server,
            model=TEST_LLM_MODEL,
            timeout=TIMEOUT_S,
            cache=ResponseCache(redis, task),
        )
        first = await teacher.answer_one("play some jazz")
        second = await teacher.answer_one("play some jazz")
        await teacher.aclose()
        await redis.aclose()
        return first, second, teacher.usage

    first, second, usage = asyncio.run(run())
    assert not first.cached and second.cached
    assert second.annotation == first.annotation and second.usage.total_tokens == 0
    assert usage.requests == 1


def test_annotate_writes_silver_data_the_student_reads(
    llm_server: str, redis_url: str, tmp_path: Path
) -> None:
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": i["text"]}) + "\n" for i in gold("snips", 3)))
    out = tmp_path / "silver.jsonl"
    task = load_task(EXAMPLES / "snips").model_copy(update={"name": f"test-{uuid.uuid4().hex[:8]}"})
    task_file = tmp_path / "task.yml"  # a task name of its own: answers not cached before
    task_file.write_text(json.dumps(task.model_dump(mode="json")), encoding="utf-8")
    env = {
        "LOOPLINE_LLM_BASE_URL": llm_server,
        "LOOPLINE_LLM_MODEL": TEST_LLM_MODEL,
        "LOOPLINE_LLM_TIMEOUT_S": str(TIMEOUT_S),
        "LOOPLINE_REDIS_URL": redis_url,
    }
    command = ["llm", "annotate", str(texts), "--task", str(task_file), "--out", str(out)]
    first = CliRunner().invoke(app, command, env=env)
    assert first.exit_code == 0, first.output
    assert "shared cache in Redis" in " ".join(first.output.split())
    silver = read_examples(out, task)
    assert [e.source for e in silver] == ["llm"] * 3
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(
        r["_model"] == TEST_LLM_MODEL and r["_prompt_version"] == "textcat.v1" for r in records
    )
    again = CliRunner().invoke(app, command, env=env)
    assert again.exit_code == 0 and "3 already in" in " ".join(again.output.split())
    assert len(out.read_text().splitlines()) == 3


def test_qwen_labels_snips_well_enough_to_teach(quality_llm_server: str) -> None:
    """Accuracy of qwen2.5-coder-0.5b, zero-shot, on the first 30 SNIPS test items.

    Measured 0.800 (24/30; 2 cores, 2026-11; the 1.5B scored 0.900). Answers are decoded
    greedily, so the figure is stable; the floor sits well below it so that only a real
    regression (prompt, schema, parsing) fails the test. The logprob confidence must also
    tell right answers from wrong ones (mean 0.78 against 0.42 measured).
    """
    items = gold("snips", QUALITY_ITEMS)
    results, _ = answers(
        quality_llm_server, "qwen2.5-coder-0.5b", "snips", [i["text"] for i in items]
    )
    assert all(isinstance(r, LLMAnswer) for r in results), results
    right = [r.annotation.labels[0] == i["label"] for r, i in zip(results, items, strict=True)]
    accuracy = sum(right) / len(items)
    assert accuracy >= QUALITY_FLOOR, f"accuracy {accuracy:.3f} below the floor {QUALITY_FLOOR}"
    confidence = [r.annotation.confidence for r in results]
    when_right = [c for c, ok in zip(confidence, right, strict=True) if ok]
    when_wrong = [c for c, ok in zip(confidence, right, strict=True) if not ok]
    if when_wrong:
        assert statistics.mean(when_right) > statistics.mean(when_wrong)
