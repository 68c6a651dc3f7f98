"""Workers follow the registry under a continuous stream: a promotion and a rollback swap
the model between two batches (nothing lost, every item answered by exactly one version,
named on its output), and an artifact that cannot be loaded leaves the old model serving."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict

import pytest
from kafka import KafkaProducer

from loopline.processors.data import read_examples
from loopline.processors.training import train
from loopline.schemas import Prediction, RoutedItem, TextIn, load_task
from loopline.streams.agents.annotate import group_id
from loopline.streams.cli.models import publish_model_dir
from loopline.streams.codec import encode
from loopline.streams.connections import redis_sync_client
from loopline.streams.models.follow import workers_key
from loopline.streams.models.registry import promotion, publish, read_registry
from loopline.streams.settings import Settings
from loopline.streams.topics import read_to_end, wait_for_assignment

from .streaming import (
    EXAMPLES,
    OUTPUT_ROLES,
    outputs_by_id,
    run_cli,
    service_env,
    start_worker,
    stop,
    texts,
    wait_for_outcomes,
    write_task,
)

pytestmark = pytest.mark.integration

N = 3000


def trained(task, tmp_path, name, lines, epochs):
    data = read_examples(EXAMPLES / "snips" / "train.jsonl", task)[:lines]
    student = task.student.model_copy(update={"architecture": "bow", "epochs": epochs})
    out = tmp_path / name
    train(task.model_copy(update={"student": student}), data, out_dir=out)
    return out


def served_by(redis, task) -> dict[str, dict]:
    return {k.decode(): json.loads(v) for k, v in redis.hgetall(workers_key(task)).items()}


def wait_until_served(redis, task, version, timeout_s=60.0, error=False) -> float:
    started = time.monotonic()
    while True:
        workers = list(served_by(redis, task).values())
        if workers and all(
            w["version"] == version and (w["error"] is not None) == error for w in workers
        ):
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"workers: {workers}"
        time.sleep(0.05)


def version_of(role: str, value: bytes) -> str:
    if role == "predictions":
        return Prediction.model_validate_json(value).model_version
    return RoutedItem.model_validate_json(value).suggestions[0].model_version


def test_hot_swap_under_a_stream_promotion_rollback_and_an_unloadable_model(
    kafka_bootstrap, redis_url, unique_prefix, tmp_path
):
    task_file = write_task(tmp_path, unique_prefix, example="snips")
    task = load_task(task_file)
    artifacts = tmp_path / "artifacts"
    settings = Settings(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, artifacts=artifacts)
    v1 = publish_model_dir(settings, task, trained(task, tmp_path, "v1", 150, 1))
    v2 = publish_model_dir(settings, task, trained(task, tmp_path, "v2", 700, 4))
    publish(settings, task, promotion(read_registry(settings, task), v1, "first"))

    env = service_env(kafka_bootstrap, redis_url, tmp_path, LOOPLINE_ARTIFACTS=str(artifacts))
    log = tmp_path / "worker.log"
    worker = start_worker(task_file, None, env, log)
    redis = redis_sync_client(settings)
    rows = texts(N, example="snips")
    try:
        wait_for_assignment(settings, group_id(task), task.topic("texts"))
        wait_until_served(redis, task, v1.version)
        producing = threading.Thread(target=produce_steadily, args=(settings, task, rows, 300))
        producing.start()
        time.sleep(2)
        publish(settings, task, promotion(read_registry(settings, task), v2, "test"))
        promote_to_swap = wait_until_served(redis, task, v2.version)
        time.sleep(1)
        rolled = run_cli("models", "rollback", "--task", str(task_file), env=env)
        assert rolled.returncode == 0, rolled.stderr
        assert f"to {v1.version}" in rolled.stdout
        wait_until_served(redis, task, v1.version)
        producing.join()
        wait_for_outcomes(redis_url, task, N, 120, [worker])

        broken = v2.model_copy(update={"version": "snips-broken", "artifact": "snips/missing"})
        publish(settings, task, promotion(read_registry(settings, task), broken, "test"))
        wait_until_served(redis, task, v1.version, error=True)
        produce_steadily(settings, task, texts(N + 50, example="snips")[N:], 1000)
        wait_for_outcomes(redis_url, task, N + 50, 60, [worker])
    finally:
        stop(worker)
    assert worker.returncode == 0, log.read_text()[-3000:]
    print(f"promotion to every worker serving the new model: {promote_to_swap:.2f} s")

    by_id = outputs_by_id(kafka_bootstrap, task, OUTPUT_ROLES)
    assert len(by_id) == N + 50 and all(len(outputs) == 1 for outputs in by_id.values())
    versions = {item_id: version_of(*outputs[0]) for item_id, outputs in by_id.items()}
    assert set(versions.values()) == {v1.version, v2.version}

    # In each partition, in offset order: v1 until the swap, v2, then v1 after the rollback.
    sequences = defaultdict(list)
    for record in read_to_end(settings, task.topic("texts")):
        sequences[record.partition].append(versions[record.key.decode()])
    for sequence in sequences.values():
        changes = [a for a, b in zip(sequence, sequence[1:]) if a != b]
        assert changes in ([], [v1.version], [v1.version, v2.version]), changes
    assert sum(v == v2.version for v in versions.values()) > 100
    last = [versions[f"item-{i}"] for i in range(N, N + 50)]
    assert set(last) == {v1.version}, "a model that cannot load leaves the old one serving"
    (status,) = served_by(redis, task).values()
    assert "snips-broken" in status["error"] and "mount the artifact store" in status["error"]
    assert "cannot load model snips-broken" in log.read_text()


def produce_steadily(settings, task, rows, per_second: float) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    for i, row in enumerate(rows):
        item = TextIn(id=row["id"], text=row["text"])
        producer.send(task.topic("texts"), key=item.id.encode(), value=encode(item))
        if i % 10 == 9:
            time.sleep(10 / per_second)
    producer.flush()
    producer.close()
