"""The teach agent on a real Kafka, Redis and llama.cpp server, including the server dying."""

from __future__ import annotations

import json
import time

import pytest

from loopline.schemas import Correction, Prediction, RoutedItem, load_task
from loopline.streams.local import services
from loopline.streams.local.services import free_port
from loopline.streams.settings import Settings
from tests.fixtures.services import TEST_LLM_MODEL

from .streaming import (
    counts,
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

pytestmark = pytest.mark.integration

LLM_ENV = {"LOOPLINE_LLM_MODEL": TEST_LLM_MODEL, "LOOPLINE_LLM_RETRIES": "1"}
# SNIPS has 7 intents, so a tiny LLM answers in well under a second; a near-certain
# threshold sends most items to it.
ROUTING = {"accept_threshold": 0.995}


def routed_to_llm(redis_url, task) -> int:
    return counts(redis_url, task).get("llm", 0)


def wait_for_teach(redis_url, task, timeout_s, workers) -> dict[str, int]:
    """Until the teach stage has an outcome for every item the annotate stage sent it."""
    deadline = time.monotonic() + timeout_s
    while True:
        taught = counts(redis_url, task, "teach")
        done = sum(taught.get(k, 0) for k in ("prediction", "review", "deadletter"))
        if done >= routed_to_llm(redis_url, task):
            return taught
        for proc in workers:
            assert proc.poll() is None, f"worker exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"teach stage stuck at {taught}"
        time.sleep(0.5)


def test_unsure_items_get_llm_predictions_and_silver_examples(
    kafka_bootstrap, redis_url, llm_server, snips_student, tmp_path, unique_prefix
):
    task_file = write_task(
        tmp_path, unique_prefix, "snips", llm={"min_confidence": 0.0}, routing=ROUTING
    )
    task = load_task(task_file)
    rows = texts(40, example="snips")
    produce_raw(kafka_bootstrap, task, good_values(rows))
    env = service_env(
        kafka_bootstrap, redis_url, tmp_path, LOOPLINE_LLM_BASE_URL=llm_server, **LLM_ENV
    )
    worker = start_worker(task_file, snips_student, env, tmp_path / "worker.log")
    try:
        annotated = wait_for_outcomes(redis_url, task, len(rows), 120, [worker])
        taught = wait_for_teach(redis_url, task, 300, [worker])
    finally:
        stop(worker)
    assert annotated.get("llm", 0) > 0, f"no item was unsure: {annotated}"
    assert taught.get("prediction", 0) > 0, f"the LLM answered nothing: {taught}"

    by_id = outputs_by_id(kafka_bootstrap, task, ("predictions", "review"))
    assert set(by_id) == {row["id"] for row in rows}, "an item has neither prediction nor review"
    llm_predictions = [
        Prediction.model_validate_json(value)
        for outputs in by_id.values()
        for role, value in outputs
        if role == "predictions"
        if json.loads(value)["source"] == "llm"
    ]
    assert len(llm_predictions) == taught.get("prediction", 0)
    assert all(p.revision == 1 and p.model_version.endswith("/textcat.v1") for p in llm_predictions)
    assert all(set(p.labels) <= set(task.labels) for p in llm_predictions)
    for outputs in by_id.values():
        for role, value in outputs:
            if role == "review":
                review = RoutedItem.model_validate_json(value)
                assert review.reason in {
                    "llm_disagrees",
                    "llm_unsure",
                    "llm_bad_answer",
                    "llm_unavailable",
                }, review.reason

    silver = [
        Correction.model_validate_json(v)
        for v in read_topic(
            kafka_at(kafka_bootstrap),
            task.topic("corrections"),
            from_beginning=True,
            max_messages=None,
            timeout_s=3,
        )
    ]
    assert len(silver) == len(llm_predictions)
    assert all(c.source == "llm" and c.reviewer.startswith("llm:") for c in silver)


def test_llm_dying_mid_run_loses_nothing_and_does_not_block_the_student(
    kafka_bootstrap, redis_url, llm_server, snips_student, tmp_path, unique_prefix
):
    # A server of this test's own, so that it can be killed (the fixture's one warmed the weights).
    llm_settings = Settings(state_dir=tmp_path / "llm-state")
    base_url = services.ensure_llm(llm_settings, TEST_LLM_MODEL, free_port())
    task_file = write_task(
        tmp_path, unique_prefix, "snips", llm={"min_confidence": 0.0}, routing=ROUTING
    )
    task = load_task(task_file)
    rows = texts(300, example="snips")
    produce_raw(kafka_bootstrap, task, good_values(rows))
    env = service_env(
        kafka_bootstrap, redis_url, tmp_path, LOOPLINE_LLM_BASE_URL=base_url, **LLM_ENV
    )
    worker = start_worker(task_file, snips_student, env, tmp_path / "worker.log")
    try:
        wait_for_outcomes(redis_url, task, len(rows), 120, [worker])
        wait_for_some_teaching(redis_url, task, worker)
        services.down(llm_settings, ("llm",))

        # The student's path goes on at full speed while the LLM is gone.
        later = [
            {"id": f"late-{i}", "text": row["text"]}
            for i, row in enumerate(texts(200, example="snips"))
        ]
        started = time.monotonic()
        produce_raw(kafka_bootstrap, task, good_values(later))
        wait_for_outcomes(redis_url, task, len(rows) + len(later), 60, [worker])
        student_seconds = time.monotonic() - started

        taught = wait_for_teach(redis_url, task, 300, [worker])
    finally:
        stop(worker)
        services.down(llm_settings, ("llm",))

    assert student_seconds < 60
    all_ids = {row["id"] for row in rows} | {row["id"] for row in later}
    by_id = outputs_by_id(kafka_bootstrap, task, ("predictions", "review"))
    assert set(by_id) == all_ids, f"{len(all_ids - set(by_id))} items vanished"
    reasons = [
        RoutedItem.model_validate_json(value).reason
        for outputs in by_id.values()
        for role, value in outputs
        if role == "review"
    ]
    assert "llm_unavailable" in reasons, f"no item was routed to review for the outage: {taught}"
    assert taught.get("prediction", 0) > 0, "the LLM answered nothing before it died"


def taught_items(redis_url, task) -> int:
    """Requests the teach stage has finished (the ledger also counts their LLM tokens)."""
    return sum(n for name, n in counts(redis_url, task, "teach").items() if name != "llm_tokens")


def wait_for_some_teaching(redis_url, task, worker, at_least: int = 8) -> None:
    deadline = time.monotonic() + 180
    while taught_items(redis_url, task) < at_least:
        assert worker.poll() is None, "worker died"
        assert time.monotonic() < deadline, "the LLM never answered"
        time.sleep(0.2)
    assert taught_items(redis_url, task) < routed_to_llm(redis_url, task), (
        "the LLM finished everything before it could be killed"
    )
