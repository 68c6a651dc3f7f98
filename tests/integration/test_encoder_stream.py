"""A real worker streams with an encoder student, and with a bow -> encoder cascade, through a
real Kafka and Redis: every item ends as one outcome, answers name the model (or cascade
step) that gave them, and accepted answers are right."""

from __future__ import annotations

import json

import pytest

from loopline.processors.student import read_meta
from loopline.schemas import Prediction, RoutedItem, load_task

from .streaming import (
    OUTPUT_ROLES,
    outputs_by_id,
    produce_raw,
    service_env,
    start_worker,
    stop,
    texts,
    wait_for_outcomes,
    write_task,
)

pytestmark = pytest.mark.integration


def stream_through_a_worker(model, kafka_bootstrap, redis_url, tmp_path, prefix, n=300):
    """n SNIPS test texts through one worker; returns (task, {id: (role, value)}, rows)."""
    task_file = write_task(tmp_path, prefix, example="snips")
    task = load_task(task_file)
    rows = texts(n, example="snips")
    produce_raw(kafka_bootstrap, task, [(r["id"].encode(), json.dumps(r).encode()) for r in rows])
    env = service_env(kafka_bootstrap, redis_url, tmp_path, LOOPLINE_ENCODER_THREADS="1")
    log = tmp_path / "worker.log"
    worker = start_worker(task_file, model, env, log)
    try:
        outcome_counts = wait_for_outcomes(redis_url, task, n, 300, [worker])
    finally:
        stop(worker)
    assert worker.returncode == 0, log.read_text()[-3000:]
    assert sum(outcome_counts.values()) == n
    by_id = outputs_by_id(kafka_bootstrap, task, OUTPUT_ROLES)
    assert set(by_id) == {row["id"] for row in rows}
    assert all(len(outputs) == 1 for outputs in by_id.values())
    return task, {item_id: outputs[0] for item_id, outputs in by_id.items()}, rows


def versions_and_accuracy(task, outputs, rows):
    gold = {row["id"]: row["meta"]["gold"] for row in rows}
    versions, right = [], []
    for item_id, (role, value) in outputs.items():
        if role == "predictions":
            prediction = Prediction.model_validate_json(value)
            assert prediction.source == "student"
            assert prediction.confidence >= task.routing.accept_threshold
            versions.append(prediction.model_version)
            right.append(prediction.labels == [gold[item_id]])
        else:
            routed = RoutedItem.model_validate_json(value)
            annotation = routed.suggestions[0].annotation
            assert annotation.confidence < task.routing.accept_threshold
            versions.append(annotation.model_version or routed.suggestions[0].model_version)
    return versions, sum(right) / len(right)


def test_a_worker_streams_with_an_encoder_student(
    kafka_bootstrap, redis_url, snips_encoder_student, tmp_path, unique_prefix
):
    task, outputs, rows = stream_through_a_worker(
        snips_encoder_student, kafka_bootstrap, redis_url, tmp_path, unique_prefix
    )
    versions, accepted_accuracy = versions_and_accuracy(task, outputs, rows)
    assert set(versions) == {read_meta(snips_encoder_student).version}
    assert accepted_accuracy >= 0.9


def test_a_worker_streams_with_a_cascade_and_says_which_step_answered(
    kafka_bootstrap, redis_url, snips_cascade_student, tmp_path, unique_prefix
):
    task, outputs, rows = stream_through_a_worker(
        snips_cascade_student, kafka_bootstrap, redis_url, tmp_path, unique_prefix
    )
    versions, accepted_accuracy = versions_and_accuracy(task, outputs, rows)
    version = read_meta(snips_cascade_student).version
    assert set(versions) == {f"{version}:bow", f"{version}:encoder"}
    assert accepted_accuracy >= 0.9
