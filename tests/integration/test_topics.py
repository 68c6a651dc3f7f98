"""Topics on a real broker: a task reading an existing input topic, and existing topics that
do not suit their roles refused with what to do."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaProducer
from kafka.admin import NewTopic

from loopline.schemas import ConfigError, TextIn, load_task
from loopline.streams.codec import encode
from loopline.streams.topics import admin_client, ensure_topics

from .streaming import (
    kafka_at,
    outputs_by_id,
    service_env,
    start_worker,
    stop,
    texts,
    wait_for_outcomes,
    write_task,
)

pytestmark = pytest.mark.integration


def create(bootstrap: str, name: str, partitions: int, **configs: str) -> None:
    admin = admin_client(kafka_at(bootstrap))
    try:
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    finally:
        admin.close()


def test_a_worker_reads_the_existing_input_topic_a_task_names(
    kafka_bootstrap, redis_url, banking_student, tmp_path, unique_prefix
):
    source = f"{unique_prefix}-orders.text"
    create(kafka_bootstrap, source, 4)
    task_file = write_task(tmp_path, unique_prefix, topics={"input": source})
    task = load_task(task_file)
    assert source not in ensure_topics(kafka_at(kafka_bootstrap), task)  # never created by us
    rows = texts(100)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for row in rows:
        producer.send(source, key=row["id"].encode(), value=encode(TextIn(**row)))
    producer.flush()
    producer.close()

    worker = start_worker(
        task_file, banking_student, service_env(kafka_bootstrap, redis_url, tmp_path),
        tmp_path / "worker.log",
    )  # fmt: skip
    try:
        wait_for_outcomes(redis_url, task, len(rows), 120, [worker])
    finally:
        stop(worker)
    by_id = outputs_by_id(kafka_bootstrap, task, ("predictions", "llm", "review"))
    assert set(by_id) == {row["id"] for row in rows}
    routed = [
        json.loads(v) for outputs in by_id.values() for role, v in outputs if role != "predictions"
    ]
    assert all(item["item"]["id"] in by_id for item in routed)


def test_a_missing_input_topic_is_a_clear_error(kafka_bootstrap, tmp_path, unique_prefix):
    task = load_task(write_task(tmp_path, unique_prefix, topics={"input": f"{unique_prefix}-nope"}))
    with pytest.raises(ConfigError, match="does not exist: create it, or remove topics.input"):
        ensure_topics(kafka_at(kafka_bootstrap), task)


def test_existing_topics_that_do_not_suit_their_role_are_refused(
    kafka_bootstrap, tmp_path, unique_prefix
):
    task = load_task(write_task(tmp_path, unique_prefix))
    create(kafka_bootstrap, task.topic("texts"), 2)
    create(kafka_bootstrap, task.topic("corrections"), 4, **{"cleanup.policy": "delete"})
    with pytest.raises(ConfigError) as refused:
        ensure_topics(kafka_at(kafka_bootstrap), task)
    message = str(refused.value)
    assert f"{task.topic('texts')} has 2 partition(s), the task asks for 4" in message
    assert f"{task.topic('corrections')} has cleanup.policy=delete" in message
    admin = admin_client(kafka_at(kafka_bootstrap))
    try:
        assert task.topic("predictions") not in admin.list_topics()  # nothing half-created
    finally:
        admin.close()
