"""`loopline infra` on real processes, in a state dir and on ports of its own.

The module starts one stack through the command line and stops it at the end; the last test
stops it itself and checks that `status` then fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer

from loopline.streams.local import services
from loopline.streams.local.services import free_port
from loopline.streams.settings import Settings

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]
    state_dir: Path
    kafka_port: int
    redis_port: int

    def infra(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "loopline.streams.cli", "infra", *args]
        return subprocess.run(
            command, env=env or self.env, capture_output=True, text=True, timeout=600
        )

    def up(self) -> subprocess.CompletedProcess[str]:
        return self.infra(
            "up", "--kafka-port", str(self.kafka_port), "--redis-port", str(self.redis_port)
        )

    def pids(self) -> dict[str, int]:
        records = self.state_dir.glob("*/service.json")
        return {record.parent.name: json.loads(record.read_text())["pid"] for record in records}


def one_line(text: str) -> str:
    """The terminal-width line breaks rich puts into messages, undone."""
    return " ".join(text.split())


def clean_env(state_dir: Path) -> dict[str, str]:
    """No `LOOPLINE_*` service variables from the calling shell: this launcher starts its own."""
    env = {
        name: value for name, value in os.environ.items() if name not in services.ENV_VARS.values()
    }
    return {**env, "LOOPLINE_STATE_DIR": str(state_dir)}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state_dir = tmp_path_factory.mktemp("infra-state")
    stack = Stack(clean_env(state_dir), state_dir, kafka_port=free_port(2), redis_port=free_port())
    first = stack.up()
    assert first.returncode == 0, first.stderr
    yield stack
    services.down(Settings(state_dir=state_dir))


def test_up_prints_the_endpoints_and_status_agrees(stack: Stack) -> None:
    status = stack.infra("status")

    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines() == [
        f"LOOPLINE_KAFKA_BOOTSTRAP=127.0.0.1:{stack.kafka_port}",
        f"LOOPLINE_REDIS_URL=redis://127.0.0.1:{stack.redis_port}/0",
    ]
    assert "Kafka" in status.stderr and "Redis" in status.stderr


def test_status_lines_can_be_evaluated_by_a_shell(stack: Stack) -> None:
    script = (
        'eval "$(python -m loopline.streams.cli infra status)"; '
        'echo "$LOOPLINE_KAFKA_BOOTSTRAP $LOOPLINE_REDIS_URL"'
    )
    env = {**stack.env, "PATH": f"{Path(sys.executable).parent}:{stack.env['PATH']}"}

    shell = subprocess.run(
        ["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120
    )

    assert shell.stdout.split() == [
        f"127.0.0.1:{stack.kafka_port}",
        f"redis://127.0.0.1:{stack.redis_port}/0",
    ]


def test_a_second_up_reuses_the_running_services(stack: Stack) -> None:
    before = stack.pids()

    second = stack.up()

    assert second.returncode == 0, second.stderr
    assert "Starting" not in second.stderr
    assert stack.pids() == before
    assert set(before) == {"kafka", "redis"}


def test_a_message_goes_through_kafka(stack: Stack) -> None:
    bootstrap, topic = f"127.0.0.1:{stack.kafka_port}", f"infra-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    producer.send(topic, key=b"id-1", value=b"hello").get(timeout=30)
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=topic,
        auto_offset_reset="earliest",
        consumer_timeout_ms=30_000,
    )
    message = next(iter(consumer))
    consumer.close()

    assert (message.key, message.value) == (b"id-1", b"hello")


def test_a_value_goes_through_redis(stack: Stack) -> None:
    client = redis.Redis.from_url(f"redis://127.0.0.1:{stack.redis_port}/0")
    client.set("loopline:infra-test", "42")

    assert client.get("loopline:infra-test") == b"42"
    client.close()


def test_up_uses_a_kafka_named_in_the_environment_and_starts_no_other(
    stack: Stack, tmp_path: Path
) -> None:
    other_state = tmp_path / "other-state"
    env = {
        **clean_env(other_state),
        "LOOPLINE_KAFKA_BOOTSTRAP": f"127.0.0.1:{stack.kafka_port}",
        "LOOPLINE_REDIS_URL": f"redis://127.0.0.1:{stack.redis_port}/0",
    }

    result = stack.infra("up", env=env)

    assert result.returncode == 0, result.stderr
    assert f"Using existing Kafka at 127.0.0.1:{stack.kafka_port}" in one_line(result.stderr)
    assert not (other_state / "kafka").exists()
    assert not (other_state / "redis").exists()


def test_up_fails_when_the_named_kafka_does_not_answer(stack: Stack, tmp_path: Path) -> None:
    env = {**clean_env(tmp_path / "state"), "LOOPLINE_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}

    result = stack.infra("up", env=env)

    assert result.returncode != 0
    assert "no Kafka answers there" in one_line(result.stderr)
    assert not (tmp_path / "state" / "kafka").exists()


def test_down_stops_everything_and_status_then_fails(stack: Stack) -> None:
    pids = stack.pids()

    down = stack.infra("down")
    status = stack.infra("status")

    assert down.returncode == 0, down.stderr
    assert status.returncode != 0
    assert status.stdout == ""
    assert all(exited(pid) for pid in pids.values())


def exited(pid: int) -> bool:
    """Gone, or a zombie its parent (init, once `infra up` has exited) has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def test_the_llm_server_fixture_answers_chat_completions(llm_server: str) -> None:
    """The launcher's LLM path (`loopline llm serve` in the background), as other tests get it."""
    request = {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 8,
    }

    response = httpx.post(f"{llm_server}/chat/completions", json=request, timeout=120)

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].strip()


def test_a_broker_that_cannot_start_fails_with_the_tail_of_its_log(tmp_path: Path) -> None:
    """Data from another node: Kafka exits at once, and `up` says why instead of waiting."""
    meta = tmp_path / "state" / "kafka" / "data" / "meta.properties"
    meta.parent.mkdir(parents=True)
    meta.write_text(f"version=1\nnode.id=2\ncluster.id={services.kafka_cluster_id()}\n")
    stack = Stack(clean_env(tmp_path / "state"), tmp_path / "state", free_port(2), free_port())

    try:
        result = stack.up()
    finally:
        services.down(Settings(state_dir=tmp_path / "state"))

    assert result.returncode != 0
    assert "Kafka stopped while starting" in one_line(result.stderr)
    assert "Stored node id 2 doesn't match" in one_line(result.stderr)
