"""A small chaos run: a worker, the broker and Redis each killed (SIGKILL) once while items
stream, on services the benchmark starts for itself; every id must be accounted for."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from loopline.schemas import load_task
from loopline.streams.bench import chaos

from .streaming import EXAMPLES, write_task

pytestmark = pytest.mark.integration


def test_nothing_is_lost_when_a_worker_the_broker_and_redis_are_killed(
    banking_student, tmp_path, unique_prefix
):
    task = load_task(write_task(tmp_path, unique_prefix))
    rows = (EXAMPLES / "banking77" / "test.jsonl").read_text().splitlines()
    texts = [json.loads(row)["text"] for row in rows]
    workdir = tmp_path / "chaos"
    workdir.mkdir()
    result, start_ms, answered_ms = chaos.run_chaos_bench(
        task, banking_student, texts, 2000, workdir, workers=2, times=1, duration_s=30,
        drain_timeout_s=150, seed=7, console=Console(stderr=True),
    )  # fmt: skip
    chaos.plot(result, start_ms, answered_ms, workdir / "chaos.png")

    assert [fault.service for fault in result.faults].count("kafka") == 1
    assert {fault.service for fault in result.faults} == {"worker", "kafka", "redis"}
    assert (result.ids_accounted, result.lost) == (2000, 0), result.unplanned_restarts
    assert result.duplicates_identical, result.differing
    assert all(fault.recovered_s is not None for fault in result.faults)
    assert result.throughput_before > 0 and result.throughput_after > 0
    assert (workdir / "chaos.png").stat().st_size > 0
    chaos.check(result)
