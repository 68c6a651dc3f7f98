"""Helpers for learning-loop tests: gold corrections on Kafka, trainers as real processes,
and the registry as the `models` topic holds it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaProducer

from loopline.schemas import Correction, TaskConfig
from loopline.streams.codec import encode
from loopline.streams.models.registry import RegistryState, read_registry
from loopline.streams.settings import Settings
from loopline.streams.topics import ensure_topics

from .streaming import EXAMPLES

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def gold_rows(example: str = "snips", start: int = 0, stop: int | None = None) -> list[dict]:
    lines = (EXAMPLES / example / "train.jsonl").read_text().splitlines()[start:stop]
    return [{"id": f"gold-{start + i}", **json.loads(line)} for i, line in enumerate(lines)]


def send_corrections(settings: Settings, task: TaskConfig, rows: list[dict]) -> None:
    """Each row as a gold Correction on the task's `corrections` topic, keyed by id."""
    ensure_topics(settings, task)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for i, row in enumerate(rows):
        correction = Correction(
            id=row["id"],
            task=task.name,
            text=row["text"],
            labels=[row["label"]],
            reviewer="tester",
            time=T0 + timedelta(seconds=i),
        )
        producer.send(
            task.topic("corrections"), key=correction.key.encode(), value=encode(correction)
        )
    producer.flush()
    producer.close()


def send_raw_correction(settings: Settings, task: TaskConfig, key: str, value: dict) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    producer.send(task.topic("corrections"), key=key.encode(), value=json.dumps(value).encode())
    producer.flush()
    producer.close()


def start_trainer(task_file: Path, env: dict, log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "loopline.streams.cli", "trainer", "--task", str(task_file), *args],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def wait_for_registry(
    settings: Settings, task: TaskConfig, done, timeout_s: float, processes=(), logs=()
) -> RegistryState:
    """Poll the registry until `done(state)`; fail early if a process died."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = read_registry(settings, task)
        if done(state):
            return state
        for process, log in zip(processes, logs):
            assert process.poll() is None, f"exited {process.returncode}: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, (
            "registry: "
            + str({v: (e.status, e.reason) for v, e in state.versions.items()})
            + "\n"
            + "\n".join(log.read_text()[-2000:] for log in logs)
        )
        time.sleep(0.5)


def wait_for_log(log: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} not in {log}:\n{log.read_text()[-2000:]}"
        time.sleep(0.3)
