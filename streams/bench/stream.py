"""`loopline bench stream`: the worker's end-to-end throughput and latency, against the
student's in-process speed on the same texts, measured in one run.

End-to-end throughput drains a backlog through real worker processes (start-up excluded);
latency is then measured at half that rate, from the input's Kafka timestamp to the
output's. Timestamps are set by the producers, all on this machine's clock.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml
from aiokafka import AIOKafkaProducer
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from loopline.processors.evaluation import measure_speed
from loopline.processors.students import load_student
from loopline.schemas import ConfigError, ServiceError, TaskConfig, TextIn
from loopline.streams.agents.annotate import group_id
from loopline.streams.bench import pipe
from loopline.streams.codec import encode
from loopline.streams.connections import aiokafka_options, kafka_options
from loopline.streams.outputs import send_batched
from loopline.streams.settings import Settings
from loopline.streams.topics import ensure_topics, wait_for_assignment
from loopline.streams.worker import start_process, stop_process

PACING_TICK_S = 0.002
OUTPUT_ROLES = ("predictions", "llm", "review", "deadletter")


@dataclass
class StreamBenchResult:
    n: int
    workers: int
    in_process_items_per_s: float
    plain_pipe_items_per_s: float
    end_to_end_items_per_s: float
    ratio: float
    ratio_to_plain_pipe: float
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
                for record in records:  # every output but a dead letter is keyed by item id
                    item_id = record.key.decode()
                    self.first_output_ms.setdefault(item_id, record.timestamp)

    def close(self) -> None:
        self.consumer.close()


def produce(
    settings: Settings,
    task: TaskConfig,
    items: Sequence[TextIn],
    rate_per_s: float | None = None,
) -> dict[str, int]:
    """Send items (at most `rate_per_s` a second); return each id's input timestamp in ms."""
    return asyncio.run(_produce(settings, task, items, rate_per_s))


async def _produce(
    settings: Settings, task: TaskConfig, items: Sequence[TextIn], rate_per_s: float | None
) -> dict[str, int]:
    """Items encoded beforehand, then sent every few milliseconds, those due in one record
    batch per partition: a load generator as light as the workers' own sending.
    kafka-python's per-message send took a third of a core at 6,000 items/s, from the
    workers it measures. The collector is off meanwhile: its full passes over what the
    benchmark holds paused the sending for hundreds of milliseconds, with records already
    timestamped, which the latency figures then blamed on the workers."""
    topic = task.topic("texts")
    records = [(topic, item.id.encode(), encode(item)) for item in items]
    producer = AIOKafkaProducer(**aiokafka_options(settings), acks=1, linger_ms=0)
    await producer.start()
    sent_ms: dict[str, int] = {}
    pending = []
    gc.disable()
    try:
        started, sent = time.perf_counter(), 0
        while sent < len(records):
            due = len(records)
            if rate_per_s is not None:
                await asyncio.sleep(PACING_TICK_S)
                due = min(due, int((time.perf_counter() - started) * rate_per_s))
            now_ms = int(time.time() * 1000)
            batch = records[sent:due]
            pending += await send_batched(producer, batch, now_ms)
            sent_ms.update((key.decode(), now_ms) for _, key, _ in batch)
            sent = due
        await asyncio.gather(*pending)
    finally:
        gc.enable()
        await producer.stop()
    return sent_ms


class Consumers:
    """Processes that consume one task's `texts` in one consumer group: loopline workers, as
    in production, or the plain pipe."""

    def __init__(self, group: str, processes: Sequence[subprocess.Popen]) -> None:
        self.group = group
        self.processes = list(processes)

    @classmethod
    def workers(cls, task: TaskConfig, task_file: Path, model: Path, count: int, workdir: Path):
        return cls(
            group_id(task),
            [start_process(task_file, model, workdir / f"worker-{i}.log") for i in range(count)],
        )

    @classmethod
    def plain_pipe(cls, task: TaskConfig, task_file: Path, model: Path, workdir: Path):
        return cls(pipe.group_id(task), [pipe.start(task_file, model, workdir / "pipe.log")])

    def alive(self) -> bool:
        return all(process.poll() is None for process in self.processes)

    def send(self, signum: signal.Signals) -> None:
        for process in self.processes:
            process.send_signal(signum)

    def stop(self) -> None:
        for process in self.processes:
            stop_process(process)


def wait_until_committed(
    settings: Settings, consumers: Consumers, ends: dict[TopicPartition, int], timeout_s: float
) -> None:
    """Until the consumers' group has committed every partition up to `ends`, and so every
    output is in Kafka. Asked ten times a second: reading the outputs meanwhile would take
    a good share of the CPU the consumers are measured on."""
    admin = KafkaAdminClient(**kafka_options(settings))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            committed = admin.list_group_offsets({consumers.group: list(ends)})[consumers.group]
            if all(tp in committed and committed[tp].offset >= end for tp, end in ends.items()):
                return
            if not consumers.alive():
                raise ServiceError("a benchmark worker stopped; see its log")
            if time.monotonic() > deadline:
                raise ServiceError(f"the backlog was not committed after {timeout_s:.0f}s")
            time.sleep(0.1)
    finally:
        admin.close()


class Run:
    """One task on fresh topics, its consumers and a watcher of its outputs."""

    def __init__(self, settings: Settings, task: TaskConfig, workdir: Path) -> None:
        self.settings = settings
        self.task = task
        self.task_file = workdir / f"{task.topics.prefix}yml"
        self.task_file.write_text(yaml.safe_dump(task.model_dump(mode="json"), sort_keys=False))
        ensure_topics(settings, task)
        self.watcher = OutputWatcher(settings, task)

    def wait_until_consuming(self, consumers: Consumers) -> None:
        """Every process holds partitions, and a probe item goes through."""
        topic = self.task.topic("texts")
        wait_for_assignment(self.settings, consumers.group, topic, len(consumers.processes))
        probe = TextIn(id="bench-probe", text="warm-up")
        produce(self.settings, self.task, [probe])
        self.watcher.drain_until({probe.id}, 120, alive=consumers.alive)

    def drain_backlog(self, consumers: Consumers, texts: Sequence[str]) -> float:
        """Items/s through `consumers`, from a backlog of `texts` to the last first output.

        The backlog is written while the consumers are paused, so that this process's
        producer does not take their CPU; the drain starts when they resume.
        """
        self.wait_until_consuming(consumers)
        backlog = [TextIn(id=f"max-{i}", text=text) for i, text in enumerate(texts)]
        consumers.send(signal.SIGSTOP)
        try:
            sent = produce(self.settings, self.task, backlog)
            ends = self.watcher.consumer.end_offsets(
                [
                    TopicPartition(self.task.topic("texts"), p)
                    for p in range(self.task.topics.partitions)
                ]
            )
        finally:
            consumers.send(signal.SIGCONT)
        resumed_ms = time.time() * 1000
        wait_until_committed(self.settings, consumers, ends, 600)
        self.watcher.drain_until(set(sent), 60, alive=consumers.alive)
        last_output_ms = max(self.watcher.first_output_ms[i] for i in sent)
        return len(texts) / max((last_output_ms - resumed_ms) / 1000, 1e-3)

    def latencies_ms(self, consumers: Consumers, texts: Sequence[str], rate: float) -> np.ndarray:
        """Produce-to-output latency of each of `texts`, sent at `rate` items/s."""
        paced = [TextIn(id=f"lat-{i}", text=text) for i, text in enumerate(texts)]
        sent = produce(self.settings, self.task, paced, rate_per_s=rate)
        self.watcher.drain_until(set(sent), 600, alive=consumers.alive)
        return np.array([self.watcher.first_output_ms[i] - sent[i] for i in sent], dtype=float)

    def close(self) -> None:
        self.watcher.close()
        delete_topics(self.settings, self.task)


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
    report("plain pipe: the same work in a bare aiokafka loop")
    run = Run(settings, bench_task(task, f"{run_id}-pipe"), workdir)
    consumers = Consumers.plain_pipe(run.task, run.task_file, model, workdir)
    try:
        plain_pipe = run.drain_backlog(consumers, pool)
    finally:
        consumers.stop()
        run.close()

    report(f"end-to-end: {n} items through {workers} worker(s)")
    run = Run(settings, bench_task(task, run_id), workdir)
    consumers = Consumers.workers(run.task, run.task_file, model, workers, workdir)
    try:
        end_to_end = run.drain_backlog(consumers, pool)
        rate = end_to_end / 2
        count = max(int(rate * latency_seconds), 100)
        report(f"latency: {count} items at {rate:.0f}/s (half the maximum)")
        latencies = run.latencies_ms(consumers, [pool[i % n] for i in range(count)], rate)
    finally:
        consumers.stop()
        run.close()
    np.save(workdir / "latencies_ms.npy", latencies)
    return StreamBenchResult(
        n=n,
        workers=workers,
        in_process_items_per_s=in_process,
        plain_pipe_items_per_s=plain_pipe,
        end_to_end_items_per_s=end_to_end,
        ratio=end_to_end / in_process,
        ratio_to_plain_pipe=end_to_end / plain_pipe,
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
    """Throughput of the three pipelines side by side, and the latency distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, cdf) = plt.subplots(1, 2, figsize=(11, 4))
    names = [
        "student\nin-process",
        "plain aiokafka\npipe",
        f"{result.workers} worker(s)\nend-to-end",
    ]
    rates = [
        result.in_process_items_per_s,
        result.plain_pipe_items_per_s,
        result.end_to_end_items_per_s,
    ]
    bars.bar(names, rates, color=["grey", "tab:blue", "tab:orange"])
    for x, rate in enumerate(rates):
        bars.text(x, rate, f"{rate:,.0f}", ha="center", va="bottom")
    bars.set_ylabel("items/s")
    bars.set_title(f"throughput, {result.n} items")

    ordered = np.sort(latencies_ms)
    cdf.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered))
    for q, value in (("p50", result.latency_p50_ms), ("p99", result.latency_p99_ms)):
        cdf.axvline(value, linestyle="--", color="grey")
        cdf.text(value, 0.05, f" {q} {value:.0f} ms", rotation=90, va="bottom")
    cdf.set_xlabel("produce-to-output latency (ms)")
    cdf.set_ylabel("share of items")
    cdf.set_title(
        f"{result.latency_n} items at {result.latency_rate_per_s:.0f}/s "
        f"(half of max {result.end_to_end_items_per_s:.0f}/s)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
