"""`loopline trainer` and `loopline models ...`: the learning loop as people run it."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from loopline.processors.learning.monitoring import wilson_interval
from loopline.processors.learning.policy import effective_routing
from loopline.processors.student import read_meta
from loopline.schemas import ModelEvent, TaskConfig, load_task
from loopline.streams.connections import redis_sync_client
from loopline.streams.models.artifacts import DirectoryStore
from loopline.streams.models.follow import workers_key
from loopline.streams.models.registry import (
    RegistryState,
    promotion,
    publish,
    read_registry,
    registration,
)
from loopline.streams.models.registry import (
    rollback as rollback_records,
)
from loopline.streams.settings import Settings
from loopline.streams.trainer.service import Trainer, request_key

app = typer.Typer(help="The model registry: versions, promotion, rollback.", no_args_is_help=True)
console = Console()
TaskOption = Annotated[Path, typer.Option("--task", "-t", help="The task's YAML config.")]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of tables.")]


def trainer(
    task: TaskOption,
    min_new_gold: Annotated[
        int | None,
        typer.Option(help="Train after this many new gold labels (learning.min_new_gold)."),
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option(help="Also train every S seconds when anything is new (learning.interval_s)."),
    ] = None,
) -> None:
    """Run the trainer: corrections in, students out through the evaluation gate, until
    stopped (SIGTERM or Ctrl-C). One trainer per task trains; others wait their turn."""
    settings = Settings()
    config = load_task(task)
    learning = config.learning
    trainer = Trainer(
        settings,
        config,
        min_new_gold=min_new_gold or learning.min_new_gold,
        interval_s=interval or learning.interval_s,
        console=Console(stderr=True),
    )
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    trainer.run(lambda: bool(stopping))


@app.command("list")
def list_versions(task: TaskOption, as_json: JsonOption = False) -> None:
    """Every version of the task's student, newest first, and what each worker serves."""
    settings = Settings()
    config = load_task(task)
    state = read_registry(settings, config)
    events = sorted(state.versions.values(), key=lambda e: e.created_at, reverse=True)
    workers = _workers(settings, config)
    if as_json:
        rows = [_with_status(state, e) for e in events]
        print(json.dumps({"versions": rows, "workers": workers}))
        return
    table = Table(title=f"models of {config.name}")
    for column in ("version", "status", "score", "ECE", "gold", "silver", "parent", "reason"):
        table.add_column(
            column, justify="right" if column in ("score", "ECE", "gold", "silver") else "left"
        )
    for event in events:
        status = state.status(event.version)
        style = {"production": "bold green", "rejected": "yellow"}.get(status, "")
        table.add_row(
            event.version,
            f"[{style}]{status}[/]" if style else status,
            _main_score(event),
            _figure(event.metrics.get("ece")),
            str(event.data_counts.get("gold", event.data_counts.get("train_human", ""))),
            str(event.data_counts.get("silver", event.data_counts.get("train_llm", ""))),
            event.parent_version or "",
            event.reason,
        )
    console.print(table)
    if workers:
        serving = Table(title="workers")
        for column in ("worker", "serving", "updated", "last load error"):
            serving.add_column(column)
        for name, status in sorted(workers.items()):
            serving.add_row(name, status["version"], status["updated_at"], status["error"] or "")
        console.print(serving)


@app.command()
def show(
    version: Annotated[str, typer.Argument(help="A version from `models list`.")],
    task: TaskOption,
    as_json: JsonOption = False,
) -> None:
    """One version: status, reason, figures beside the model it was compared with, accuracy
    per confidence band (student and LLM), lineage, and the routing fitted with it and the
    evidence for it."""
    config = load_task(task)
    state = read_registry(Settings(), config)
    event = state.get(version)
    if as_json:
        print(json.dumps(_with_status(state, event)))
        return
    summary = Table(title=f"{event.version}: {state.status(version)}", show_header=False)
    summary.add_column("field")
    summary.add_column("value")
    summary.add_row("reason", event.reason)
    summary.add_row("artifact", event.artifact)
    summary.add_row("created", event.created_at.isoformat(timespec="seconds"))
    summary.add_row("parent", event.parent_version or "none")
    summary.add_row("data", ", ".join(f"{k} {v}" for k, v in event.data_counts.items()))
    summary.add_row("config hash / data hash", f"{event.config_hash} / {event.data_hash or '-'}")
    console.print(summary)
    figures = Table(title="figures on the evaluation set")
    figures.add_column("figure")
    figures.add_column(event.version, justify="right")
    figures.add_column(event.compared_with or "(no production model)", justify="right")
    for name, value in event.metrics.items():
        figures.add_row(name, _figure(value), _figure(event.baseline_metrics.get(name)))
    console.print(figures)
    if event.bands:
        bands = Table(title="accuracy per confidence band")
        for column in ("confidence", "items", "student", "LLM items", "LLM"):
            bands.add_column(column, justify="right")
        for band in event.bands:
            bands.add_row(
                f"{band.low:.2f}-{band.high:.2f}",
                str(band.n),
                _figure(band.accuracy),
                str(band.llm_n),
                _figure(band.llm_accuracy),
            )
        console.print(bands)
    print_policy(event, config)


def print_policy(event: ModelEvent, config: TaskConfig) -> None:
    """The routing fitted with the version, its evidence, and what workers apply."""
    policy = event.policy
    if policy is None:
        console.print("no routing policy was fitted with this version: the task's routing applies")
        return
    applied = effective_routing(config.routing, policy)
    written = config.routing.model_fields_set
    fitted = policy.threshold_evidence
    lines = [f"[bold]routing[/] applied by workers serving {event.version}:"]
    source = "task file" if "accept_threshold" in written else "fitted" if fitted else "default"
    lines.append(f"  accept threshold {applied.accept_threshold:.3f} ({source})")
    if fitted:
        accuracy = fitted.accepted_correct / fitted.accepted if fitted.accepted else 0.0
        low, high = wilson_interval(fitted.accepted_correct, fitted.accepted)
        lines.append(
            f"  fitted for target accuracy {fitted.target_accuracy}: {fitted.threshold:.3f} "
            f"accepts {fitted.accepted} of {fitted.items} gold items, {accuracy:.3f} right "
            f"(95 % {low:.3f}-{high:.3f})" + ("" if fitted.reached else ": target not reached")
        )
    bands_source = "task file" if written & {"llm_min_confidence", "llm_bands"} else "fitted"
    llm_bands = ", ".join(f"{lo:.2f}-{hi:.2f}" for lo, hi in applied.llm_bands or ())
    lines.append(
        f"  unsure items go to the LLM at confidence {llm_bands or 'any'} "
        f"(from {applied.llm_min_confidence:.2f}; {bands_source}), to people elsewhere"
    )
    console.print("\n".join(lines))
    if policy.band_evidence:
        table = Table(title="the LLM against the student, same gold items, by confidence band")
        for column in (
            "confidence",
            "items",
            "student",
            "LLM",
            "only LLM right",
            "only student right",
            "p",
            "verdict",
        ):
            table.add_column(column, justify="left" if column == "verdict" else "right")
        for band in policy.band_evidence:
            table.add_row(
                f"{band.low:.2f}-{band.high:.2f}",
                str(band.items),
                str(band.student_correct),
                str(band.llm_correct),
                str(band.llm_only),
                str(band.student_only),
                _figure(band.p_value),
                band.verdict.replace("_", " "),
            )
        console.print(table)
    for note in policy.notes:
        console.print(f"  note: {note}")


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="The version to serve.")],
    task: TaskOption,
) -> None:
    """Make VERSION the production model (whatever the gate said); workers follow in seconds."""
    settings = Settings()
    config = load_task(task)
    state = read_registry(settings, config)
    event = state.get(version)
    DirectoryStore(settings.artifacts_dir).fetch(event.artifact)  # refuse a damaged artifact
    publish(
        settings, config, promotion(state, event, "promoted by hand (`loopline models promote`)")
    )
    console.print(f"{version} is now in production for {config.name}")


@app.command()
def rollback(task: TaskOption) -> None:
    """Make the previous production model current again; workers follow in seconds."""
    settings = Settings()
    config = load_task(task)
    state = read_registry(settings, config)
    records = rollback_records(state)
    publish(settings, config, records)
    console.print(f"rolled back {config.name} from {records[0][0]} to {records[-1][1].version}")


@app.command()
def train(task: TaskOption) -> None:
    """Ask the task's trainer to start a run now (it must be running: `loopline trainer`)."""
    settings = Settings()
    config = load_task(task)
    redis_sync_client(settings).set(request_key(config), "1")
    console.print(f"asked the trainer of {config.name} for a run; `loopline models list` shows it")


def publish_model_dir(settings: Settings, task: TaskConfig, model_dir: Path) -> ModelEvent:
    """Register a model trained from files (`loopline train --publish`) as a candidate."""
    meta = read_meta(model_dir, task)
    store = DirectoryStore(settings.artifacts_dir)
    staging = store.work_dir() / "model"
    shutil.copytree(model_dir, staging)
    artifact = store.put(f"{task.name}/{meta.version}", staging)
    event = ModelEvent(
        task=task.name,
        version=meta.version,
        artifact=artifact,
        status="candidate",
        reason="registered from files (`loopline train --publish`); figures from its own "
        "held-out data",
        metrics=meta.metrics,
        parent_version=meta.parent_version,
        config_hash=meta.config_hash,
        data_counts=meta.data_counts,
        created_at=meta.created_at,
    )
    publish(settings, task, registration(event))
    return event


def _with_status(state: RegistryState, event: ModelEvent) -> dict:
    return {**event.model_dump(mode="json"), "status": state.status(event.version)}


def _workers(settings: Settings, task: TaskConfig) -> dict[str, dict]:
    raw = redis_sync_client(settings).hgetall(workers_key(task))
    return {k.decode(): json.loads(v) for k, v in raw.items()}


def _main_score(event: ModelEvent) -> str:
    for name in ("accuracy", "micro_f1", "f1"):
        if name in event.metrics:
            return f"{name} {event.metrics[name]:.3f}"
    return "-"


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
