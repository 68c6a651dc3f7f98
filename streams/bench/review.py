"""`loopline bench review`: scripted reviewers over HTTP against a real review service, with
the raw Kafka produce rate of the same messages, measured in the same run, as the baseline.

The service runs as `loopline review serve` in processes of its own (`instances` of them on
one Redis, reviewers spread over them); K reviewers (asyncio, one HTTP connection each) take
one item at a time and answer it with its suggestion until the queue is empty. Afterwards
every acknowledged answer is looked up on Kafka (lost: must be 0), leases are counted per
item (double leases: must be 0), and the records the service wrote are produced again, raw,
to a scratch topic by one aiokafka producer configured like the service's: all at once
(what Kafka can take) and by K writers each awaiting one answer's acknowledgements (what
the service does). CPU time per answer is read from /proc for the service and the reviewers.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml
from aiokafka import AIOKafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from loopline.schemas import (
    Annotation,
    ConfigError,
    RoutedItem,
    ServiceError,
    Suggestion,
    TaskConfig,
    TextIn,
)
from loopline.streams.bench.stream import bench_task
from loopline.streams.codec import encode
from loopline.streams.connections import aiokafka_options, kafka_options
from loopline.streams.local.services import port_is_free
from loopline.streams.review import server
from loopline.streams.review.client import Leased, ReviewAPIError, ReviewClient
from loopline.streams.review.tokens import add_token
from loopline.streams.settings import Settings
from loopline.streams.topics import ensure_topics, read_to_end
from loopline.streams.worker import stop_process


@dataclass
class ReviewBenchResult:
    items: int
    reviewers: int
    instances: int
    answers: int
    seconds: float
    answers_per_s: float
    next_p50_ms: float
    next_p99_ms: float
    answer_p50_ms: float
    answer_p99_ms: float
    double_leases: int
    lost: int
    messages_per_answer: float
    raw_produce_messages_per_s: float
    raw_produce_answers_per_s: float
    ratio: float
    acked_writers_answers_per_s: float
    ratio_to_acked_writers: float
    service_cpu_ms_per_answer: float
    reviewers_cpu_ms_per_answer: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Tally:
    """What the scripted reviewers saw."""

    leased: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    next_ms: list[float] = field(default_factory=list)
    answer_ms: list[float] = field(default_factory=list)


def review_backlog(task: TaskConfig, examples: Sequence[dict], n: int) -> list[RoutedItem]:
    """n review items with an LLM suggestion each (the example's gold label or spans)."""
    items = []
    for i in range(n):
        example = examples[i % len(examples)]
        text = TextIn(id=f"bench-{i}", text=example["text"])
        if task.kind == "ner":
            annotation = Annotation(spans=example.get("spans", []), confidence=0.6)
        else:
            label = example.get("label") or (example.get("accept") or [task.label_names[0]])[0]
            annotation = Annotation(labels=[label], scores={label: 0.6}, confidence=0.6)
        suggestion = Suggestion(source="llm", model_version="bench", annotation=annotation)
        items.append(
            RoutedItem(
                id=text.id,
                task=task.name,
                item=text,
                route="review",
                suggestions=[suggestion],
                reason="llm_unsure",
                priority=0.4,
            )
        )
    return items


async def reviewer(url: str, token: str, task: TaskConfig, tally: Tally) -> None:
    """Take one item at a time and answer it with its suggestion, until none is left."""
    async with ReviewClient(url, token, task.name, timeout_s=60) as client:
        while True:
            started = time.perf_counter()
            try:
                batch = await client.next(n=1)
            except ReviewAPIError as error:
                if error.status != 503:
                    raise
                await asyncio.sleep(0.2)
                continue
            tally.next_ms.append((time.perf_counter() - started) * 1000)
            if not batch:
                return
            leased = batch[0]
            tally.leased.append(leased.id)
            started = time.perf_counter()
            await _answer(client, leased)
            tally.answer_ms.append((time.perf_counter() - started) * 1000)
            tally.acked.append(leased.id)


async def _answer(client: ReviewClient, leased: Leased) -> None:
    shown = leased.item.suggestions[-1].annotation
    spans = [{"start": s.start, "end": s.end, "label": s.label} for s in shown.spans]
    await client.answer(leased, labels=shown.labels, spans=spans)


async def raw_produce_rates(
    settings: Settings, topic: str, records: list[tuple], per_answer: int, writers: int
) -> tuple[float, float]:
    """Messages/s for producing `records` (key, value) with the service's producer settings:
    all at once (what Kafka can take), and by `writers` concurrent writers that each wait
    for one answer's `per_answer` messages to be acknowledged (what the service does)."""
    producer = AIOKafkaProducer(
        **aiokafka_options(settings), acks="all", enable_idempotence=True, linger_ms=2
    )
    await producer.start()
    try:
        await (await producer.send(topic, b"warm-up", key=b"warm-up"))
        started = time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
        pipelined = len(records) / (time.perf_counter() - started)

        answers = [records[i : i + per_answer] for i in range(0, len(records), per_answer)]

        async def writer(mine: list[list[tuple]]) -> None:
            for answer in mine:
                sent = [await producer.send(topic, value, key=key) for key, value in answer]
                await asyncio.gather(*sent)

        started = time.perf_counter()
        await asyncio.gather(*(writer(answers[i::writers]) for i in range(writers)))
        return pipelined, len(records) / (time.perf_counter() - started)
    finally:
        await producer.stop()


def run_review_bench(
    settings: Settings,
    task: TaskConfig,
    examples: Sequence[dict],
    items: int,
    reviewers: int,
    workdir: Path,
    port: int,
    report: Callable[[str], None],
    instances: int = 1,
) -> tuple[ReviewBenchResult, Tally]:
    run_id = uuid.uuid4().hex[:8]
    task = bench_task(task, f"review-{run_id}")
    task_file = workdir / "task.yml"
    task_file.write_text(yaml.safe_dump(task.model_dump(mode="json")))
    ensure_topics(settings, task)
    backlog = review_backlog(task, examples, items)
    asyncio.run(_send(settings, task.topic("review"), backlog))
    tokens = [add_token(settings, f"bench-{run_id}-{i}", "reviewer") for i in range(reviewers)]

    ports = list(range(port, port + instances))
    if not all(port_is_free(p) for p in ports):
        raise ConfigError(f"ports {ports[0]}-{ports[-1]} are not all free; pass --port")
    env = {
        **os.environ,
        "LOOPLINE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LOOPLINE_REDIS_URL": settings.redis_url,
    }
    logs = [workdir / f"service-{p}.log" for p in ports]
    processes = [server.spawn(task_file, p, log, env) for p, log in zip(ports, logs)]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url, process, log in zip(urls, processes, logs):
            server.wait_ready(url, process, log)
        asyncio.run(_until_pending(urls[0], tokens[0], task, items))
        report(f"{items} items pending; {reviewers} reviewers start on {instances} instance(s)")
        tally = Tally()
        cpu_before = (sum(_cpu_seconds(p.pid) for p in processes), time.process_time())
        started = time.perf_counter()
        asyncio.run(_everyone(urls, tokens, task, tally))
        seconds = time.perf_counter() - started
        service_cpu = sum(_cpu_seconds(p.pid) for p in processes) - cpu_before[0]
        reviewers_cpu = time.process_time() - cpu_before[1]
    finally:
        for process in processes:
            stop_process(process, grace_s=20)

    report("checking every acknowledged answer on Kafka")
    written = {role: read_to_end(settings, task.topic(role)) for role in ("answers", "corrections")}
    on_kafka = {r.key.decode() for r in written["answers"]} & {
        r.key.decode() for r in written["corrections"]
    }
    records = [
        (r.key, r.value)
        for role in ("answers", "corrections", "predictions")
        for r in read_to_end(settings, task.topic(role))
    ]
    scratch = f"{task.topics.prefix}raw-produce"
    admin = KafkaAdminClient(**kafka_options(settings))
    admin.create_topics([NewTopic(scratch, task.topics.partitions, 1)])
    admin.close()
    report(f"baseline: producing the same {len(records)} records straight to Kafka")
    answers = len(tally.acked)
    per_answer = len(records) / max(answers, 1)
    raw, acked = asyncio.run(
        raw_produce_rates(settings, scratch, records, round(per_answer), reviewers)
    )
    answers_per_s = answers / seconds
    result = ReviewBenchResult(
        items=items,
        reviewers=reviewers,
        instances=instances,
        answers=answers,
        seconds=round(seconds, 2),
        answers_per_s=round(answers_per_s, 1),
        next_p50_ms=_percentile(tally.next_ms, 50),
        next_p99_ms=_percentile(tally.next_ms, 99),
        answer_p50_ms=_percentile(tally.answer_ms, 50),
        answer_p99_ms=_percentile(tally.answer_ms, 99),
        double_leases=sum(count - 1 for count in Counter(tally.leased).values() if count > 1),
        lost=len(set(tally.acked) - on_kafka),
        messages_per_answer=round(per_answer, 2),
        raw_produce_messages_per_s=round(raw, 1),
        raw_produce_answers_per_s=round(raw / per_answer, 1),
        ratio=round(answers_per_s / (raw / per_answer), 3),
        acked_writers_answers_per_s=round(acked / per_answer, 1),
        ratio_to_acked_writers=round(answers_per_s / (acked / per_answer), 3),
        service_cpu_ms_per_answer=round(service_cpu * 1000 / max(answers, 1), 2),
        reviewers_cpu_ms_per_answer=round(reviewers_cpu * 1000 / max(answers, 1), 2),
    )
    return result, tally


def plot_latencies(tally: Tally, result: ReviewBenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in (("next", tally.next_ms), ("answers", tally.answer_ms)):
        ordered = np.sort(values)
        ax.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered), label=name)
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("share of requests")
    ax.set_title(
        f"bench review: {result.reviewers} reviewers, {result.answers_per_s:.0f} answers/s "
        f"(raw Kafka: {result.raw_produce_answers_per_s:.0f})"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


async def _send(settings: Settings, topic: str, items: list[RoutedItem]) -> None:
    producer = AIOKafkaProducer(**aiokafka_options(settings), acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, encode(i), key=i.id.encode()) for i in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _until_pending(url: str, token: str, task: TaskConfig, items: int) -> None:
    async with ReviewClient(url, token, task.name) as client:
        deadline = time.monotonic() + 120
        while (await client.stats())["pending"] < items:
            if time.monotonic() > deadline:
                raise ServiceError("the review service did not read every item in 120s")
            await asyncio.sleep(0.2)


async def _everyone(urls: list[str], tokens: list[str], task: TaskConfig, tally: Tally) -> None:
    """Every reviewer at once, spread over the service instances."""
    await asyncio.gather(
        *(reviewer(urls[i % len(urls)], token, task, tally) for i, token in enumerate(tokens))
    )


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from Linux's /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else 0.0
