"""`loopline bench chaos`: stream N items through W workers while a worker, the broker, Redis
and (with an LLM) the LLM server are killed with SIGKILL and restarted at random moments;
then read every output topic and account for every id.

The benchmark runs services of its own (the local launcher, in its work directory, on free
ports), so that it may kill them. Nothing is hidden: a worker that exits on its own (e.g.
while Redis is down) is restarted and reported as an unplanned restart, with its exit code.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from rich.console import Console

from loopline.schemas import ConfigError, ServiceError, TaskConfig, TextIn
from loopline.streams.agents.annotate import group_id
from loopline.streams.bench.stream import bench_task
from loopline.streams.codec import encode
from loopline.streams.connections import kafka_options
from loopline.streams.local import services
from loopline.streams.settings import Settings
from loopline.streams.topics import ensure_topics, read_to_end, wait_for_assignment
from loopline.streams.worker import start_process, stop_process

# Where an input can end (annotate's outcomes); with an LLM, `llm.requests` is one of them.
OUTPUT_ROLES = ("predictions", "llm", "review", "deadletter")
LLM_MODEL = "smollm2-135m"


# --- pure parts: accounting, recovery, throughput -------------------------------------------


def output_identity(role: str, key: bytes | None, value: bytes) -> tuple:
    """What makes two outputs "the same output": a redelivered one repeats it exactly.

    An id can legitimately have several different outputs on one topic: a prediction and its
    LLM revision, a review item from annotate and another from teach (with more suggestions).
    """
    message = json.loads(value)
    if role == "predictions":
        return role, message["id"], message.get("revision", 0)
    if role in ("llm", "review"):
        sources = tuple(s["source"] for s in message.get("suggestions", []))
        return role, message["id"], sources
    return role, (key or b"").decode(errors="replace")


def is_teach_outcome(message: dict) -> bool:
    """A prediction revised by the LLM, or a review item the teach stage sent (it carries the
    LLM's suggestion, or the reason the LLM gave none)."""
    if message.get("source") == "llm":
        return True
    sources = [s.get("source") for s in message.get("suggestions", [])]
    return "llm" in sources or str(message.get("reason", "")).startswith("llm_")


@dataclass
class Accounting:
    """Every output read back, by identity: how many copies, and whether they are the same bytes."""

    first: dict[tuple, bytes] = field(default_factory=dict)
    copies: dict[tuple, int] = field(default_factory=lambda: defaultdict(int))
    differing: list[tuple] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)

    def add(self, role: str, key: bytes | None, value: bytes) -> None:
        identity = output_identity(role, key, value)
        self.copies[identity] += 1
        if identity not in self.first:
            self.first[identity] = value
            if role != "deadletter":
                self.ids.add(identity[1])
        elif value != self.first[identity]:
            self.differing.append(identity)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.copies.values())


def recovery_seconds(
    killed_at_ms: int, sent_ms: dict[str, int], answered_ms: dict[str, int]
) -> float | None:
    """How long after the kill the last item sent before it got its first output: the time
    the fault held items up. None when some such item never got one."""
    before = [item for item, sent in sent_ms.items() if sent <= killed_at_ms]
    if not before:
        return 0.0
    if any(item not in answered_ms for item in before):
        return None
    return max(0.0, (max(answered_ms[item] for item in before) - killed_at_ms) / 1000)


def throughput(answered_ms: Sequence[int], start_ms: float, end_ms: float) -> float:
    """Items first answered per second within [start, end)."""
    if end_ms <= start_ms:
        return 0.0
    count = sum(1 for t in answered_ms if start_ms <= t < end_ms)
    return count / ((end_ms - start_ms) / 1000)


# --- the run --------------------------------------------------------------------------------


@dataclass
class Fault:
    service: str  # worker, kafka, redis, llm
    at_s: float  # seconds after the stream started
    restarted_after_s: float = 0.0  # how long the restart took
    recovered_s: float | None = None  # see recovery_seconds
    killed_at_ms: int = 0


@dataclass
class ChaosResult:
    n: int
    workers: int
    llm: bool
    ids_accounted: int
    lost: int
    duplicates: int
    duplicates_identical: bool
    differing: list[str]
    faults: list[Fault]
    unplanned_restarts: list[str]
    throughput_before: float
    throughput_during: float
    throughput_after: float
    seconds: float
    llm_requests: int
    llm_answered: int

    def as_dict(self) -> dict:
        return asdict(self)


def plan_faults(
    kinds: Sequence[str], times: int, duration_s: float, rng: random.Random
) -> list[Fault]:
    """`times` kills of each kind, in random order, at a random moment within equal slots of
    the middle of the stream (so that one fault's recovery is mostly seen on its own)."""
    order = [kind for kind in kinds for _ in range(times)]
    rng.shuffle(order)
    start, slot = 0.1 * duration_s, 0.7 * duration_s / max(len(order), 1)
    return [
        Fault(kind, start + (index + rng.uniform(0.0, 0.5)) * slot)
        for index, kind in enumerate(order)
    ]


class Watcher(threading.Thread):
    """Follows the output topics while the stream runs: each id's first output time."""

    def __init__(self, settings: Settings, task: TaskConfig) -> None:
        super().__init__(daemon=True, name="chaos-watcher")
        self.settings, self.task = settings, task
        self.answered_ms: dict[str, int] = {}
        self.llm_requests: set[str] = set()
        self.llm_answered: set[str] = set()  # the teach stage wrote its outcome
        self.stopping = threading.Event()

    def run(self) -> None:
        consumer = KafkaConsumer(**kafka_options(self.settings), enable_auto_commit=False)
        partitions = [
            TopicPartition(self.task.topic(role), p)
            for role in OUTPUT_ROLES
            for p in range(self.task.topics.partitions)
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        while not self.stopping.is_set():
            for records in consumer.poll(timeout_ms=200, max_records=5000).values():
                for record in records:
                    if record.topic == self.task.topic("deadletter"):
                        continue
                    message = json.loads(record.value)
                    self.answered_ms.setdefault(message["id"], record.timestamp)
                    if record.topic == self.task.topic("llm"):
                        self.llm_requests.add(message["id"])
                    elif is_teach_outcome(message):
                        self.llm_answered.add(message["id"])
        consumer.close()


class Producer(threading.Thread):
    """Sends the items at a steady rate; an item whose send failed (broker down) is sent
    again until Kafka has it."""

    def __init__(self, settings: Settings, task: TaskConfig, items: Sequence[TextIn], rate: float):
        super().__init__(daemon=True, name="chaos-producer")
        self.settings, self.task, self.items, self.rate = settings, task, items, rate
        self.sent_ms: dict[str, int] = {}
        self.resent = 0
        self.done = threading.Event()

    def run(self) -> None:
        producer = KafkaProducer(
            **kafka_options(self.settings), acks="all", linger_ms=5, retries=2**31 - 1,
            enable_idempotence=True, delivery_timeout_ms=600_000,
        )  # fmt: skip
        pending = list(self.items)
        started = time.perf_counter()
        index = 0
        while pending:
            futures = []
            for item in pending:
                lag = started + index / self.rate - time.perf_counter()
                if lag > 0:
                    time.sleep(lag)
                index += 1
                value = encode(item)
                futures.append(
                    (
                        item,
                        producer.send(self.task.topic("texts"), key=item.id.encode(), value=value),
                    )
                )
            producer.flush()
            pending = []
            for item, future in futures:
                try:
                    self.sent_ms[item.id] = future.get(timeout=0).timestamp
                except Exception:  # noqa: BLE001 - any failed send is simply sent again
                    pending.append(item)
            self.resent += len(pending)
        producer.close()
        self.done.set()


class Chaos:
    """The benchmark's own services and workers, and the faults done to them."""

    def __init__(
        self, workdir: Path, task_file: Path, model: Path, workers: int, llm: bool, console: Console
    ):
        self.console = console
        self.launcher = services.own_services(workdir / "services")
        self.ports = services.LocalPorts(
            kafka=services.free_port(2), redis=services.free_port(), llm=services.free_port()
        )
        self.task_file, self.model, self.workdir = task_file, model, workdir
        self.llm = llm
        self.processes: list = [None] * workers
        self.planned_kill: set[int] = set()
        self.unplanned: list[str] = []
        self.env: dict[str, str] = {}

    def start_services(self) -> Settings:
        quiet = Console(file=open(self.workdir / "services.log", "a"))  # noqa: SIM115
        bootstrap = services.ensure_kafka(self.launcher, self.ports.kafka, quiet)
        redis_url = services.ensure_redis(self.launcher, self.ports.redis, quiet)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPLINE_")}
        self.env |= {
            "LOOPLINE_KAFKA_BOOTSTRAP": bootstrap,
            "LOOPLINE_REDIS_URL": redis_url,
            "LOOPLINE_STATE_DIR": str(self.workdir / "worker-state"),
        }
        if self.llm:
            base_url = services.ensure_llm(self.launcher, LLM_MODEL, self.ports.llm, quiet)
            self.env |= {
                "LOOPLINE_LLM_BASE_URL": base_url,
                "LOOPLINE_LLM_MODEL": LLM_MODEL,
                "LOOPLINE_LLM_TIMEOUT_S": "20",
            }
        return self.launcher.model_copy(
            update={"kafka_bootstrap": bootstrap, "redis_url": redis_url}
        )

    def start_worker(self, index: int) -> None:
        log = self.workdir / f"worker-{index}.log"
        self.processes[index] = start_process(self.task_file, self.model, log, self.env)

    def supervise(self, elapsed_s: float) -> None:
        """Restart a worker that exited without being killed by the benchmark, and say so."""
        for index, process in enumerate(self.processes):
            if process is not None and process.poll() is not None:
                self.unplanned.append(
                    f"worker {index} exited with {process.returncode} at {elapsed_s:.0f}s "
                    f"(see worker-{index}.log); restarted"
                )
                self.console.print(f"[yellow]{self.unplanned[-1]}[/]")
                self.start_worker(index)

    def inflict(self, fault: Fault, rng: random.Random) -> None:
        """SIGKILL the service, then start it again; the worker at once, the others after a
        short outage, as a crashed process restarted by its supervisor."""
        fault.killed_at_ms = int(time.time() * 1000)
        started = time.monotonic()
        quiet = Console(file=open(self.workdir / "services.log", "a"))  # noqa: SIM115
        if fault.service == "worker":
            index = rng.randrange(len(self.processes))
            self.processes[index].send_signal(signal.SIGKILL)
            self.processes[index].wait()
            self.start_worker(index)
        else:
            services.kill(self.launcher, fault.service)
            time.sleep(rng.uniform(2.0, 5.0))
            ensure = {
                "kafka": lambda: services.ensure_kafka(self.launcher, self.ports.kafka, quiet),
                "redis": lambda: services.ensure_redis(self.launcher, self.ports.redis, quiet),
                "llm": lambda: services.ensure_llm(self.launcher, LLM_MODEL, self.ports.llm, quiet),
            }[fault.service]
            ensure()
        fault.restarted_after_s = time.monotonic() - started

    def stop(self) -> None:
        for process in self.processes:
            if process is not None:
                stop_process(process)
        services.down(self.launcher, console=Console(file=open(self.workdir / "services.log", "a")))  # noqa: SIM115


def run_chaos_bench(
    task: TaskConfig,
    model: Path,
    texts: Sequence[str],
    n: int,
    workdir: Path,
    *,
    workers: int = 2,
    llm: bool = False,
    times: int = 2,
    duration_s: float = 180.0,
    drain_timeout_s: float = 600.0,
    seed: int = 0,
    console: Console | None = None,
    progress: Callable[[int, int, str], None] = lambda produced, answered, status: None,
) -> tuple[ChaosResult, float, list[int]]:
    """Stream `n` items over `duration_s` while killing each service `times` times; the
    result, the stream's start (ms) and each id's first output time (ms), for the plot."""
    if not 1 <= workers <= task.topics.partitions:
        raise ConfigError(
            f"--workers must be between 1 and topics.partitions ({task.topics.partitions})"
        )
    console = console or Console(stderr=True)
    rng = random.Random(seed)
    bench = bench_task(task, time.strftime("chaos-%Y%m%d%H%M%S"))
    task_file = workdir / "task.yml"
    task_file.write_text(yaml.safe_dump(bench.model_dump(mode="json"), sort_keys=False))
    chaos = Chaos(workdir, task_file, model, workers, llm, console)
    kinds = ["worker", "kafka", "redis", *(["llm"] if llm else [])]
    faults = plan_faults(kinds, times, duration_s, rng)
    items = [TextIn(id=f"chaos-{i}", text=texts[i % len(texts)]) for i in range(n)]
    try:
        progress(0, 0, "starting Kafka, Redis" + (" and the LLM server" if llm else ""))
        settings = chaos.start_services()
        ensure_topics(settings, bench)
        for index in range(workers):
            chaos.start_worker(index)
        progress(0, 0, f"waiting for {workers} worker(s) to join")
        wait_for_assignment(settings, group_id(bench), bench.topic("texts"), workers)
        watcher = Watcher(settings, bench)
        watcher.start()
        producer = Producer(settings, bench, items, rate=n / duration_s)
        start_ms = time.time() * 1000
        producer.start()
        started = time.monotonic()
        pending = list(faults)
        deadline = None
        while True:
            elapsed = time.monotonic() - started
            chaos.supervise(elapsed)
            status = f"{len(faults) - len(pending)}/{len(faults)} faults done"
            if pending and elapsed >= pending[0].at_s:
                fault = pending.pop(0)
                progress(
                    len(producer.sent_ms), len(watcher.answered_ms), f"killing {fault.service}"
                )
                chaos.inflict(fault, rng)
                continue
            progress(len(producer.sent_ms), len(watcher.answered_ms), status)
            if not pending and producer.done.is_set():
                if len(watcher.answered_ms) >= n:
                    break
                deadline = deadline or time.monotonic() + drain_timeout_s
                if time.monotonic() > deadline:
                    console.print(
                        f"[red]not every id answered {drain_timeout_s:.0f}s after the stream[/]"
                    )
                    break
            time.sleep(0.2)
        end_ms = time.time() * 1000
        watcher.stopping.set()
        watcher.join(timeout=10)
        progress(len(producer.sent_ms), len(watcher.answered_ms), "reading every output topic")
        accounting = Accounting()
        for role in OUTPUT_ROLES:
            for record in read_to_end(settings, bench.topic(role), timeout_s=300):
                accounting.add(role, record.key, record.value)
    finally:
        chaos.stop()
    for fault in faults:
        fault.recovered_s = recovery_seconds(
            fault.killed_at_ms, producer.sent_ms, watcher.answered_ms
        )
    answered = list(watcher.answered_ms.values())
    first_kill = min(f.killed_at_ms for f in faults) if faults else end_ms
    last_recovered = max(
        (f.killed_at_ms + 1000 * (f.recovered_s or f.restarted_after_s) for f in faults),
        default=first_kill,
    )
    wanted = {item.id for item in items}
    return (
        ChaosResult(
            n=n,
            workers=workers,
            llm=llm,
            ids_accounted=len(wanted & accounting.ids),
            lost=len(wanted - accounting.ids),
            duplicates=accounting.duplicates,
            duplicates_identical=not accounting.differing,
            differing=[repr(identity) for identity in accounting.differing[:20]],
            faults=faults,
            unplanned_restarts=chaos.unplanned,
            throughput_before=throughput(answered, start_ms, first_kill),
            throughput_during=throughput(answered, first_kill, last_recovered),
            throughput_after=throughput(answered, last_recovered, end_ms),
            seconds=(end_ms - start_ms) / 1000,
            llm_requests=len(watcher.llm_requests),
            llm_answered=len(watcher.llm_answered),
        ),
        start_ms,
        answered,
    )


def plot(result: ChaosResult, start_ms: float, answered_ms: Sequence[int], path: Path) -> None:
    """Items first answered per second, with each kill and its recovery marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    seconds = (np.array(answered_ms, dtype=float) - start_ms) / 1000
    bins = np.arange(0, max(seconds.max(initial=0), 1) + 1, 1.0)
    counts, edges = np.histogram(seconds, bins=bins)
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(edges[:-1], counts, lw=1, color="black")
    colors = {"worker": "tab:blue", "kafka": "tab:red", "redis": "tab:green", "llm": "tab:purple"}
    for fault in result.faults:
        at = (fault.killed_at_ms - start_ms) / 1000
        span = fault.recovered_s if fault.recovered_s is not None else fault.restarted_after_s
        ax.axvspan(at, at + span, color=colors[fault.service], alpha=0.2)
        ax.axvline(at, color=colors[fault.service], lw=1)
        ax.text(
            at, counts.max(initial=1) * 0.95, f" {fault.service}", rotation=90, va="top", fontsize=8
        )
    ax.set_xlabel("seconds since the stream started")
    ax.set_ylabel("items answered per second")
    ax.set_title(
        f"chaos: {result.n} items, {result.workers} worker(s); lost {result.lost}, "
        f"duplicates {result.duplicates} "
        f"({'identical' if result.duplicates_identical else 'NOT identical'})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check(result: ChaosResult) -> None:
    """A ServiceError when the run broke the delivery promise."""
    if result.lost or not result.duplicates_identical:
        raise ServiceError(
            f"chaos run lost {result.lost} id(s); duplicates identical: "
            f"{result.duplicates_identical}"
        )
