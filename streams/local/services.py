"""Local Kafka, Redis and LLM server as plain processes, for development, tests and CI.

Why plain processes: the machines loopline targets have Java, Maven and Debian's
`redis-server`, but often no Docker engine. Each service keeps its data, logs and a
`service.json` (pid, address) in `<state_dir>/<service>/`, so launchers with different
state dirs and ports run side by side, and `up` can tell a running service from a stale
pid file. A service named by `LOOPLINE_KAFKA_BOOTSTRAP`, `LOOPLINE_REDIS_URL` or
`LOOPLINE_LLM_BASE_URL` is never started, only checked.

    endpoints = up(Settings())          # idempotent; waits until every service answers
    up(Settings(), kafka_security="SASL_SSL")   # Kafka with TLS and SASL (PLAIN, SCRAM)
    status(Settings())                  # Endpoints when Kafka and Redis answer, else None
    down(Settings())                    # stops what `up` started, nothing else
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import random
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Literal

import httpx
import redis
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape

from loopline.schemas.errors import ServiceError
from loopline.streams.connections import kafka_options
from loopline.streams.local import tls
from loopline.streams.settings import (
    LOCAL_KAFKA_PORT,
    LOCAL_LLM_PORT,
    LOCAL_REDIS_PORT,
    Settings,
)

HOST = "127.0.0.1"
# Kafka's own start scripts' heap and collector settings (kafka-server-start.sh,
# kafka-run-class.sh): a 20 ms pause target instead of the JVM's default 200 ms.
KAFKA_JVM = [
    "-Xms1g", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
]  # fmt: skip
KAFKA_START_TIMEOUT_S = 120.0
REDIS_START_TIMEOUT_S = 30.0
# The first start of an LLM server downloads and verifies its weights.
LLM_START_TIMEOUT_S = 1200.0
EXISTING_SERVICE_TIMEOUT_S = 10.0
STOP_GRACE_S = 30.0
# The user the SASL_SSL broker knows, under PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 alike.
KAFKA_USER = "loopline"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
KafkaSecurity = Literal["PLAINTEXT", "SASL_SSL"]

SERVICES = ("kafka", "redis", "llm")
TITLES = {"kafka": "Kafka", "redis": "Redis", "llm": "LLM server"}
ENV_VARS = {
    "kafka": "LOOPLINE_KAFKA_BOOTSTRAP",
    "redis": "LOOPLINE_REDIS_URL",
    "llm": "LOOPLINE_LLM_BASE_URL",
}
# Settings fields that, when given, name a running service to use instead of starting one.
EXTERNAL_FIELDS = {"kafka": "kafka_bootstrap", "redis": "redis_url", "llm": "llm_base_url"}
APT_PACKAGES = {"java": "openjdk-17-jre-headless", "mvn": "maven", "redis-server": "redis-server"}


@dataclass(frozen=True)
class LocalPorts:
    """Where the launcher's own services listen. Kafka's controller takes `kafka + 1`."""

    kafka: int = LOCAL_KAFKA_PORT
    redis: int = LOCAL_REDIS_PORT
    llm: int = LOCAL_LLM_PORT


@dataclass(frozen=True)
class Endpoints:
    """Where the services answer, in the form the `LOOPLINE_*` settings take."""

    kafka_bootstrap: str
    redis_url: str
    llm_base_url: str | None = None
    llm_model: str | None = None
    kafka_client: dict[str, str] = field(default_factory=dict)

    def env_lines(self) -> list[str]:
        """`NAME=value` lines a POSIX shell can `eval`."""
        values = {
            "LOOPLINE_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            **{f"LOOPLINE_{name.upper()}": value for name, value in self.kafka_client.items()},
            "LOOPLINE_REDIS_URL": self.redis_url,
            "LOOPLINE_LLM_BASE_URL": self.llm_base_url,
            "LOOPLINE_LLM_MODEL": self.llm_model,
        }
        return [f"{name}={shlex.quote(value)}" for name, value in values.items() if value]


@dataclass(frozen=True)
class Process:
    """A process the launcher started, as recorded in `<state_dir>/<service>/service.json`.

    `marker` is a piece of the process's command line: a pid that the system has reused
    for another program is not mistaken for the service. `client` holds the Settings fields
    besides the address that a client needs (a secure broker's protocol, user, CA file).
    """

    pid: int
    address: str
    marker: str
    logs: list[str]
    model: str | None = None
    client: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceState:
    """One line of `loopline infra status`."""

    name: str
    address: str | None
    answers: bool
    how: str
    model: str | None = None
    client: dict[str, str] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return TITLES[self.name]


# --- pure parts: configuration files, commands, messages -------------------------------


def kafka_server_properties(
    port: int, data_dir: Path, security: tuple[tls.BrokerTLS, str] | None = None
) -> str:
    """A single-node KRaft broker and controller in one process, on `port` and `port + 1`.

    With `security` (the broker's TLS files and the user's password), clients connect with
    SASL_SSL only: TLS with the throwaway CA, then PLAIN or SCRAM-SHA-256/512.
    """
    listener = "SASL_SSL" if security else "PLAINTEXT"
    properties = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{port + 1}",
        "listeners": f"{listener}://{HOST}:{port},CONTROLLER://{HOST}:{port + 1}",
        "advertised.listeners": f"{listener}://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": listener,
        "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:PLAINTEXT",
        **(sasl_ssl_properties(*security) if security else {}),
        "log.dirs": str(data_dir),
        "num.partitions": "4",
        "auto.create.topics.enable": "true",
        # One broker: internal topics cannot have more replicas, and nothing waits for peers.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def sasl_ssl_properties(files: tls.BrokerTLS, password: str) -> dict[str, str]:
    """The SASL_SSL listener: the broker's certificate, PLAIN users in its JAAS config, SCRAM
    users in the cluster metadata (added when the storage is formatted)."""
    plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{KAFKA_USER}" password="{password}" user_{KAFKA_USER}="{password}";'
    )
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return {
        "sasl.enabled.mechanisms": ",".join(("PLAIN", *SCRAM_MECHANISMS)),
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.sasl_ssl.plain.sasl.jaas.config": plain,
        **{
            f"listener.name.sasl_ssl.{mechanism.lower()}.sasl.jaas.config": scram
            for mechanism in SCRAM_MECHANISMS
        },
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(files.keystore),
        "ssl.keystore.password": files.keystore_password,
        "ssl.key.password": files.keystore_password,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(files.ca_file),
    }


def secure_client(files: tls.BrokerTLS, password: str) -> dict[str, str]:
    """The Settings fields a client of the SASL_SSL broker needs (SCRAM-SHA-512 by default;
    PLAIN and SCRAM-SHA-256 work with the same user)."""
    return {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": KAFKA_USER,
        "kafka_sasl_password": password,
        "kafka_ssl_cafile": str(files.ca_file),
    }


def kafka_log4j_properties(log_file: Path) -> str:
    """Broker logs go to a bounded file, not to the terminal that ran `infra up`."""
    return (
        "log4j.rootLogger=INFO, file\n"
        "log4j.appender.file=org.apache.log4j.RollingFileAppender\n"
        f"log4j.appender.file.File={log_file}\n"
        "log4j.appender.file.MaxFileSize=20MB\n"
        "log4j.appender.file.MaxBackupIndex=2\n"
        "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
    )


def kafka_cluster_id() -> str:
    """A fresh cluster id in Kafka's format: 16 random bytes, URL-safe base64, no padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def missing_tool_message(command: str, service: str) -> str:
    return (
        f"{TITLES[service]} needs `{command}`, which is not installed (not on PATH). "
        f"Install it with `sudo apt-get install -y {APT_PACKAGES[command]}` (or run "
        f"`make setup`), or set {ENV_VARS[service]} to use a {TITLES[service]} that already runs."
    )


def port_taken_message(port: int, service: str) -> str:
    return (
        f"Port {port} on {HOST} is taken by another program, so {TITLES[service]} cannot start "
        f"there. Stop that program, choose other ports (`loopline infra up --{service}-port N`), "
        f"or set {ENV_VARS[service]} to use a {TITLES[service]} that already runs."
    )


def health_url(llm_base_url: str) -> str:
    """llama.cpp-style servers answer `/health` beside the OpenAI API, not under `/v1`."""
    return llm_base_url.rstrip("/").removesuffix("/v1") + "/health"


# --- the public API ---------------------------------------------------------------------


def up(
    settings: Settings,
    llm_model: str | None = None,
    ports: LocalPorts = LocalPorts(),
    console: Console | None = None,
    kafka_security: KafkaSecurity = "PLAINTEXT",
) -> Endpoints:
    """Start (or reuse) Kafka and Redis, and the LLM server when `llm_model` is given."""
    console = console or Console(stderr=True)
    kafka_bootstrap = ensure_kafka(settings, ports.kafka, console, security=kafka_security)
    redis_url = ensure_redis(settings, ports.redis, console)
    llm_base_url = ensure_llm(settings, llm_model, ports.llm, console) if llm_model else None
    return Endpoints(kafka_bootstrap, redis_url, llm_base_url, llm_model, kafka_client(settings))


def own_services(state_dir: Path) -> Settings:
    """Settings of a launcher that always starts services of its own in `state_dir`, whatever
    the environment names (benchmarks and tests that kill them must never reach others)."""
    borrowed = {name for name in Settings.model_fields if name.startswith("kafka_")}
    borrowed |= set(EXTERNAL_FIELDS.values())
    values = Settings().model_dump(exclude=borrowed)
    return Settings.model_construct(**(values | {"state_dir": state_dir}))


def kafka_client(settings: Settings) -> dict[str, str]:
    """What clients of the launcher's broker need besides its address (empty: PLAINTEXT)."""
    if _is_external(settings, "kafka"):
        return {}
    process = _running(_home(settings, "kafka"))
    return process.client if process else {}


def client_settings(settings: Settings, client: dict[str, str]) -> Settings:
    """`settings` with a launcher broker's client fields (protocol, user, CA) applied."""
    return settings.model_copy(
        update=Settings.model_validate(client).model_dump(include=set(client))
    )


def status(settings: Settings) -> Endpoints | None:
    """Where the services answer, or None unless both Kafka and Redis do."""
    return endpoints_of(report(settings))


def endpoints_of(states: list[ServiceState]) -> Endpoints | None:
    by_name = {state.name: state for state in states if state.answers}
    if "kafka" not in by_name or "redis" not in by_name:
        return None
    llm = by_name.get("llm")
    return Endpoints(
        kafka_bootstrap=by_name["kafka"].address,
        redis_url=by_name["redis"].address,
        llm_base_url=llm.address if llm else None,
        llm_model=llm.model if llm else None,
        kafka_client=by_name["kafka"].client,
    )


def report(settings: Settings) -> list[ServiceState]:
    """Each service's address and whether it answers; the LLM only when one is configured."""
    states = [_state(settings, name) for name in SERVICES]
    return [state for state in states if state.name != "llm" or state.address]


def down(
    settings: Settings, names: tuple[str, ...] = SERVICES, console: Console | None = None
) -> list[str]:
    """Stop what `up` started in this state dir (SIGTERM, then SIGKILL); return the names."""
    console = console or Console(stderr=True)
    stopped = []
    for name in names:
        home = _home(settings, name)
        process = _running(home, console)
        if process is None:
            continue
        _terminate(process)
        _record_path(home).unlink(missing_ok=True)
        console.print(f"{TITLES[name]} stopped (pid {process.pid}).")
        stopped.append(name)
    return stopped


def kill(settings: Settings, name: str) -> int | None:
    """SIGKILL a service `up` started here, as a crash would (for chaos runs); its pid, or
    None when it was not running. `ensure_<name>` starts it again on its data."""
    home = _home(settings, name)
    process = _running(home)
    if process is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        # Started in a session of its own: its group holds whatever it spawned (the LLM
        # server's worker keeps the port otherwise).
        if os.getpgid(process.pid) == process.pid != os.getpgid(0):
            os.killpg(process.pid, signal.SIGKILL)
        else:
            os.kill(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while _alive(process) and time.monotonic() < deadline:
        time.sleep(0.05)
    _record_path(home).unlink(missing_ok=True)
    return process.pid


def ensure_kafka(
    settings: Settings,
    port: int = LOCAL_KAFKA_PORT,
    console: Console | None = None,
    *,
    security: KafkaSecurity = "PLAINTEXT",
) -> str:
    """The bootstrap address of a Kafka that answers, starting one if needed.

    `security="SASL_SSL"` starts a broker that takes only SASL_SSL clients; `kafka_client`
    then tells what they need. A broker that already runs is reused as it is.
    """
    console = console or Console(stderr=True)
    if _is_external(settings, "kafka"):
        answers = partial(kafka_answers, settings=settings)
        return _use_existing("kafka", settings.kafka_bootstrap, answers, console)
    home = _home(settings, "kafka")
    process = _running(home, console) or _start_kafka(settings, home, port, console, security)
    answers = partial(kafka_answers, settings=client_settings(settings, process.client))
    _wait_until_answers("kafka", process, answers, KAFKA_START_TIMEOUT_S, console)
    return process.address


def ensure_redis(
    settings: Settings, port: int = LOCAL_REDIS_PORT, console: Console | None = None
) -> str:
    """The URL of a Redis that answers PING, starting one if needed."""
    console = console or Console(stderr=True)
    if _is_external(settings, "redis"):
        return _use_existing("redis", settings.redis_url, redis_answers, console)
    home = _home(settings, "redis")
    process = _running(home, console) or _start_redis(home, port, console)
    _wait_until_answers("redis", process, redis_answers, REDIS_START_TIMEOUT_S, console)
    return process.address


def ensure_llm(
    settings: Settings, model: str, port: int = LOCAL_LLM_PORT, console: Console | None = None
) -> str:
    """The base URL of an OpenAI-compatible server for `model`, starting `loopline llm serve`."""
    console = console or Console(stderr=True)
    if _is_external(settings, "llm"):
        answers = partial(openai_answers, api_key=settings.llm_api_key)
        return _use_existing("llm", settings.llm_base_url, answers, console)
    home = _home(settings, "llm")
    process = _running(home, console)
    if process and process.model != model:
        console.print(f"LLM server runs {process.model}; restarting it with {model}.")
        down(settings, ("llm",), console)
        process = None
    process = process or _start_llm(settings, home, model, port, console)
    _wait_until_answers("llm", process, llm_answers, LLM_START_TIMEOUT_S, console)
    return process.address


def resolve_kafka_jars(cache_dir: Path, console: Console | None = None) -> Path:
    """The broker's jars, from Maven Central once per pom and shared by every state dir."""
    console = console or Console(stderr=True)
    pom = (resources.files("loopline.streams.local") / "resources" / "kafka-pom.xml").read_bytes()
    home = cache_dir.expanduser().resolve() / f"kafka-{hashlib.sha256(pom).hexdigest()[:12]}"
    libs = home / "libs"
    if libs.is_dir():
        return libs
    _require("java", "kafka")
    mvn = _require("mvn", "kafka")
    home.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="resolving-", dir=home))
    (work / "pom.xml").write_bytes(pom)
    command = [mvn, "-q", "-B", "-Dstyle.color=never", "dependency:copy-dependencies",
               f"-DoutputDirectory={work / 'libs'}", "-DincludeScope=runtime"]  # fmt: skip
    console.print("Resolving the Kafka broker's jars from Maven Central (once, ~30 s) ...")
    with console.status("mvn dependency:copy-dependencies"):
        result = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise ServiceError(
            "Maven could not resolve the Kafka jars; is Maven Central reachable (or a mirror "
            f"set in ~/.m2/settings.xml)? `{shlex.join(command)}` said:\n"
            + _last_lines(result.stdout + result.stderr)
        )
    with contextlib.suppress(OSError):  # another launcher finished first; its jars are the same
        (work / "libs").rename(libs)
    shutil.rmtree(work, ignore_errors=True)
    return libs


def kafka_answers(bootstrap: str, settings: Settings | None = None) -> bool:
    """A real metadata request (as a client with `settings`' security): the broker is
    registered and serves clients."""
    options = kafka_options(
        (settings or Settings()).model_copy(update={"kafka_bootstrap": bootstrap})
    )
    try:
        with (
            _quiet("kafka"),
            KafkaAdminClient(
                **options, bootstrap_timeout_ms=2000, request_timeout_ms=3000
            ) as admin,
        ):
            return bool(admin.describe_cluster()["brokers"])
    except (KafkaError, OSError):
        return False


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def llm_answers(base_url: str) -> bool:
    """The launcher's own server: `/health` is 200 once the weights are loaded."""
    try:
        return httpx.get(health_url(base_url), timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def openai_answers(base_url: str, api_key: SecretStr | None = None) -> bool:
    """Any OpenAI-compatible server lists its models; only llama.cpp's has `/health`."""
    headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key else {}
    try:
        return httpx.get(f"{base_url.rstrip('/')}/models", headers=headers, timeout=5).is_success
    except httpx.HTTPError:
        return False


PROBES: dict[str, Callable[[str], bool]] = {
    "kafka": kafka_answers,
    "redis": redis_answers,
    "llm": llm_answers,
}


# --- starting -----------------------------------------------------------------------------


def _start_kafka(
    settings: Settings, home: Path, port: int, console: Console, security: KafkaSecurity
) -> Process:
    java = _require("java", "kafka")
    _require_free_ports("kafka", port, port + 1)
    libs = resolve_kafka_jars(settings.cache_dir, console)
    data_dir = home / "data"
    server_properties, log4j = home / "server.properties", home / "log4j.properties"
    home.mkdir(parents=True, exist_ok=True)
    secure, client = None, {}
    if security == "SASL_SSL":
        # A fresh CA and password each start; the data (and its SCRAM users) from scratch.
        shutil.rmtree(data_dir, ignore_errors=True)
        secure = (tls.generate(home / "tls", HOST), secrets.token_urlsafe(16))
        client = secure_client(*secure)
    server_properties.write_text(kafka_server_properties(port, data_dir, secure))
    server_properties.chmod(0o600)
    log4j.write_text(kafka_log4j_properties(home / "kafka.log"))
    java_args = [java, *KAFKA_JVM, "-Djava.awt.headless=true",
                 f"-Dlog4j.configuration=file:{log4j}", "-cp", f"{libs}/*"]  # fmt: skip
    if not (data_dir / "meta.properties").exists():
        scram_users = secure[1] if secure else None
        _format_kafka_storage(java_args, server_properties, scram_users)
    console.print(f"Starting Kafka ({security}) on {HOST}:{port} (controller on {port + 1}) ...")
    pid = _spawn([*java_args, "kafka.Kafka", str(server_properties)], home / "stdout.log")
    logs = [str(home / "stdout.log"), str(home / "kafka.log")]
    return _record(
        home, Process(pid, f"{HOST}:{port}", str(server_properties), logs, client=client)
    )


def _format_kafka_storage(
    java_args: list[str], server_properties: Path, scram_password: str | None
) -> None:
    command = [*java_args, "kafka.tools.StorageTool", "format", "--ignore-formatted",
               "--cluster-id", kafka_cluster_id(), "--config", str(server_properties)]  # fmt: skip
    for mechanism in SCRAM_MECHANISMS if scram_password else ():
        command += ["--add-scram", f"{mechanism}=[name={KAFKA_USER},password={scram_password}]"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(
            f"Formatting Kafka's storage failed:\n{_last_lines(result.stdout + result.stderr)}"
        )


def _start_redis(home: Path, port: int, console: Console) -> Process:
    redis_server = _require("redis-server", "redis")
    _require_free_ports("redis", port)
    home.mkdir(parents=True, exist_ok=True)
    pid_file, log_file = home / "redis.pid", home / "redis.log"
    pid_file.unlink(missing_ok=True)
    console.print(f"Starting Redis on {HOST}:{port} ...")
    command = [redis_server, "--daemonize", "yes", "--bind", HOST, "--port", str(port), "--dir",
               str(home), "--pidfile", str(pid_file), "--logfile", str(log_file)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(
            f"redis-server did not start:\n{_last_lines(result.stdout + result.stderr)}"
        )
    # The daemon writes its pid file once it listens; it exits instead when it cannot.
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while not (pid_file.exists() and pid_file.read_text().strip()):  # written, not just created
        if time.monotonic() > deadline:
            raise ServiceError(f"Redis did not start on port {port}.\n{_log_tails([log_file])}")
        time.sleep(0.05)
    pid = int(pid_file.read_text().strip())
    address, marker = f"redis://{HOST}:{port}/0", f"redis-server {HOST}:{port}"
    return _record(home, Process(pid, address, marker, [str(log_file)]))


def _start_llm(settings: Settings, home: Path, model: str, port: int, console: Console) -> Process:
    _require_free_ports("llm", port)
    home.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "loopline.streams.cli", "llm", "serve",
               "--model", model, "--port", str(port)]  # fmt: skip
    # The server reads its own settings; pass on what this launcher was given in code.
    env = {**os.environ, "LOOPLINE_CACHE_DIR": str(settings.cache_dir.expanduser().resolve())}
    console.print(f"Starting the LLM server ({model}) on {HOST}:{port} ...")
    log_file = home / "llm.log"
    pid = _spawn(command, log_file, env)
    address, marker = f"http://{HOST}:{port}/v1", shlex.join(command[1:])
    return _record(home, Process(pid, address, marker, [str(log_file)], model))


def _spawn(command: list[str], log_file: Path, env: dict[str, str] | None = None) -> int:
    """Run in its own session, output to a file: it outlives this process and holds no terminal."""
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_file.parent,
            env=env,
            start_new_session=True,
        )
    return process.pid


# --- waiting and checking -----------------------------------------------------------------


def _wait_until_answers(
    name: str,
    process: Process,
    answers: Callable[[str], bool],
    timeout_s: float,
    console: Console,
) -> None:
    logs = [Path(log) for log in process.logs]
    started = time.monotonic()
    with console.status(f"Waiting for {TITLES[name]} at {process.address}") as progress:
        while not answers(process.address):
            waited = time.monotonic() - started
            if not _alive(process):
                raise ServiceError(
                    f"{TITLES[name]} stopped while starting. Fix what its log says and run "
                    f"`loopline infra up` again; removing {logs[0].parent} starts it from "
                    f"scratch, without its data.\n{_log_tails(logs)}"
                )
            if waited > timeout_s:
                raise ServiceError(
                    f"{TITLES[name]} did not answer at {process.address} within {timeout_s:.0f} s "
                    f"(pid {process.pid} still runs; `loopline infra down` stops it).\n"
                    + _log_tails(logs)
                )
            last_line = escape(_last_lines(_read_tail(logs[-1]), 1)[:100])
            progress.update(
                f"Waiting for {TITLES[name]} at {process.address} ({waited:.0f} s) {last_line}"
            )
            time.sleep(0.5)
    console.print(f"{TITLES[name]} answers at {process.address} (pid {process.pid}).")


def _use_existing(name: str, address: str, answers: Callable[[str], bool], console: Console) -> str:
    """A service named in the environment is only checked, never started."""
    console.print(f"Using existing {TITLES[name]} at {address} ({ENV_VARS[name]}).")
    deadline = time.monotonic() + EXISTING_SERVICE_TIMEOUT_S
    while not answers(address):
        if time.monotonic() > deadline:
            raise ServiceError(
                f"{ENV_VARS[name]}={address} is set, but no {TITLES[name]} answers there. "
                f"Start it, or unset {ENV_VARS[name]} so that `loopline infra up` starts one."
            )
        time.sleep(0.5)
    return address


def _state(settings: Settings, name: str) -> ServiceState:
    if _is_external(settings, name):
        address = getattr(settings, EXTERNAL_FIELDS[name])
        if name == "llm":
            answers = openai_answers(address, settings.llm_api_key)
            return ServiceState(
                name, address, answers, f"from {ENV_VARS[name]}", settings.llm_model
            )
        probe = partial(kafka_answers, settings=settings) if name == "kafka" else PROBES[name]
        return ServiceState(name, address, probe(address), f"from {ENV_VARS[name]}")
    process = _running(_home(settings, name))
    if process is None:
        return ServiceState(name, None, False, "not running")
    if name == "kafka":
        answers = kafka_answers(process.address, client_settings(settings, process.client))
    else:
        answers = PROBES[name](process.address)
    how = f"pid {process.pid}" + (
        f", {process.client['kafka_security_protocol']}" if process.client else ""
    )
    return ServiceState(name, process.address, answers, how, process.model, process.client)


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Connection-refused errors are expected while a broker starts; keep them off the terminal."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


# --- processes and their records --------------------------------------------------------


def _home(settings: Settings, name: str) -> Path:
    return settings.state_dir.expanduser().resolve() / name


def _is_external(settings: Settings, name: str) -> bool:
    field = EXTERNAL_FIELDS[name]
    return field in settings.model_fields_set and getattr(settings, field) is not None


def _record_path(home: Path) -> Path:
    return home / "service.json"


def _record(home: Path, process: Process) -> Process:
    _record_path(home).write_text(json.dumps(asdict(process)))
    return process


def _running(home: Path, console: Console | None = None) -> Process | None:
    """The process a previous `up` started here, if it still runs; a stale record is removed."""
    path = _record_path(home)
    if not path.exists():
        return None
    process = Process(**json.loads(path.read_text()))
    if _alive(process):
        return process
    path.unlink(missing_ok=True)
    if console:
        console.print(f"Removed the stale pid file {path} (pid {process.pid} is gone).")
    return None


def _alive(process: Process) -> bool:
    try:
        exited, _ = os.waitpid(process.pid, os.WNOHANG)  # reaps our own child if it ended
        if exited:
            return False
    except ChildProcessError:
        pass  # not our child: started by another `loopline infra up`
    try:
        os.kill(process.pid, 0)
        command_line = Path(f"/proc/{process.pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return True  # no /proc (macOS): the pid exists, trust it
    except OSError:
        return False
    return process.marker in command_line.replace(b"\0", b" ").decode(errors="replace")


def _terminate(process: Process) -> None:
    """SIGTERM lets Kafka and Redis shut down cleanly; SIGKILL if they take too long."""
    for sig, grace_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.kill(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while _alive(process) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _alive(process):
            return


def _require(command: str, service: str) -> str:
    path = shutil.which(command)
    if path is None:
        raise ServiceError(missing_tool_message(command, service))
    return path


def _require_free_ports(service: str, *ports: int) -> None:
    for port in ports:
        if not port_is_free(port):
            raise ServiceError(port_taken_message(port, service))


# Below Linux's ephemeral range, so that client connections do not take a port picked here.
SPARE_PORTS = range(20000, 32000)


def free_port(count: int = 1) -> int:
    """A port that is free now, with the `count - 1` ports after it (Kafka's controller)."""
    while True:
        port = random.choice(SPARE_PORTS)
        if all(port_is_free(port + offset) for offset in range(count)):
            return port


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


# --- logs ---------------------------------------------------------------------------------


def _read_tail(path: Path, size: int = 8192) -> str:
    try:
        with path.open("rb") as file:
            file.seek(max(0, path.stat().st_size - size))
            return file.read().decode(errors="replace")
    except OSError:
        return ""


def _last_lines(text: str, count: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-count:])


def _log_tails(logs: list[Path]) -> str:
    tails = [(log, _last_lines(_read_tail(log))) for log in logs]
    return "\n".join(f"Last lines of {log}:\n{tail}" for log, tail in tails if tail)
