"""The launcher's pure parts and its refusals, without starting any service."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import pytest

from loopline.schemas.errors import ServiceError
from loopline.streams.local import services, tls
from loopline.streams.local.services import free_port
from loopline.streams.settings import Settings


@pytest.fixture(autouse=True)
def no_existing_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shell that ran `eval "$(loopline infra status)"` must not change what these tests see."""
    for env_var in services.ENV_VARS.values():
        monkeypatch.delenv(env_var, raising=False)


def parse_properties(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


def test_server_properties_make_a_single_node_kraft_cluster(tmp_path: Path) -> None:
    properties = parse_properties(services.kafka_server_properties(19100, tmp_path / "data"))

    assert properties["process.roles"] == "broker,controller"
    assert properties["controller.quorum.voters"] == "1@127.0.0.1:19101"
    assert properties["listeners"] == "PLAINTEXT://127.0.0.1:19100,CONTROLLER://127.0.0.1:19101"
    assert properties["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19100"
    assert properties["log.dirs"] == str(tmp_path / "data")
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
    ):
        assert properties[key] == "1", key
    assert properties["group.initial.rebalance.delay.ms"] == "0"


def test_log4j_properties_write_to_the_given_file(tmp_path: Path) -> None:
    properties = parse_properties(services.kafka_log4j_properties(tmp_path / "kafka.log"))

    assert properties["log4j.appender.file.File"] == str(tmp_path / "kafka.log")
    assert properties["log4j.rootLogger"].endswith(", file")


def test_cluster_ids_are_fresh_and_in_kafkas_format() -> None:
    ids = {services.kafka_cluster_id() for _ in range(20)}

    assert len(ids) == 20
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id) for cluster_id in ids)


def test_env_lines_survive_a_shell_eval() -> None:
    endpoints = services.Endpoints(
        kafka_bootstrap="127.0.0.1:39092",
        redis_url="redis://:p a$s@127.0.0.1:36379/0",
        llm_base_url="http://127.0.0.1:38080/v1",
        llm_model="smollm2-135m",
    )
    script = (
        "\n".join(endpoints.env_lines())
        + "\n"
        + 'printf "%s\\n" "$LOOPLINE_REDIS_URL" "$LOOPLINE_LLM_MODEL"'
    )

    shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)

    assert shell.stdout.splitlines() == ["redis://:p a$s@127.0.0.1:36379/0", "smollm2-135m"]


def test_env_lines_leave_out_an_absent_llm() -> None:
    lines = services.Endpoints("127.0.0.1:39092", "redis://127.0.0.1:36379/0").env_lines()

    assert [line.split("=", 1)[0] for line in lines] == [
        "LOOPLINE_KAFKA_BOOTSTRAP",
        "LOOPLINE_REDIS_URL",
    ]


def test_endpoints_need_both_kafka_and_redis_to_answer() -> None:
    kafka = services.ServiceState("kafka", "127.0.0.1:1", True, "pid 1")
    redis_down = services.ServiceState("redis", "redis://127.0.0.1:2/0", False, "pid 2")
    redis_up = services.ServiceState("redis", "redis://127.0.0.1:2/0", True, "pid 2")
    llm = services.ServiceState("llm", "http://127.0.0.1:3/v1", True, "pid 3", "smollm2-135m")

    assert services.endpoints_of([kafka, redis_down, llm]) is None
    assert services.endpoints_of([kafka, redis_up, llm]) == services.Endpoints(
        "127.0.0.1:1", "redis://127.0.0.1:2/0", "http://127.0.0.1:3/v1", "smollm2-135m"
    )


def test_health_url_sits_beside_the_openai_api() -> None:
    assert services.health_url("http://127.0.0.1:38080/v1") == "http://127.0.0.1:38080/health"
    assert services.health_url("http://127.0.0.1:38080/v1/") == "http://127.0.0.1:38080/health"


@pytest.mark.parametrize(
    ("command", "service", "package", "env_var"),
    [
        ("java", "kafka", "openjdk-17-jre-headless", "LOOPLINE_KAFKA_BOOTSTRAP"),
        ("mvn", "kafka", "maven", "LOOPLINE_KAFKA_BOOTSTRAP"),
        ("redis-server", "redis", "redis-server", "LOOPLINE_REDIS_URL"),
    ],
)
def test_missing_tool_message_says_what_to_install(
    command: str, service: str, package: str, env_var: str
) -> None:
    message = services.missing_tool_message(command, service)

    assert f"`{command}`" in message
    assert f"apt-get install -y {package}" in message
    assert env_var in message


def test_a_missing_tool_stops_the_start_with_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing installed

    with pytest.raises(ServiceError, match="apt-get install -y redis-server"):
        services.ensure_redis(Settings(state_dir=tmp_path / "state"), free_port())


def test_a_taken_port_stops_the_start_and_names_the_port(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind((services.HOST, port))
        squatter.listen()

        with pytest.raises(ServiceError, match=f"Port {port} on 127.0.0.1 is taken"):
            services.ensure_redis(Settings(state_dir=tmp_path / "state"), port)


def test_a_stale_pid_file_is_recognised_and_removed(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    record = tmp_path / "kafka" / "service.json"
    record.parent.mkdir()
    stale = services.Process(gone.pid, "127.0.0.1:1", "server.properties", [])
    record.write_text(json.dumps(stale.__dict__))

    states = services.report(Settings(state_dir=tmp_path))

    assert states[0] == services.ServiceState("kafka", None, False, "not running")
    assert not record.exists()


def test_a_reused_pid_is_not_taken_for_the_service(tmp_path: Path) -> None:
    """The pid is alive, but the program there is not the Kafka this state dir started."""
    with subprocess.Popen(["sleep", "30"]) as stranger:
        record = tmp_path / "kafka" / "service.json"
        record.parent.mkdir()
        record.write_text(
            json.dumps(
                services.Process(stranger.pid, "127.0.0.1:1", "server.properties", []).__dict__
            )
        )

        assert services.status(Settings(state_dir=tmp_path)) is None
        assert services.down(Settings(state_dir=tmp_path)) == []
        assert stranger.poll() is None
        stranger.kill()


def test_a_secure_broker_takes_only_sasl_ssl_with_plain_and_scram(tmp_path):
    files = tls.generate(tmp_path / "tls", "127.0.0.1")
    properties = parse_properties(
        services.kafka_server_properties(19100, tmp_path / "data", (files, "pw"))
    )
    assert properties["listeners"] == "SASL_SSL://127.0.0.1:19100,CONTROLLER://127.0.0.1:19101"
    assert properties["inter.broker.listener.name"] == "SASL_SSL"
    assert properties["sasl.enabled.mechanisms"] == "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    assert 'user_loopline="pw"' in properties["listener.name.sasl_ssl.plain.sasl.jaas.config"]
    assert properties["ssl.truststore.location"] == str(files.ca_file)
    client = services.secure_client(files, "pw")
    lines = services.Endpoints("127.0.0.1:19100", "redis://x", kafka_client=client).env_lines()
    assert "LOOPLINE_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in lines
    assert f"LOOPLINE_KAFKA_SSL_CAFILE={files.ca_file}" in lines


def test_own_services_ignore_services_and_security_the_environment_names(monkeypatch, tmp_path):
    monkeypatch.setenv("LOOPLINE_KAFKA_BOOTSTRAP", "elsewhere:9092")
    monkeypatch.setenv("LOOPLINE_REDIS_URL", "redis://elsewhere:6379/0")
    monkeypatch.setenv("LOOPLINE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    own = services.own_services(tmp_path)
    assert not any(services._is_external(own, name) for name in services.SERVICES)
    assert own.kafka_security_protocol == "PLAINTEXT"
    assert own.state_dir == tmp_path
