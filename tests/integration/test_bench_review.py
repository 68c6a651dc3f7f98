"""`loopline bench review` runs end to end on real services and reports what it promises."""

from __future__ import annotations

import json

import pytest

from loopline.streams.local.services import free_port
from tests.integration.streaming import EXAMPLES, run_cli, service_env

pytestmark = pytest.mark.integration


def test_bench_review_small(kafka_bootstrap, redis_url, tmp_path):
    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    out = tmp_path / "bench"
    result = run_cli(
        "bench", "review",
        "--task", str(EXAMPLES / "snips" / "task.yml"),
        "--reviewers", "4",
        "--items", "80",
        "--port", str(free_port()),
        "--out", str(out),
        env=env,
        timeout_s=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((out / "result.json").read_text())
    assert figures["answers"] == 80
    assert figures["double_leases"] == 0 and figures["lost"] == 0
    assert figures["messages_per_answer"] == 3.0  # answer, gold correction, human prediction
    assert figures["answers_per_s"] > 0 and figures["raw_produce_answers_per_s"] > 0
    assert figures["answer_p99_ms"] >= figures["answer_p50_ms"] > 0
    assert (out / "latency.png").stat().st_size > 10_000
    assert "double leases (must be 0)" in result.stdout
