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


def test_worker_reads_human_corrections_as_examples(kafka_bootstrap, tmp_path, unique_prefix):
    task = load_task(write_task(tmp_path, unique_prefix, "snips", llm={"examples": 2}))
    ensure_topics(kafka_bootstrap, task)
    now = datetime(2026, 11, 28, tzinfo=UTC)
    corrections = [
        Correction(
            id="1",
            task="snips",
            text="play some jazz",
            labels=["PlayMusic"],
            reviewer="ana",
            time=now,
        ),
        Correction(
            id="2",
            task="snips",
            text="rain tomorrow?",
            labels=["GetWeather"],
            source="llm",
            reviewer="llm:qwen",
            time=now,
        ),
        Correction(
            id="3",
            task="snips",
            text="book a table for two",
            labels=["BookRestaurant"],
            reviewer="ben",
            time=now,
        ),
        Correction(
            id="4",
            task="snips",
            text="will it snow",
            labels=["GetWeather"],
            reviewer="ana",
            time=now,
        ),
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for correction in corrections:
        producer.send(
            task.topic("corrections"), key=correction.id.encode(), value=encode(correction)
        )
    producer.send(task.topic("corrections"), key=b"junk", value=b"not a correction")
    producer.flush()
    producer.close()

    settings = Settings(kafka_bootstrap=kafka_bootstrap)
    examples = human_examples(settings, task)
    assert len(examples) == 2
    assert {e.text for e in examples} <= {"play some jazz", "book a table for two", "will it snow"}
    assert all(e.text != "rain tomorrow?" for e in examples), "silver answers are never examples"
