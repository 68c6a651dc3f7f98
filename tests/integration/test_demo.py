"""`loopline demo --no-llm` on real Kafka and Redis at small sizes: the trainer makes a first
student from the seed, pass 1 streams through a worker following the registry, the simulated
reviewer answers the review queue through the review service, the trainer promotes a second
student, the worker swaps to it, and pass 2 is answered by the new version."""

from __future__ import annotations

import json

import pytest

from loopline.streams.local.services import free_port

from .streaming import run_cli, service_env

pytestmark = pytest.mark.integration


def test_demo_goes_around_the_loop(kafka_bootstrap, redis_url, tmp_path):
    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    pass_size, answers = 400, 350
    result = run_cli(
        "demo",
        "--no-llm",
        "--pass-size",
        str(pass_size),
        "--answers",
        str(answers),
        "--review-port",
        str(free_port()),
        env=env,
        timeout_s=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "state" / "demo").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    first, second = summary["passes"]

    # The loop happened: the reviewer's answers made a candidate that the gate promoted, and
    # the worker swapped to it between the passes (every pass-2 answer carries its version).
    assert "SIMULATED reviewer" in result.stderr
    assert summary["answered"] == answers
    assert summary["promoted"], summary["verdict"]
    assert summary["candidate"] != summary["first_version"]
    assert first["versions"] == [summary["first_version"]]
    assert second["versions"] == [summary["candidate"]]

    for figures in (first, second):
        assert figures["texts"] == pass_size
        assert sum(figures["routes"].values()) == pass_size
        assert figures["routes"]["llm"] == 0  # no LLM: unsure items go to people
        assert figures["outputs"] == figures["routes"]["accepted"]
    assert second["student_correct"] > first["student_correct"]
    assert "pass 1" in result.stdout and "pass 2" in result.stdout
    assert f"{summary['review_url']}" in result.stderr
    assert (run_dir / "report-banking77.html").stat().st_size > 10_000
