"""Redis stopped and restarted under a running worker: it keeps answering, the LLM spends
nothing it cannot check against the budget, and the counts are exact once Redis is back.

The Redis here is this test's own (the local launcher), so that it can be stopped; the LLM is
the scripted loopback server, so that the test knows how many requests reached it.
"""

from __future__ import annotations

import json
import time

import pytest

from loopline.schemas import load_task
from loopline.streams.agents.annotate import group_id
from loopline.streams.local import services
from loopline.streams.local.services import free_port
from loopline.streams.settings import Settings
from loopline.streams.topics import wait_for_assignment
from tests.fixtures.llm import chat_reply

from .streaming import (
    good_values,
    kafka_at,
    outputs_by_id,
    produce_raw,
    read_topic,
    service_env,
    start_worker,
    stop,
    texts,
    wait_for_outcomes,
    write_task,
)
from .test_teach_stream import wait_for_teach

pytestmark = pytest.mark.integration

ROUTING = {"accept_threshold": 0.995}  # most SNIPS items go to the LLM


def batch(name: str, n: int) -> list[dict]:
    return [{**row, "id": f"{name}-{i}"} for i, row in enumerate(texts(n, example="snips"))]


def wait_for_answers(bootstrap, task, ids: set[str], worker, timeout_s: float) -> dict:
    """Until every id has a prediction or a review item; the worker must stay up."""
    deadline = time.monotonic() + timeout_s
    while True:
        by_id = outputs_by_id(bootstrap, task, ("predictions", "review"))
        if ids <= set(by_id):
            return by_id
        assert worker.poll() is None, f"worker exited with {worker.returncode}"
        assert time.monotonic() < deadline, f"{len(ids - set(by_id))} items have no answer"


def sources(by_id: dict, ids: set[str]) -> list[tuple[str, str]]:
    """(source of the prediction or reason of the review item) for every output of `ids`."""
    return [
        (role, data.get("source") or data.get("reason"))
        for item_id in ids
        for role, value in by_id[item_id]
        if (data := json.loads(value))
    ]


def test_a_worker_rides_out_a_redis_outage(
    kafka_bootstrap, snips_student, fake_llm, tmp_path, unique_prefix, monkeypatch
):
    fake_llm.responder = lambda payload: chat_reply('{"label": "PlayMusic"}')
    monkeypatch.delenv("LOOPLINE_REDIS_URL", raising=False)  # a Redis of its own, not that one
    redis_settings = Settings(state_dir=tmp_path / "own-redis")
    port = free_port()
    redis_url = services.ensure_redis(redis_settings, port)
    task_file = write_task(
        tmp_path, unique_prefix, "snips", llm={"min_confidence": 0.0}, routing=ROUTING
    )
    task = load_task(task_file)
    env = service_env(
        kafka_bootstrap,
        redis_url,
        tmp_path,
        LOOPLINE_LLM_BASE_URL=fake_llm.base_url,
        LOOPLINE_LLM_MODEL="fake-model",
        LOOPLINE_LLM_DAILY_TOKEN_BUDGET="1000000000",
    )
    before, during, after = batch("before", 100), batch("during", 200), batch("after", 100)
    worker = start_worker(task_file, snips_student, env, tmp_path / "worker.log")
    try:
        wait_for_assignment(kafka_at(kafka_bootstrap), group_id(task), task.topic("texts"))
        produce_raw(kafka_bootstrap, task, good_values(before))
        wait_for_outcomes(redis_url, task, len(before), 120, [worker])
        wait_for_teach(redis_url, task, 120, [worker])
        asked_before_outage = len(fake_llm.requests)

        services.down(redis_settings, ("redis",))
        produce_raw(kafka_bootstrap, task, good_values(during))
        by_id = wait_for_answers(kafka_bootstrap, task, {row["id"] for row in during}, worker, 90)
        asked_during_outage = len(fake_llm.requests) - asked_before_outage

        services.ensure_redis(redis_settings, port)
        produce_raw(kafka_bootstrap, task, good_values(after))
        total = len(before) + len(during) + len(after)
        annotated = wait_for_outcomes(redis_url, task, total, 120, [worker])
        taught = wait_for_teach(redis_url, task, 120, [worker])
    finally:
        stop(worker)
        services.down(redis_settings, ("redis",))
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]

    # While Redis was down: every item answered, none by an LLM call the budget did not see.
    assert asked_before_outage > 0 and asked_during_outage == 0
    during_outputs = sources(by_id, {row["id"] for row in during})
    assert ("review", "llm_limits_unavailable") in during_outputs
    assert ("predictions", "llm") not in during_outputs

    # Once it was back, without a restart: the LLM path resumed and the counts are exact.
    by_id = outputs_by_id(kafka_bootstrap, task, ("predictions", "review"))
    all_ids = {row["id"] for row in before + during + after}
    assert set(by_id) == all_ids
    assert ("predictions", "llm") in sources(by_id, {row["id"] for row in after})
    assert sum(annotated.get(k, 0) for k in ("prediction", "llm", "review")) == total
    routed = list(
        read_topic(
            kafka_at(kafka_bootstrap),
            task.topic("llm"),
            from_beginning=True,
            max_messages=None,
            timeout_s=3,
        )
    )
    assert annotated["llm"] == len(routed)
    assert sum(taught.get(k, 0) for k in ("prediction", "review", "deadletter")) == len(routed)
    all_outputs = sources(by_id, all_ids)
    assert taught.get("prediction", 0) == all_outputs.count(("predictions", "llm"))
    assert taught.get("review", 0) == all_outputs.count(("review", "llm_limits_unavailable"))
