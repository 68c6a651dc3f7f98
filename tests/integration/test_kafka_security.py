"""Kafka as companies run it: a broker that takes only SASL_SSL clients (the launcher's, with a
throwaway CA), reached by every client loopline uses — kafka-python (`produce`, topic
creation, reads), Faust and aiokafka (the worker) — with SCRAM and PLAIN."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import SecretStr

from loopline.schemas import load_task
from loopline.streams.app import group_id
from loopline.streams.connections import aiokafka_options
from loopline.streams.local import services
from loopline.streams.local.services import free_port
from loopline.streams.settings import Settings
from loopline.streams.topics import admin_client, read_to_end

from .streaming import run_cli, service_env, start_worker, stop, texts, write_task

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory) -> Settings:
    """Settings of a client of a fresh SASL_SSL broker (SCRAM-SHA-512 as the launcher prints)."""
    settings = services.own_services(tmp_path_factory.mktemp("secure-kafka"))
    try:
        bootstrap = services.ensure_kafka(settings, free_port(2), security="SASL_SSL")
    except Exception:
        services.down(settings, ("kafka",))
        raise
    yield services.client_settings(
        settings.model_copy(update={"kafka_bootstrap": bootstrap}), services.kafka_client(settings)
    )
    services.down(settings, ("kafka",))


def client_env(settings: Settings, mechanism: str) -> dict[str, str]:
    return {
        "LOOPLINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "LOOPLINE_KAFKA_SASL_MECHANISM": mechanism,
        "LOOPLINE_KAFKA_SASL_USERNAME": settings.kafka_sasl_username,
        "LOOPLINE_KAFKA_SASL_PASSWORD": settings.kafka_sasl_password.get_secret_value(),
        "LOOPLINE_KAFKA_SSL_CAFILE": str(settings.kafka_ssl_cafile),
    }


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_a_worker_streams_over_sasl_ssl(
    secure_kafka, redis_url, banking_student, tmp_path, unique_prefix, mechanism
):
    task_file = write_task(tmp_path, unique_prefix)
    task = load_task(task_file)
    env = service_env(
        secure_kafka.kafka_bootstrap, redis_url, tmp_path, **client_env(secure_kafka, mechanism)
    )
    rows = texts(200)
    produced = run_cli(
        "produce", "--task", str(task_file), "-", env=env,
        stdin="".join(json.dumps(row) + "\n" for row in rows),
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr

    worker = start_worker(task_file, banking_student, env, tmp_path / "worker.log")
    reader = secure_kafka.model_copy(update={"kafka_sasl_mechanism": mechanism})
    try:
        answered = wait_for_ids(reader, task, {row["id"] for row in rows}, worker, 120)
    finally:
        stop(worker)
    assert answered == {row["id"] for row in rows}
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]
    # What the README lists for ACLs: besides the task's topics, Faust adds only these.
    admin = admin_client(reader)
    try:
        faust_topics = {name for name in admin.list_topics() if name.startswith(group_id(task))}
    finally:
        admin.close()
    assert faust_topics == {f"{group_id(task)}-__assignor-__leader"}


def wait_for_ids(settings, task, ids, worker, timeout_s):
    """The ids with an output on predictions/llm/review, read over SASL_SSL (kafka-python)."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = {
            json.loads(record.value)["id"]
            for role in ("predictions", "llm", "review")
            for record in read_to_end(settings, task.topic(role))
        }
        if seen >= ids or time.monotonic() > deadline:
            return seen & ids
        assert worker.poll() is None, "the worker exited before answering every item"
        time.sleep(1)


def test_aiokafka_round_trip_with_scram_sha_256(secure_kafka, unique_prefix):
    settings = secure_kafka.model_copy(update={"kafka_sasl_mechanism": "SCRAM-SHA-256"})
    topic = f"{unique_prefix}.roundtrip"

    async def round_trip() -> bytes:
        producer = AIOKafkaProducer(**aiokafka_options(settings), acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"over TLS and SCRAM")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, **aiokafka_options(settings), auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            return (await asyncio.wait_for(consumer.getone(), 30)).value
        finally:
            await consumer.stop()

    assert asyncio.run(round_trip()) == b"over TLS and SCRAM"


def test_a_wrong_password_or_plaintext_client_is_refused(secure_kafka):
    wrong = secure_kafka.model_copy(update={"kafka_sasl_password": SecretStr("not-the-password")})
    plaintext = Settings(kafka_bootstrap=secure_kafka.kafka_bootstrap)
    assert services.kafka_answers(secure_kafka.kafka_bootstrap, secure_kafka)
    assert not services.kafka_answers(wrong.kafka_bootstrap, wrong)
    assert not services.kafka_answers(plaintext.kafka_bootstrap, plaintext)
