"""The annotate path on a real Kafka and Redis, with workers as real processes."""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time

import pytest

from loopline.schemas import DeadLetter, Prediction, RoutedItem, load_task
from loopline.streams.agents.annotate import group_id
from loopline.streams.topics import wait_for_assignment

from .streaming import (
    OUTPUT_ROLES,
    children_of,
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
    wait_until_gone,
    write_task,
)

pytestmark = pytest.mark.integration


BAD_INPUTS = {
    "undecodable": b'{"text": "caf\xe9"}',
    "invalid_json": b"{this is not json",
    "schema_violation": b'{"txt": "misspelled field"}',
    "empty_text": b'{"text": "   "}',
    "oversized_text": json.dumps({"text": "x" * 501}).encode(),
    "null_value": None,
}


@pytest.fixture
def task_file(tmp_path, unique_prefix):
    return write_task(tmp_path, unique_prefix, max_text_chars=500)


def test_every_offset_ends_as_exactly_one_outcome(
    kafka_bootstrap, redis_url, banking_student, task_file, tmp_path
):
    task = load_task(task_file)
    rows = texts(300)
    bad = list(BAD_INPUTS.items())
    values = good_values(rows[:150]) + [(b"bad", v) for _, v in bad] + good_values(rows[150:])
    produce_raw(kafka_bootstrap, task, values)

    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    worker = start_worker(task_file, banking_student, env, tmp_path / "worker.log")
    try:
        outcome_counts = wait_for_outcomes(redis_url, task, len(values), 120, [worker])
    finally:
        stop(worker)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]

    by_id = outputs_by_id(kafka_bootstrap, task, OUTPUT_ROLES)
    assert set(by_id) == {row["id"] for row in rows}
    for item_id, outputs in by_id.items():
        assert len(outputs) == 1, f"{item_id} has {len(outputs)} outcomes: {outputs}"
    predictions = [
        Prediction.model_validate_json(v) for [(role, v)] in by_id.values() if role == "predictions"
    ]
    routed = [
        RoutedItem.model_validate_json(v) for [(role, v)] in by_id.values() if role != "predictions"
    ]
    assert predictions and routed, "a 77-intent student should be sure of some items and not others"
    threshold = task.routing.accept_threshold
    assert all(p.confidence >= threshold and p.source == "student" for p in predictions)
    assert all(r.suggestions[0].annotation.confidence < threshold for r in routed)
    assert all(r.route == "review" and r.reason == "low_confidence_no_llm" for r in routed)

    letters = [
        DeadLetter.model_validate_json(v)
        for v in read_topic(
            kafka_at(kafka_bootstrap),
            task.topic("deadletter"),
            from_beginning=True,
            max_messages=None,
            timeout_s=3,
        )
    ]
    assert sorted(letter.error_type for letter in letters) == sorted(BAD_INPUTS)
    for letter in letters:
        assert letter.original == (BAD_INPUTS[letter.error_type] or b"")
        assert letter.source_topic == task.topic("texts") and letter.source_offset >= 0
        assert letter.stage == "annotate" and len(letter.message) > 20

    assert outcome_counts == {
        "prediction": len(predictions),
        "review": len(routed),
        "deadletter": len(BAD_INPUTS),
    }


def test_deadletter_keeps_bytes_and_says_what_to_do(
    kafka_bootstrap, redis_url, banking_student, task_file, tmp_path
):
    task = load_task(task_file)
    produce_raw(kafka_bootstrap, task, [(b"k", raw) for raw in BAD_INPUTS.values()])
    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    worker = start_worker(task_file, banking_student, env, tmp_path / "worker.log")
    try:
        wait_for_outcomes(redis_url, task, len(BAD_INPUTS), 90, [worker])
        # The worker is still alive and still answers good input after all that.
        produce_raw(kafka_bootstrap, task, good_values(texts(5)))
        wait_for_outcomes(redis_url, task, len(BAD_INPUTS) + 5, 60, [worker])
    finally:
        stop(worker)
    raw_letters = list(
        read_topic(
            kafka_at(kafka_bootstrap),
            task.topic("deadletter"),
            from_beginning=True,
            max_messages=None,
            timeout_s=3,
        )
    )
    by_kind = {json.loads(v)["error_type"]: json.loads(v) for v in raw_letters}
    assert set(by_kind) == set(BAD_INPUTS)
    # On the wire the original bytes are URL-safe base64, so any consumer can recover them.
    assert base64.urlsafe_b64decode(by_kind["undecodable"]["original"]) == BAD_INPUTS["undecodable"]
    assert "UTF-8" in by_kind["undecodable"]["message"]
    assert "max_text_chars=500" in by_kind["oversized_text"]["message"]
    assert "TextIn" in by_kind["schema_violation"]["message"]


def test_two_workers_split_the_partitions(
    kafka_bootstrap, redis_url, banking_student, task_file, tmp_path
):
    task = load_task(task_file)
    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    workers = [
        start_worker(task_file, banking_student, env, tmp_path / f"worker{i}.log") for i in (1, 2)
    ]
    try:
        assignment = wait_for_assignment(
            kafka_at(kafka_bootstrap), group_id(task), task.topic("texts"), 2
        )
        rows = texts(2000)
        produce_raw(kafka_bootstrap, task, good_values(rows))
        wait_for_outcomes(redis_url, task, len(rows), 180, workers)
    finally:
        stop(*workers)
    assert sorted(p for parts in assignment for p in parts) == list(range(task.topics.partitions))
    assert all(parts for parts in assignment), f"a worker got no partition: {assignment}"
    by_id = outputs_by_id(kafka_bootstrap, task, OUTPUT_ROLES)
    assert set(by_id) == {row["id"] for row in rows}


def test_sigkill_mid_stream_loses_nothing(
    kafka_bootstrap, redis_url, banking_student, task_file, tmp_path
):
    task = load_task(task_file)
    rows = texts(6000)
    produce_raw(kafka_bootstrap, task, good_values(rows))
    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    worker = start_worker(task_file, banking_student, env, tmp_path / "worker1.log")
    try:
        done_before_kill = wait_until_some_done(redis_url, task, worker, at_least=500)
        student_processes = children_of(worker.pid)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        assert student_processes, "the worker runs its student in a child process"
        assert not wait_until_gone(student_processes, 10), "the student outlived its worker"
        assert sum(counts(redis_url, task).values()) < len(rows), (
            "killed too late to prove anything"
        )
        restarted = start_worker(task_file, banking_student, env, tmp_path / "worker2.log")
        try:
            final = wait_for_outcomes(redis_url, task, len(rows), 240, [restarted])
        finally:
            stop(restarted)
    finally:
        stop(worker)

    assert done_before_kill >= 500
    by_id = outputs_by_id(kafka_bootstrap, task, OUTPUT_ROLES)
    assert set(by_id) == {row["id"] for row in rows}, "some ids have no outcome after restart"
    for item_id, outputs in by_id.items():
        roles = {role for role, _ in outputs}
        values = {value for _, value in outputs}
        assert len(roles) == 1 and len(values) == 1, f"{item_id}: duplicates differ: {outputs}"
    # The ledger counts each offset once, even those processed twice around the kill.
    assert sum(final.values()) == len(rows)


def wait_until_some_done(redis_url, task, worker, at_least: int) -> int:
    deadline = time.monotonic() + 120
    while True:
        done = sum(counts(redis_url, task).values())
        if done >= at_least:
            return done
        assert worker.poll() is None, "worker died before the kill"
        assert time.monotonic() < deadline, f"only {done} outcomes before the kill"
        time.sleep(0.05)


def test_a_worker_joining_mid_stream_takes_partitions_without_loss(
    kafka_bootstrap, redis_url, banking_student, task_file, tmp_path
):
    """A rebalance while batches are in flight: the batch finishes and commits before its
    partitions move, and whatever the new owner redoes is byte-identical."""
    task = load_task(task_file)
    rows = texts(8000)
    produce_raw(kafka_bootstrap, task, good_values(rows[:500]))
    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    first = start_worker(task_file, banking_student, env, tmp_path / "worker1.log")
    second = None

    def trickle() -> None:
        """The rest arrives steadily: the stream still flows when the second worker joins."""
        for start in range(500, len(rows), 250):
            produce_raw(kafka_bootstrap, task, good_values(rows[start : start + 250]))
            time.sleep(0.5)

    stream = threading.Thread(target=trickle)
    try:
        wait_until_some_done(redis_url, task, first, at_least=300)
        stream.start()
        second = start_worker(task_file, banking_student, env, tmp_path / "worker2.log")
        assignment = wait_for_assignment(
            kafka_at(kafka_bootstrap), group_id(task), task.topic("texts"), 2
        )
        done_at_rebalance = sum(counts(redis_url, task).values())
        stream.join()
        final = wait_for_outcomes(redis_url, task, len(rows), 240, [first, second])
    finally:
        stop(*(worker for worker in (first, second) if worker is not None))

    assert done_at_rebalance < len(rows), "the stream ended before the rebalance"
    assert all(assignment), f"a worker got no partition: {assignment}"
    assert sum(final.values()) == len(rows)
    by_id = outputs_by_id(kafka_bootstrap, task, OUTPUT_ROLES)
    assert set(by_id) == {row["id"] for row in rows}
    for item_id, outputs in by_id.items():
        assert len({value for _, value in outputs}) == 1, f"{item_id}: duplicates differ"
