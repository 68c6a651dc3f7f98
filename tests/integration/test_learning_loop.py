"""The learning loop on real Kafka and Redis: corrections in, a gated promotion out; a
rejected candidate; two trainers of which one trains; a trainer restart."""

from __future__ import annotations

import json
import signal
import time

import pytest

from loopline.schemas import DeadLetter, load_task
from loopline.streams.models.artifacts import DirectoryStore
from loopline.streams.models.registry import read_registry

from .learning import (
    gold_rows,
    send_corrections,
    send_raw_correction,
    start_trainer,
    wait_for_log,
    wait_for_registry,
)
from .streaming import kafka_at, read_topic, service_env, stop, write_task

pytestmark = pytest.mark.integration

QUICK_STUDENT = {"architecture": "bow", "epochs": 3}


def setup(tmp_path, prefix, kafka_bootstrap, redis_url, **learning):
    task_file = write_task(
        tmp_path,
        prefix,
        example="snips",
        student=QUICK_STUDENT,
        learning={"min_new_gold": 100, "interval_s": 3600, **learning},
    )
    env = service_env(
        kafka_bootstrap,
        redis_url,
        tmp_path,
        LOOPLINE_ARTIFACTS=str(tmp_path / "artifacts"),
        LOOPLINE_TRAINER_LEASE_S="3",
    )
    return task_file, load_task(task_file), env, kafka_at(kafka_bootstrap)


def test_corrections_become_a_promoted_student_and_bad_ones_a_dead_letter(
    kafka_bootstrap, redis_url, unique_prefix, tmp_path
):
    task_file, task, env, settings = setup(tmp_path, unique_prefix, kafka_bootstrap, redis_url)
    rows = gold_rows(stop=250)
    send_corrections(settings, task, rows)
    send_raw_correction(
        settings,
        task,
        "bad-1",
        {
            "id": "bad-1",
            "task": task.name,
            "text": "play something",
            "labels": ["NotAnIntent"],
            "reviewer": "tester",
            "time": "2026-01-01T00:00:00Z",
        },
    )
    log = tmp_path / "trainer.log"
    trainer = start_trainer(task_file, env, log)
    try:
        state = wait_for_registry(
            settings, task, lambda s: s.production is not None, 180, [trainer], [log]
        )
    finally:
        stop(trainer)

    production = state.production
    assert state.status(production.version) == "production"
    assert production.reason.startswith("first model: accuracy")
    assert production.metrics["accuracy"] >= task.learning.floor
    assert production.data_counts["gold"] == len(rows)  # the bad one is not among them
    assert production.data_counts["train"] + production.data_counts["eval"] == len(rows)
    assert sum(band.n for band in production.bands) == production.metrics["eval_n"]
    assert production.parent_version is None and production.config_hash
    model_dir = DirectoryStore(tmp_path / "artifacts").fetch(production.artifact)
    assert json.loads((model_dir / "loopline.json").read_text())["version"] == production.version

    letters = [
        DeadLetter.model_validate_json(value)
        for value in read_topic(
            settings, task.topic("deadletter"), from_beginning=True, max_messages=None, timeout_s=3
        )
    ]
    assert [(d.stage, d.error_type) for d in letters] == [("trainer", "invalid_correction")]
    assert "NotAnIntent" in letters[0].message and b"NotAnIntent" in letters[0].original


def test_two_trainers_one_trains_the_other_takes_over_and_the_gate_rejects(
    kafka_bootstrap, redis_url, unique_prefix, tmp_path
):
    # 150 new gold labels start a run: however the first 250 arrive, they make one version,
    # and the 150 sent after the kill make the second.
    task_file, task, env, settings = setup(
        tmp_path, unique_prefix, kafka_bootstrap, redis_url, promote_margin=0.5, min_new_gold=150
    )
    logs = [tmp_path / "trainer-a.log", tmp_path / "trainer-b.log"]
    trainers = [start_trainer(task_file, env, log) for log in logs]
    try:
        for log in logs:
            wait_for_log(log, "caught up", 60)
        send_corrections(settings, task, gold_rows(stop=250))
        state = wait_for_registry(
            settings, task, lambda s: s.production is not None, 180, trainers, logs
        )
        time.sleep(3)  # a second trainer, if it trained too, would publish a second version
        assert len(read_registry(settings, task).versions) == 1
        texts = [log.read_text() for log in logs]
        leader = next(i for i, text in enumerate(texts) if "this trainer trains" in text)
        assert "training (" not in texts[1 - leader]
        assert "waiting: trainer" in texts[1 - leader]
        first = state.production.version

        trainers[leader].send_signal(signal.SIGKILL)
        trainers[leader].wait()
        send_corrections(settings, task, gold_rows(start=250, stop=400))
        other = 1 - leader

        def judged(s) -> bool:
            """A second version, and the gate's verdict on it (it is published first as a
            candidate)."""
            return len(s.versions) == 2 and all(s.status(v) != "candidate" for v in s.versions)

        state = wait_for_registry(settings, task, judged, 180, [trainers[other]], [logs[other]])
    finally:
        stop(*trainers)
    second = next(e for v, e in state.versions.items() if v != first)
    assert state.production.version == first
    assert state.status(second.version) == "rejected"
    assert "less than the margin 0.500" in second.reason
    assert second.parent_version == first and second.compared_with == first
    assert second.baseline_metrics["eval_n"] == second.metrics["eval_n"]
    assert second.data_counts["gold"] == 400


def test_a_restarted_trainer_carries_on_and_rejects_a_damaged_production_artifact(
    kafka_bootstrap, redis_url, unique_prefix, tmp_path
):
    # 150 new gold labels start a run: the 150 sent after the restart make one version,
    # however they arrive.
    task_file, task, env, settings = setup(
        tmp_path, unique_prefix, kafka_bootstrap, redis_url, min_new_gold=150
    )
    send_corrections(settings, task, gold_rows(stop=250))
    log = tmp_path / "trainer.log"
    trainer = start_trainer(task_file, env, log)
    try:
        state = wait_for_registry(
            settings, task, lambda s: s.production is not None, 180, [trainer], [log]
        )
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
    first = state.production

    restarted_log = tmp_path / "trainer-restarted.log"
    restarted = start_trainer(task_file, env, restarted_log)
    try:
        wait_for_log(restarted_log, "this trainer trains", 60)
        time.sleep(3)
        assert "training (" not in restarted_log.read_text(), "nothing new: no run"
        weights = next(DirectoryStore(tmp_path / "artifacts").path(first.artifact).rglob("model"))
        weights.write_bytes(b"damaged")
        send_corrections(settings, task, gold_rows(start=250, stop=400))
        state = wait_for_registry(
            settings,
            task,
            lambda s: s.production.version != first.version,
            180,
            [restarted],
            [restarted_log],
        )
    finally:
        stop(restarted)
    assert state.status(first.version) == "rejected"
    assert "is damaged" in state.versions[first.version].reason
    second = state.production
    assert second.parent_version == first.version
    assert second.reason.startswith("first model")  # no usable production model to beat
    assert second.data_counts["gold"] == 400
