"""Commands on the stream: run a worker, produce texts, consume any topic, show counts."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from loopline.schemas import InputError, load_task
from loopline.streams import worker as worker_assembly
from loopline.streams.codec import encode, text_from_line
from loopline.streams.connections import kafka_options
from loopline.streams.settings import Settings
from loopline.streams.topics import ensure_topics

err = Console(stderr=True)

TaskOption = Annotated[Path, typer.Option("--task", "-t", help="The task's YAML config.")]
ConsumableTopic = Literal[
    "texts", "predictions", "llm", "review", "answers", "deadletter", "corrections", "models"
]


def worker(
    task: TaskOption,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Serve this model directory only. Default: the task's production model, "
            "followed as new ones are promoted."
        ),
    ] = None,
    loglevel: Annotated[str, typer.Option(help="crit, error, warn, info or debug.")] = "warn",
) -> None:
    """Run a worker: annotate `texts` with the student, route unsure items on.

    Start more workers with the same task to share the partitions.
    """
    settings = Settings()
    config = load_task(task)
    app = worker_assembly.build(settings, config, model)
    err.print(
        f"[bold]worker[/] for task {config.name}: {config.topic('texts')} -> "
        f"{config.topic('predictions')} (Kafka {settings.kafka_bootstrap})"
    )
    worker_assembly.run(app, loglevel=loglevel, log_format=settings.log_format)


def produce(
    task: TaskOption,
    source: Annotated[str, typer.Argument(help="JSONL file, or - for stdin.")] = "-",
    plain: Annotated[bool, typer.Option(help="One raw text per line instead of JSONL.")] = False,
) -> None:
    """Write texts to the task's `texts` topic (ids derived from content when absent)."""
    settings = Settings()
    config = load_task(task)
    ensure_topics(settings, config)
    producer = KafkaProducer(**kafka_options(settings), linger_ms=5)
    stream = sys.stdin if source == "-" else open(source, encoding="utf-8")  # noqa: SIM115
    sent = rejected = 0
    with stream, Progress(console=err, transient=True) as progress:
        bar = progress.add_task("producing", total=None)
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                item = text_from_line(line, plain=plain)
            except InputError as error:
                rejected += 1
                err.print(f"[yellow]{source}:{number}[/]: {error} (not sent)")
                continue
            producer.send(config.topic("texts"), key=item.id.encode(), value=encode(item))
            sent += 1
            progress.advance(bar)
    producer.flush()
    producer.close()
    err.print(
        f"sent {sent} texts to {config.topic('texts')}"
        + (f"; {rejected} lines rejected" if rejected else "")
    )
    if rejected:
        raise typer.Exit(1)


def consume(
    task: TaskOption,
    topic: Annotated[ConsumableTopic, typer.Option(help="Which of the task's topics.")],
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest message.")] = False,
    max_messages: Annotated[
        int | None, typer.Option("--max", help="Stop after N messages.")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Stop after S seconds without messages.")] = 10.0,
) -> None:
    """Print a topic's messages as JSON lines on stdout (values that are not JSON are wrapped)."""
    settings = Settings()
    config = load_task(task)
    for value in read_topic(
        settings,
        config.topic(topic),
        from_beginning=from_beginning,
        max_messages=max_messages,
        timeout_s=timeout,
    ):
        sys.stdout.write(json_line(value) + "\n")
    sys.stdout.flush()


def read_topic(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool,
    max_messages: int | None,
    timeout_s: float,
):
    """Yield message values of all partitions of a topic, without joining a consumer group."""
    consumer = KafkaConsumer(
        **kafka_options(settings),
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_beginning:
            consumer.seek_to_beginning(*assigned)
        else:
            consumer.seek_to_end(*assigned)
        for count, record in enumerate(consumer, start=1):
            yield record.value
            if max_messages is not None and count >= max_messages:
                return
    finally:
        consumer.close()


def json_line(value: bytes | None) -> str:
    try:
        json.loads(value or b"")
        return value.decode("utf-8")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return json.dumps({"_raw": (value or b"").decode("utf-8", errors="backslashreplace")})


def stats(
    task: TaskOption,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object instead of a table.")
    ] = False,
) -> None:
    """Counts per outcome, kept in Redis by the workers (exact despite redelivery)."""
    settings = Settings()
    config = load_task(task)
    counts = asyncio.run(worker_assembly.stage_counts(settings, config))
    if as_json:
        print(json.dumps(counts))
        return
    table = Table(title=f"outcomes for {config.name} ({config.topics.prefix})")
    table.add_column("stage")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    for stage, outcomes in counts.items():
        for outcome, count in outcomes.items():
            table.add_row(stage, outcome, str(count))
    Console().print(table)
