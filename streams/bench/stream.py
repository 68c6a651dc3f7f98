"""`loopline bench stream`: the worker's end-to-end throughput and latency, against the
student's in-process speed on the same texts, measured in one run.

End-to-end throughput drains a backlog through real worker processes (start-up excluded);
latency is then measured at half that rate, from the input's Kafka timestamp to the
output's. Timestamps are set by the producers, all on this machine's clock.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from loopline.processors.evaluation import measure_speed
from loopline.processors.students import load_student
from loopline.schemas import ConfigError, ServiceError, TaskConfig, TextIn
from loopline.streams.app import group_id
from loopline.streams.codec import encode
from loopline.streams.connections import kafka_options
from loopline.streams.settings import Settings
from loopline.streams.topics import ensure_topics, wait_for_assignment
from loopline.streams.worker import start_process, stop_process

OUTPUT_ROLES = ("predictions", "llm", "review", "deadletter")


@dataclass
class StreamBenchResult:
    n: int
    workers: int
    in_process_items_per_s: float
    end_to_end_items_per_s: float
    ratio: float
    latency_rate_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_n: int

    def as_dict(self) -> dict:
        return asdict(self)


def bench_task(task: TaskConfig, run_id: str) -> TaskConfig:
    """The task on fresh topics of its own (and its own consumer group; never a named input
    topic), with no audit."""
    return task.model_copy(
        update={
            "topics": task.topics.model_copy(update={"prefix": f"bench-{run_id}.", "input": None}),
            "routing": task.routing.model_copy(update={"audit_rate": 0.0}),
        }
    )


class OutputWatcher:
    """Reads every output topic of the task; remembers the first output time per id."""

    def __init__(self, settings: Settings, task: TaskConfig) -> None:
        self.consumer = KafkaConsumer(**kafka_options(settings), enable_auto_commit=False)
        self.partitions = [
            TopicPartition(task.topic(role), p)
            for role in OUTPUT_ROLES
            for p in range(task.topics.partitions)
        ]
        self.consumer.assign(self.partitions)
        self.consumer.seek_to_beginning(*self.partitions)
        self.first_output_ms: dict[str, int] = {}

    def drain_until(self, ids: set[str], timeout_s: float, alive: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout_s
        while not ids <= self.first_output_ms.keys():
            if not alive():
                raise ServiceError("a benchmark worker stopped; see its log")
            if time.monotonic() > deadline:
                missing = len(ids - self.first_output_ms.keys())
                raise ServiceError(f"{missing} items had no output after {timeout_s:.0f}s")
            for records in self.consumer.poll(timeout_ms=200, max_records=5000).values():
                for record in records:
                    item_id = json.loads(record.value).get("id", record.key.decode())
                    self.first_output_ms.setdefault(item_id, record.timestamp)

    def close(self) -> None:
        self.consumer.close()


def produce(
    producer: KafkaProducer,
    task: TaskConfig,
    items: Sequence[TextIn],
    rate_per_s: float | None = None,
) -> dict[str, int]:
    """Send items (at most `rate_per_s` a second); return each id's input timestamp in ms."""
    sent_ms: dict[str, int] = {}
    futures = []
    started = time.perf_counter()
    for index, item in enumerate(items):
        if rate_per_s is not None:
            lag = started + index / rate_per_s - time.perf_counter()
            if lag > 0:
                time.sleep(lag)
        futures.append(
            (item.id, producer.send(task.topic("texts"), key=item.id.encode(), value=encode(item)))
        )
    producer.flush()
    for item_id, future in futures:
        sent_ms[item_id] = future.get().timestamp
    return sent_ms


class Workers:
    """`loopline worker` processes of one task, as in production: one consumer group."""

    def __init__(self, task_file: Path, model: Path, count: int, workdir: Path) -> None:
        self.processes = [
            start_process(task_file, model, workdir / f"worker-{i}.log") for i in range(count)
        ]

    def alive(self) -> bool:
        return all(process.poll() is None for process in self.processes)

    def send(self, signum: signal.Signals) -> None:
        for process in self.processes:
            process.send_signal(signum)

    def stop(self) -> None:
        for process in self.processes:
            stop_process(process)


def wait_until_consuming(
    settings: Settings,
    producer: KafkaProducer,
    watcher: OutputWatcher,
    task: TaskConfig,
    workers: Workers,
) -> None:
    """Every worker holds partitions, and a probe item goes through."""
    members = len(workers.processes)
    wait_for_assignment(settings, group_id(task), task.topic("texts"), members)
    probe = TextIn(id="bench-probe", text="warm-up")
    produce(producer, task, [probe])
    watcher.drain_until({probe.id}, 120, alive=workers.alive)


def run_stream_bench(
    settings: Settings,
    task: TaskConfig,
    model: Path,
    texts: Sequence[str],
    n: int,
    workdir: Path,
    latency_seconds: float = 20.0,
    workers: int = 1,
    report: Callable[[str], None] = print,
) -> StreamBenchResult:
    if not 1 <= workers <= task.topics.partitions:
        raise ConfigError(
            f"--workers must be between 1 and the task's topics.partitions "
            f"({task.topics.partitions}): more workers than partitions would sit idle"
        )
    student = load_student(model, task, threads=settings.encoder_threads)
    pool = [texts[i % len(texts)] for i in range(n)]
    report(f"in-process: student.predict on {n} texts, batches of {settings.batch_size}")
    in_process = measure_speed(student, pool, batch_size=settings.batch_size).docs_per_s
    del student

    run_id = time.strftime("%Y%m%d%H%M%S")
    bench = bench_task(task, run_id)
    task_file = workdir / "task.yml"
    task_file.write_text(yaml.safe_dump(bench.model_dump(mode="json"), sort_keys=False))
    ensure_topics(settings, bench)
    producer = KafkaProducer(**kafka_options(settings), linger_ms=2, acks=1)
    watcher = OutputWatcher(settings, bench)
    report(f"end-to-end: starting {workers} worker(s)")
    group = Workers(task_file, model, workers, workdir)
    try:
        wait_until_consuming(settings, producer, watcher, bench, group)
        report(f"end-to-end: backlog of {n} items through the worker(s)")
        backlog = [TextIn(id=f"max-{i}", text=t) for i, t in enumerate(pool)]
        # The backlog is written while the workers are paused, so that this process's
        # producer does not take their CPU; the drain starts when they resume.
        group.send(signal.SIGSTOP)
        try:
            sent = produce(producer, bench, backlog)
        finally:
            group.send(signal.SIGCONT)
        resumed_ms = time.time() * 1000
        watcher.drain_until(set(sent), 600, alive=group.alive)
        last_output_ms = max(watcher.first_output_ms[i] for i in sent)
        end_to_end = n / max((last_output_ms - resumed_ms) / 1000, 1e-3)

        rate = end_to_end / 2
        count = max(int(rate * latency_seconds), 100)
        report(f"latency: {count} items at {rate:.0f}/s (half the maximum)")
        paced = [TextIn(id=f"lat-{i}", text=pool[i % n]) for i in range(count)]
        sent = produce(producer, bench, paced, rate_per_s=rate)
        watcher.drain_until(set(sent), 600, alive=group.alive)
        latencies = np.array([watcher.first_output_ms[i] - sent[i] for i in sent], dtype=float)
    finally:
        group.stop()
        watcher.close()
        producer.close()
        delete_topics(settings, bench)
    np.save(workdir / "latencies_ms.npy", latencies)
    return StreamBenchResult(
        n=n,
        workers=workers,
        in_process_items_per_s=in_process,
        end_to_end_items_per_s=end_to_end,
        ratio=end_to_end / in_process,
        latency_rate_per_s=rate,
        latency_p50_ms=float(np.percentile(latencies, 50)),
        latency_p99_ms=float(np.percentile(latencies, 99)),
        latency_n=len(latencies),
    )


def delete_topics(settings: Settings, task: TaskConfig) -> None:
    admin = KafkaAdminClient(**kafka_options(settings))
    try:
        admin.delete_topics([task.topic(role) for role in (*OUTPUT_ROLES, "texts")])
    finally:
        admin.close()


def plot_latency(latencies_ms: np.ndarray, result: StreamBenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ordered = np.sort(latencies_ms)
    ax.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered))
    for q, value in (("p50", result.latency_p50_ms), ("p99", result.latency_p99_ms)):
        ax.axvline(value, linestyle="--", color="grey")
        ax.text(value, 0.05, f" {q} {value:.0f} ms", rotation=90, va="bottom")
    ax.set_xlabel("produce-to-output latency (ms)")
    ax.set_ylabel("share of items")
    ax.set_title(
        f"{result.latency_n} items at {result.latency_rate_per_s:.0f}/s "
        f"(half of max {result.end_to_end_items_per_s:.0f}/s)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
