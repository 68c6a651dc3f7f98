"""`loopline demo`: the whole loop on local defaults, in one command.

Starts the services, trains a student on the bundled banking77 subset (once), runs a worker,
streams the bundled test texts with their gold labels held back, and reports what happened:
outcomes, the accuracy of what the student accepted, throughput, and what the LLM answered.
Each run uses topics of its own, so runs never mix.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from kafka import KafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from loopline.schemas import ServiceError, TaskConfig, TextIn, load_task
from loopline.streams import worker as worker_process
from loopline.streams.agents.annotate import group_id
from loopline.streams.cli import model as model_commands
from loopline.streams.cli.stream import stage_counts
from loopline.streams.codec import encode
from loopline.streams.connections import kafka_options
from loopline.streams.local import services
from loopline.streams.outputs import REVISION
from loopline.streams.settings import Settings
from loopline.streams.topics import ensure_topics, read_to_end, wait_for_assignment

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "banking77"
OUTCOMES = ("prediction", "llm", "review", "deadletter")


@dataclass
class Gold:
    """The test items, and their labels kept apart from what is streamed."""

    items: list[TextIn]
    labels: dict[str, list[str]]

    @classmethod
    def read(cls, path: Path) -> Gold:
        items, labels = [], {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            record = json.loads(line)
            item = TextIn(id=f"test-{number}", text=record["text"])
            items.append(item)
            labels[item.id] = [record["label"]] if "label" in record else record.get("accept", [])
        return cls(items, labels)


@dataclass
class RunReport:
    n: int
    outcomes: dict[str, int]
    taught: dict[str, int]
    student_accepted: int = 0
    student_accepted_correct: int = 0
    llm_answered: int = 0
    llm_correct: int = 0
    student_correct_where_llm_answered: int = 0
    annotate_seconds: float = 0.0
    review_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def items_per_s(self) -> float:
        return self.n / self.annotate_seconds if self.annotate_seconds else 0.0


def run_demo(
    settings: Settings,
    *,
    llm_model: str | None,
    retrain: bool,
    llm_wait_s: float,
    keep_running: bool,
    console: Console,
) -> RunReport:
    already_up = services.status(settings)
    endpoints = services.up(settings, llm_model=llm_model, console=console)
    settings = settings.model_copy(
        update={
            "kafka_bootstrap": endpoints.kafka_bootstrap,
            "redis_url": endpoints.redis_url,
            "llm_base_url": endpoints.llm_base_url,
            "llm_model": endpoints.llm_model or settings.llm_model,
        }
    )
    model_dir = settings.state_dir / "models" / "banking77"
    if retrain or not (model_dir / "loopline.json").exists():
        console.rule("training a student on the bundled banking77 subset")
        model_commands.train(
            EXAMPLE / "task.yml",
            EXAMPLE / "train.jsonl",
            model_dir,
            eval_data=EXAMPLE / "dev.jsonl",
            force=True,
        )
    else:
        console.print(f"Using the student trained before in {model_dir} (--retrain to redo it).")

    task = run_task(load_task(EXAMPLE / "task.yml"), time.strftime("%Y%m%d-%H%M%S"))
    run_dir = settings.state_dir / "demo" / task.topics.prefix.rstrip(".")
    run_dir.mkdir(parents=True, exist_ok=True)
    task_file = run_dir / "task.yml"
    task_file.write_text(yaml.safe_dump(task.model_dump(mode="json"), sort_keys=False))
    gold = Gold.read(EXAMPLE / "test.jsonl")

    ensure_topics(settings, task)
    worker = start_worker(settings, task_file, model_dir, run_dir / "worker.log")
    try:
        console.print("Waiting for the worker to join its consumer group ...")
        wait_for_assignment(settings, group_id(task), task.topic("texts"))
        console.rule(f"streaming {len(gold.items)} test texts through a worker")
        produce(settings, task, gold.items)
        annotated = follow(settings, task, "annotate", len(gold.items), None, worker, console)
        taught: dict[str, int] = {}
        if settings.llm_base_url and annotated.get("llm"):
            console.rule(f"the LLM ({settings.llm_model}) answers the unsure items")
            taught = follow(settings, task, "teach", annotated["llm"], llm_wait_s, worker, console)
        report = score(settings, task, gold, annotated, taught)
    finally:
        worker_process.stop_process(worker)
        if not keep_running and already_up is None:
            services.down(settings, console=console)
    (run_dir / "summary.json").write_text(json.dumps(vars(report), indent=2))
    return report


def run_task(task: TaskConfig, run_id: str) -> TaskConfig:
    return task.model_copy(
        update={"topics": task.topics.model_copy(update={"prefix": f"demo-{run_id}."})}
    )


def start_worker(
    settings: Settings, task_file: Path, model_dir: Path, log: Path
) -> subprocess.Popen:
    env = {
        **os.environ,
        **{f"LOOPLINE_{k.upper()}": str(v) for k, v in worker_env(settings).items()},
    }
    return worker_process.start_process(task_file, model_dir, log, env)


def worker_env(settings: Settings) -> dict[str, object]:
    values = {
        "kafka_bootstrap": settings.kafka_bootstrap,
        "redis_url": settings.redis_url,
        "state_dir": settings.state_dir,
        "llm_model": settings.llm_model,
    }
    if settings.llm_base_url:
        values["llm_base_url"] = settings.llm_base_url
    return values


def produce(settings: Settings, task: TaskConfig, items: list[TextIn]) -> None:
    producer = KafkaProducer(**kafka_options(settings), linger_ms=5)
    for item in items:
        producer.send(task.topic("texts"), key=item.id.encode(), value=encode(item))
    producer.flush()
    producer.close()


def follow(
    settings: Settings,
    task: TaskConfig,
    stage: str,
    total: int,
    limit_s: float | None,
    worker: subprocess.Popen,
    console: Console,
) -> dict[str, int]:
    """Show a stage's progress from its Redis counters until `total` items are done."""
    deadline = None if limit_s is None else time.monotonic() + limit_s
    columns = (
        TextColumn(f"[bold]{stage}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(stage, total=total, detail="")
        while True:
            counts = asyncio.run(stage_counts(settings, task))[stage]
            done = sum(counts.get(k, 0) for k in OUTCOMES)
            detail = " ".join(f"{k}={v}" for k, v in counts.items())
            progress.update(bar, completed=done, detail=detail)
            if done >= total:
                return counts
            if worker.poll() is not None:
                raise ServiceError("the worker stopped; see its log under the demo's run directory")
            if deadline is not None and time.monotonic() > deadline:
                console.print(
                    f"[yellow]{total - done} items still wait for the LLM; they stay on "
                    f"{task.topic('llm')} and a later worker answers them.[/]"
                )
                return counts
            time.sleep(0.5)


def score(
    settings: Settings, task: TaskConfig, gold: Gold, annotated: dict, taught: dict
) -> RunReport:
    """Compare each item's latest prediction with its gold label; time the annotate stage by
    Kafka's timestamps, from the first text in to its stage's last output."""
    report = RunReport(n=len(gold.items), outcomes=annotated, taught=taught)
    records = {
        role: read_to_end(settings, task.topic(role))
        for role in ("texts", "predictions", "llm", "review")
    }
    latest: dict[str, dict] = {}
    for record in records["predictions"]:
        prediction = json.loads(record.value)
        if prediction["revision"] >= latest.get(prediction["id"], {}).get("revision", -1):
            latest[prediction["id"]] = prediction
    student_answers = {
        request["id"]: request["suggestions"][0]["annotation"]["labels"]
        for request in (json.loads(record.value) for record in records["llm"])
    }
    for item_id, prediction in latest.items():
        right = prediction["labels"] == gold.labels[item_id]
        if prediction["revision"] == REVISION["student"]:
            report.student_accepted += 1
            report.student_accepted_correct += right
        else:
            report.llm_answered += 1
            report.llm_correct += right
            report.student_correct_where_llm_answered += (
                student_answers[item_id] == gold.labels[item_id]
            )
    first_in = min(record.timestamp for record in records["texts"])
    annotate_outputs = (
        [r.timestamp for r in records["predictions"] if json.loads(r.value)["revision"] == 0]
        + [r.timestamp for r in records["llm"]]
        + [
            r.timestamp
            for r in records["review"]
            if not json.loads(r.value)["reason"].startswith("llm")
        ]
    )
    report.annotate_seconds = (max(annotate_outputs) - first_in) / 1000
    report.review_reasons = dict(Counter(json.loads(r.value)["reason"] for r in records["review"]))
    return report
