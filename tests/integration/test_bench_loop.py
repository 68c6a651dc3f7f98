"""`loopline bench loop` on real Kafka and Redis at tiny sizes: a trainer, a worker following
the registry and a review service as processes; the scripted reviewer's answers go to the
trainer, which judges a second model."""

from __future__ import annotations

import json

import pytest

from loopline.streams.local.services import free_port

from .streaming import EXAMPLES, run_cli, service_env, write_task

pytestmark = pytest.mark.integration


def test_bench_loop_learns_from_the_scripted_reviewer(
    kafka_bootstrap, redis_url, tmp_path, unique_prefix
):
    task_file = write_task(
        tmp_path,
        unique_prefix,
        "snips",
        routing={"target_accuracy": 0.95},
        student={"architecture": "bow", "epochs": 4},
    )
    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    out = tmp_path / "run"
    result = run_cli(
        "bench",
        "loop",
        "--task",
        str(task_file),
        "--data",
        str(EXAMPLES / "snips" / "train.jsonl"),
        "--test",
        str(EXAMPLES / "snips" / "test.jsonl"),
        "--seed-labels",
        "20",
        "--eval-items",
        "40",
        "--rounds",
        "2",
        "--review-budget",
        "30",
        "--test-n",
        "60",
        "--port",
        str(free_port()),
        "--out",
        str(out),
        env=env,
        timeout_s=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((out / "result.json").read_text())
    first, second = figures["rounds"]
    # The reviewer's answers went to the trainer, which judged a second candidate (the gate
    # decides whether it serves round 2; the worker follows whatever is in production).
    verdicts = [line for line in result.stderr.splitlines() if line.startswith("trainer: ")]
    assert len(verdicts) == 2, result.stderr
    assert first["reviewed"] == 30 and second["reviewed"] == 30
    for round_ in figures["rounds"]:
        shares = round_["stream_accepted"] + round_["stream_llm"] + round_["stream_people"]
        assert shares == pytest.approx(1.0, abs=0.01)
        assert 0.0 < round_["test_accuracy"] <= 1.0
    assert figures["llm_alone_accuracy"] is None  # no LLM configured
    assert 0.5 < figures["all_gold_accuracy"] <= 1.0
    assert (out / "learning-curve.png").stat().st_size > 10_000
