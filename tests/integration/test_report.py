"""`loopline report` on a real Kafka and Redis, after a small stream through a real worker."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from kafka import KafkaProducer

from loopline.schemas import Correction, ModelEvent, RoutedItem, load_task
from loopline.streams.codec import encode
from loopline.streams.models.registry import RegistryState, promotion, publish, registration

from .streaming import (
    good_values,
    kafka_at,
    outputs_by_id,
    produce_raw,
    run_cli,
    service_env,
    start_worker,
    stop,
    texts,
    wait_for_outcomes,
    write_task,
)

pytestmark = pytest.mark.integration


def test_report_before_anything_happened_explains_every_section(
    kafka_bootstrap, redis_url, tmp_path, unique_prefix
):
    task_file = write_task(tmp_path, unique_prefix, "snips")
    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    result = run_cli("report", "--task", str(task_file), "--out", str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "report-snips.html").read_text()
    assert "<img" not in page
    assert "No model event on" in page and "No item has been annotated yet" in page
    assert "<code>routing.audit_rate</code> is 0" in page


def test_report_after_a_stream_with_answers_and_a_model_event(
    kafka_bootstrap, redis_url, snips_student, tmp_path, unique_prefix
):
    task_file = write_task(
        tmp_path, unique_prefix, "snips", routing={"accept_threshold": 0.9, "audit_rate": 0.5}
    )
    task = load_task(task_file)
    rows = texts(60, example="snips")
    produce_raw(kafka_bootstrap, task, good_values(rows))
    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    worker = start_worker(task_file, snips_student, env, tmp_path / "worker.log")
    try:
        wait_for_outcomes(redis_url, task, len(rows), 120, [worker])
    finally:
        stop(worker)

    outputs = outputs_by_id(kafka_bootstrap, task, ("predictions", "review"))
    routed = [
        RoutedItem.model_validate_json(value)
        for values in outputs.values()
        for role, value in values
        if role == "review"
    ]
    audited = [r for r in routed if r.reason == "audit"]
    unsure = [r for r in routed if r.reason != "audit"]
    assert audited and unsure, "the stream should give audit samples and unsure items"
    # A person answers every audit item with the gold label and half the unsure ones.
    gold_label = {row["id"]: row["meta"]["gold"] for row in rows}
    answered = audited + unsure[: len(unsure) // 2]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for item in answered:
        correction = Correction(
            id=item.id,
            task=task.name,
            text=item.item.text,
            labels=[gold_label[item.id]],
            reviewer="ana",
            time=datetime.now(UTC),
        )
        producer.send(
            task.topic("corrections"), key=correction.key.encode(), value=encode(correction)
        )
    producer.flush()
    producer.close()
    version = audited[0].suggestions[0].model_version
    event = ModelEvent(
        task=task.name,
        version=version,
        artifact=str(snips_student),
        metrics={"accuracy": 0.93, "ece": 0.04},
        data_counts={"gold": 700, "silver": 0},
        created_at=datetime.now(UTC),
    )
    publish(
        kafka_at(kafka_bootstrap),
        task,
        registration(event) + promotion(RegistryState(), event, "first"),
    )

    result = run_cli("report", "--task", str(task_file), "--out", str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "report-snips.html").read_text()
    # Learning curve, shares, live accuracy, queue depth; no LLM, so no token plot.
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 4
    assert "The LLM has answered nothing yet" in page
    people = len({r.id for r in unsure})
    assert f"people: {people:,} ({people / len(rows):.1%})" in result.stderr
    correct = sum(gold_label[r.id] in r.suggestions[0].annotation.labels for r in audited)
    assert f"<td>{version}</td><td>{len(audited)}</td><td>{correct}</td>" in page
    assert f"gold labels: {len(answered)}" in result.stderr
