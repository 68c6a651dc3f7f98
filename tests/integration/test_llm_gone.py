"""An LLM server killed (SIGKILL) or stopped (SIGTERM, as `loopline infra down` does) while
unsure items wait for it: they reach review within seconds, not after the request timeout,
and the teach agent goes on."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from loopline.schemas import load_task
from loopline.streams.local import services
from loopline.streams.local.services import free_port
from loopline.streams.settings import Settings
from tests.fixtures.services import TEST_LLM_MODEL

from .streaming import (
    counts,
    good_values,
    outputs_by_id,
    produce_raw,
    service_env,
    start_worker,
    stop,
    texts,
    wait_for_outcomes,
    write_task,
)
from .test_teach_stream import wait_for_teach

pytestmark = pytest.mark.integration

TIMEOUT_S = 120  # the default LOOPLINE_LLM_TIMEOUT_S: a dead server must not cost it
ROUTING = {"accept_threshold": 1.0}  # every item goes to the LLM
TAUGHT = ("prediction", "review", "deadletter")  # the rest are tags


def taught(redis_url, task) -> int:
    teach = counts(redis_url, task, "teach")
    return sum(teach.get(k, 0) for k in TAUGHT)


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_items_waiting_for_a_stopped_llm_reach_review_within_seconds(
    stop_signal,
    kafka_bootstrap,
    redis_url,
    llm_server,
    snips_student,
    tmp_path,
    unique_prefix,
    monkeypatch,
):
    # A server of this test's own, so that it can be killed (the fixture's one warmed the weights).
    monkeypatch.delenv("LOOPLINE_LLM_BASE_URL", raising=False)
    llm_settings = Settings(state_dir=tmp_path / "llm-state")
    base_url = services.ensure_llm(llm_settings, TEST_LLM_MODEL, free_port())
    pid = json.loads((llm_settings.state_dir / "llm" / "service.json").read_text())["pid"]
    task_file = write_task(
        tmp_path, unique_prefix, "snips", llm={"min_confidence": 0.0}, routing=ROUTING
    )
    task = load_task(task_file)
    rows = texts(60, example="snips")
    env = service_env(
        kafka_bootstrap,
        redis_url,
        tmp_path,
        LOOPLINE_LLM_BASE_URL=base_url,
        LOOPLINE_LLM_MODEL=TEST_LLM_MODEL,
        LOOPLINE_LLM_TIMEOUT_S=str(TIMEOUT_S),
    )
    produce_raw(kafka_bootstrap, task, good_values(rows))
    worker = start_worker(task_file, snips_student, env, tmp_path / "worker.log")
    try:
        annotated = wait_for_outcomes(redis_url, task, len(rows), 120, [worker])
        deadline = time.monotonic() + 180
        while taught(redis_url, task) == 0:
            assert worker.poll() is None and time.monotonic() < deadline, "the LLM never answered"
            time.sleep(0.05)
        waiting = annotated["llm"] - taught(redis_url, task)
        os.kill(pid, stop_signal)
        killed_at = time.monotonic()
        outcomes = wait_for_teach(redis_url, task, TIMEOUT_S * 3, [worker])
        seconds = time.monotonic() - killed_at
    finally:
        stop(worker)
        services.down(llm_settings, ("llm",))

    by_id = outputs_by_id(kafka_bootstrap, task, ("predictions", "review"))
    assert set(by_id) == {row["id"] for row in rows}
    reasons = [
        json.loads(value)["reason"]
        for outputs in by_id.values()
        for role, value in outputs
        if role == "review"
    ]
    # `waiting` is an upper bound: the ledger lags the outputs by a batch.
    unavailable = reasons.count("llm_unavailable")
    print(f"{unavailable} items reached review {seconds:.1f} s after {stop_signal.name}")
    assert unavailable >= 20 and waiting >= unavailable, "the LLM was killed too late"
    assert seconds < 20, f"{unavailable} items took {seconds:.0f} s to reach review"
    assert outcomes.get("review", 0) == unavailable
