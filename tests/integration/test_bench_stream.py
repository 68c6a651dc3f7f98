"""`loopline bench stream` as a user runs it: a small backlog through the plain pipe and
two real workers."""

from __future__ import annotations

import json

import pytest

from .streaming import EXAMPLES, run_cli, service_env

pytestmark = pytest.mark.integration


def bench(*args: str, env: dict):
    return run_cli("bench", "stream", *args, env=env, timeout_s=600)


def test_bench_stream_measures_workers_against_the_student(
    kafka_bootstrap, redis_url, banking_student, tmp_path
):
    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    task, out = str(EXAMPLES / "banking77"), tmp_path / "bench"
    run = bench(
        "--task",
        task,
        "--model",
        str(banking_student),
        "--n",
        "600",
        "--latency-seconds",
        "2",
        "--workers",
        "2",
        "--out",
        str(out),
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert (result["n"], result["workers"]) == (600, 2)
    rates = ("in_process_items_per_s", "plain_pipe_items_per_s", "end_to_end_items_per_s")
    assert all(result[rate] > 0 for rate in rates)
    assert result["ratio"] == pytest.approx(
        result["end_to_end_items_per_s"] / result["in_process_items_per_s"]
    )
    assert result["ratio_to_plain_pipe"] == pytest.approx(
        result["end_to_end_items_per_s"] / result["plain_pipe_items_per_s"]
    )
    assert result["latency_n"] >= 100
    assert 0 < result["latency_p50_ms"] <= result["latency_p99_ms"]
    assert (out / "latency.png").stat().st_size > 0
    assert "ratio end-to-end / in-process" in run.stdout
    assert "ratio end-to-end / plain pipe" in run.stdout


def test_more_workers_than_partitions_is_refused(kafka_bootstrap, redis_url, tmp_path):
    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    task = str(EXAMPLES / "banking77")
    run = bench("--task", task, "--model", str(tmp_path), "--workers", "9", env=env)
    assert run.returncode != 0
    assert "--workers must be between 1 and the task's topics.partitions (4)" in run.stderr
