"""Helpers for stream tests: a task file per test, workers as real processes, topic reads."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import redis.asyncio as aioredis
import yaml
from kafka import KafkaProducer

from loopline.schemas import TaskConfig, TextIn
from loopline.streams.agents.annotate import STAGE
from loopline.streams.cli.stream import read_topic  # noqa: F401  (re-exported for tests)
from loopline.streams.codec import encode
from loopline.streams.settings import Settings
from loopline.streams.state import OutcomeLedger
from loopline.streams.topics import ensure_topics
from loopline.streams.worker import start_process, stop_process

OUTCOMES = ("prediction", "llm", "review", "deadletter")  # the rest are tags, e.g. audit
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Where an annotated item can end (dead letters aside).
OUTPUT_ROLES = ("predictions", "llm", "review")


def run_cli(
    *args: str, env: dict, stdin: str | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess:
    """`loopline ARGS...` in a process of its own, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "loopline.streams.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def write_task(tmp_path: Path, prefix: str, example: str = "banking77", **overrides) -> Path:
    """A copy of an example task with this test's own topic prefix (and consumer group)."""
    raw = yaml.safe_load((EXAMPLES / example / "task.yml").read_text())
    raw["topics"]["prefix"] = f"{prefix}."
    for section, values in overrides.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    path = tmp_path / f"{prefix}.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


def service_env(kafka_bootstrap: str, redis_url: str, tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
    env.update(
        LOOPLINE_KAFKA_BOOTSTRAP=kafka_bootstrap,
        LOOPLINE_REDIS_URL=redis_url,
        LOOPLINE_STATE_DIR=str(tmp_path / "state"),
        **extra,
    )
    return env


def kafka_at(bootstrap: str) -> Settings:
    """Settings that reach the test's Kafka (the part of them the topic helpers need)."""
    return Settings(kafka_bootstrap=bootstrap)


def start_worker(task_file: Path, model: Path, env: dict, log: Path) -> subprocess.Popen:
    return start_process(task_file, model, log, env)


def produce_raw(bootstrap: str, task: TaskConfig, values: list[tuple[bytes | None, bytes | None]]):
    """Send (key, value) pairs exactly as given, bad bytes included."""
    ensure_topics(kafka_at(bootstrap), task)
    # The broker decides which sizes it accepts, not this producer.
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4 << 20)
    sent = [producer.send(task.topic("texts"), key=key, value=value) for key, value in values]
    producer.flush()
    for future in sent:
        future.get(timeout=30)  # raises when the broker refused a message
    producer.close()


def texts(n: int, seed_file: str = "test.jsonl", example: str = "banking77") -> list[dict]:
    """n items with unique ids, cycling through an example's texts."""
    lines = (EXAMPLES / example / seed_file).read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    return [
        {
            "id": f"item-{i}",
            "text": rows[i % len(rows)]["text"],
            "meta": {"gold": rows[i % len(rows)].get("label")},
        }
        for i in range(n)
    ]


def counts(redis_url: str, task: TaskConfig, stage: str = STAGE) -> dict[str, int]:
    async def read() -> dict[str, int]:
        client = aioredis.from_url(redis_url)
        try:
            return await OutcomeLedger(client, task.topics.prefix, stage).counts()
        finally:
            await client.aclose()

    return asyncio.run(read())


def wait_for_outcomes(
    redis_url: str, task: TaskConfig, total: int, timeout_s: float, workers=()
) -> dict[str, int]:
    """Poll the ledger until `total` offsets have an outcome; fail early if a worker died."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = counts(redis_url, task)
        done = sum(current.get(k, 0) for k in OUTCOMES)
        if done >= total:
            return current
        for proc in workers:
            assert proc.poll() is None, f"worker exited with {proc.returncode} before finishing"
        assert time.monotonic() < deadline, (
            f"only {done}/{total} outcomes after {timeout_s}s: {current}"
        )
        time.sleep(0.5)


def outputs_by_id(bootstrap: str, task: TaskConfig, roles: tuple[str, ...]) -> dict[str, list]:
    """id -> [(role, raw value), ...] across the given output topics."""
    seen: dict[str, list] = defaultdict(list)
    for role in roles:
        for value in read_topic(
            kafka_at(bootstrap),
            task.topic(role),
            from_beginning=True,
            max_messages=None,
            timeout_s=3.0,
        ):
            seen[json.loads(value)["id"]].append((role, value))
    return seen


def stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        stop_process(proc)


def children_of(pid: int) -> set[int]:
    """The running processes whose parent is `pid` (from Linux's /proc)."""
    stats = (_stat(int(path.name)) for path in Path("/proc").glob("[0-9]*"))
    return {child for child, state, parent in filter(None, stats) if parent == pid and state != "Z"}


def wait_until_gone(pids: set[int], timeout_s: float) -> set[int]:
    """The pids still running (zombies count as gone) after waiting up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = {pid for pid in pids if (stat := _stat(pid)) and stat[1] != "Z"}
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(pid, state, parent pid), or None when there is no such process."""
    try:
        state, parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except OSError:
        return None
    return pid, state, int(parent)


def good_values(rows: list[dict]) -> list[tuple[bytes, bytes]]:
    """(key, value) of valid `texts` messages for rows of `texts()`."""
    return [(row["id"].encode(), encode(TextIn(**row))) for row in rows]
