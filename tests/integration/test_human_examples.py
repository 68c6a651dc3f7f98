"""Human corrections on Kafka become the LLM's few-shot examples."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from kafka import KafkaProducer

from loopline.schemas import Correction, load_task
from loopline.streams.codec import encode
from loopline.streams.settings import Settings
from loopline.streams.topics import ensure_topics
from loopline.streams.wiring import human_examples

from .streaming import write_task

pytestmark = pytest.mark.integration


def correction(item_id: str, text: str, label: str, **fields) -> Correction:
    values = {"reviewer": "ana", "time": datetime(2026, 11, 28, tzinfo=UTC), **fields}
    return Correction(id=item_id, task="snips", text=text, labels=[label], **values)


def test_worker_reads_human_corrections_as_examples(kafka_bootstrap, tmp_path, unique_prefix):
    task = load_task(write_task(tmp_path, unique_prefix, "snips", llm={"examples": 2}))
    settings = Settings(kafka_bootstrap=kafka_bootstrap)
    ensure_topics(settings, task)
    corrections = [
        correction("1", "play some jazz", "PlayMusic"),
        correction("2", "rain tomorrow?", "GetWeather", source="llm", reviewer="llm:qwen"),
        correction("3", "book a table for two", "BookRestaurant"),
        correction("4", "will it snow", "GetWeather"),
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for item in corrections:
        producer.send(task.topic("corrections"), key=item.id.encode(), value=encode(item))
    producer.send(task.topic("corrections"), key=b"junk", value=b"not a correction")
    producer.flush()
    producer.close()

    examples = human_examples(settings, task)
    assert len(examples) == 2
    assert {e.text for e in examples} <= {"play some jazz", "book a table for two", "will it snow"}
    assert all(e.text != "rain tomorrow?" for e in examples), "silver answers are never examples"
