"""`loopline train` and `loopline evaluate`: build a student, and measure any annotator.

Bad data or arguments raise LooplineError, which `loopline.streams.cli.main` turns into one
line on stderr and exit code 2.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loopline.processors.data import read_examples
from loopline.processors.evaluation import EvalReport
from loopline.processors.evaluation import evaluate as evaluate_processor
from loopline.processors.metrics import LabelScore
from loopline.processors.protocol import Processor
from loopline.processors.registry import make
from loopline.processors.student import ModelMeta
from loopline.processors.training import TrainProgress, TrainReport
from loopline.processors.training import train as train_student
from loopline.schemas import ConfigError, TaskConfig, load_task
from loopline.streams.cli.models import publish_model_dir
from loopline.streams.settings import Settings
from loopline.streams.wiring import build_teacher

console = Console()
errors = Console(stderr=True)
PER_LABEL_ROWS = 12
"""Tasks with more labels show only this many of their weakest labels."""

TaskOption = Annotated[Path, typer.Option("--task", help="Task file (task.yml or its folder).")]


def train(
    task: TaskOption,
    data: Annotated[Path, typer.Option("--data", help="Training data, Prodigy-style JSONL.")],
    out: Annotated[Path, typer.Option("--out", help="New model directory to write.")],
    eval_data: Annotated[
        Path | None,
        typer.Option(
            "--eval",
            help="Gold held-out data for calibration and scores. Default: hold out "
            "student.calibration_share of the human training data.",
        ),
    ] = None,
    architecture: Annotated[
        str | None,
        typer.Option(
            help="Override student.architecture: bow, ensemble, cnn or encoder (textcat); "
            "a comma-separated list (bow,encoder) makes a cascade of those steps."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace --out if it already exists.")] = False,
    publish: Annotated[
        bool,
        typer.Option(
            help="Also register the model in the task's registry (a candidate; make it "
            "production with `loopline models promote`)."
        ),
    ] = False,
) -> None:
    """Train a student (spaCy, encoder or a cascade), calibrate its confidence and save it
    with its scores."""
    config = _with_architecture(load_task(task), architecture)
    examples = read_examples(data, config)
    heldout = read_examples(eval_data, config) if eval_data else None
    with TrainProgressBars() as on_progress:
        report = train_student(
            config,
            examples,
            heldout,
            out_dir=out,
            on_progress=on_progress,
            force=force,
            cache_dir=Settings().cache_dir,
        )
    _print_train_report(report)
    if publish:
        event = publish_model_dir(Settings(), config, report.out_dir)
        console.print(
            f"registered {event.version} as a candidate; serve it with `loopline models "
            f"promote {event.version} --task {task}`"
        )


def evaluate(
    task: TaskOption,
    data: Annotated[Path, typer.Option("--data", help="Gold data, Prodigy-style JSONL.")],
    annotator: Annotated[
        str, typer.Option(help="`student:MODEL_DIR` or `llm` (the endpoint in LOOPLINE_LLM_*).")
    ],
    batch_size: Annotated[int, typer.Option(min=1, help="Items per annotate call.")] = 256,
    json_output: Annotated[
        bool, typer.Option("--json", help="End the output with one JSON object.")
    ] = False,
) -> None:
    """Score an annotator on gold data: quality, calibration, speed and cost."""
    settings = Settings()
    config = load_task(task)
    examples = read_examples(data, config)
    processor = build_annotator(annotator, config, settings)
    report = asyncio.run(_evaluate_with_progress(processor, config, examples, batch_size, settings))
    _print_eval_report(report)
    if json_output:
        print(json.dumps(report.to_dict()))


# annotators ---------------------------------------------------------------------------------


def build_annotator(spec: str, task: TaskConfig, settings: Settings) -> Processor:
    """`student:DIR` -> loopline.Student.v2 (any architecture); `llm` -> the LLM teacher from
    LOOPLINE_LLM_*.

    The teacher is built without Redis: no response cache, so every item costs a real call
    and the figures measure the LLM, not the cache.
    """
    kind, _, argument = spec.partition(":")
    if kind == "student" and argument:
        return make(
            "loopline.Student.v2", path=Path(argument), task=task, threads=settings.encoder_threads
        )
    if kind == "llm" and not argument:
        return build_teacher(task, settings, redis=None)
    raise ConfigError(f"--annotator {spec!r}: use student:MODEL_DIR or llm")


# progress -----------------------------------------------------------------------------------


class TrainProgressBars:
    """Rich bars, one per epoch (ending with its loss and held-out score) or other stage
    (the encoder's embedding and head fitting); `transient` ones vanish when done."""

    def __init__(self, transient: bool = False) -> None:
        self.transient = transient

    def __enter__(self):
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=errors,
            transient=self.transient,
        )
        self.progress.__enter__()
        self.bars: dict[tuple[str, int], Any] = {}
        return self.update

    def update(self, event: TrainProgress) -> None:
        key = (event.stage, event.epoch)
        epochs = event.stage.endswith("train")
        if key not in self.bars:
            name = event.stage.removesuffix("train") if epochs else event.stage
            name += f"epoch {event.epoch}/{event.epochs}" if epochs else ""
            self.bars[key] = self.progress.add_task(name, total=event.steps, status="")
        status = f"loss {event.loss:.3f}" if epochs else ""
        if event.score is not None:
            status += f"  held-out {event.score_name} {event.score:.3f}"
        self.progress.update(self.bars[key], completed=event.step, total=event.steps, status=status)

    def __exit__(self, *exc_info):
        return self.progress.__exit__(*exc_info)


async def _evaluate_with_progress(
    processor: Processor,
    task: TaskConfig,
    examples: list,
    batch_size: int,
    settings: Settings,
) -> EvalReport:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=errors) as progress:
        bar = progress.add_task("annotating", total=len(examples))
        return await evaluate_processor(
            processor,
            task,
            examples,
            batch_size=batch_size,
            price_per_1k_tokens=settings.llm_price_per_1k_tokens,
            on_batch=lambda n: progress.advance(bar, n),
        )


# output -------------------------------------------------------------------------------------


def _print_train_report(report: TrainReport) -> None:
    metrics = report.metrics
    table = Table(title=f"{report.version}  (held-out: {report.meta.calibration_data})")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in report.scores.overall.items():
        table.add_row(name, f"{value:.3f}")
    ece = f"{metrics['ece_calibrated']:.3f} calibrated"
    if "ece_raw" in metrics:
        ece = f"{metrics['ece_raw']:.3f} raw -> " + ece
    table.add_row("calibration error (ECE, out-of-fold)", ece)
    table.add_row("calibration", _calibration_text(report.meta))
    table.add_row(*_threshold_row(metrics))
    training = f"{metrics['train_seconds']:.1f} s, {metrics['train_docs_per_s']:.0f} docs/s"
    table.add_row("training", training)
    predict = (
        f"{metrics['predict_docs_per_s']:.0f} docs/s (batch 256), "
        f"{metrics['latency_single_ms_p50']:.2f} ms single (p50)"
    )
    table.add_row("predict", predict)
    table.add_row("model size", f"{metrics['model_mb']:.1f} MB")
    table.add_row("data", ", ".join(f"{k} {v}" for k, v in report.meta.data_counts.items()))
    for step in report.meta.steps:
        share = metrics[f"share_{step.architecture}"]
        kept = "the rest" if step.threshold is None else f"confidence >= {step.threshold:.3f}"
        table.add_row(f"step {step.architecture}", f"answers {share:.1%} ({kept})")
    console.print(table)
    console.print(_per_label_table(report.scores.per_label))
    console.print(f"saved {report.version} to {report.out_dir}")
    console.print(f"reliability diagram: {report.out_dir / 'reliability.png'}")


def _print_eval_report(report: EvalReport) -> None:
    table = Table(title=f"{report.annotator} on {report.n} items")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in report.scores.overall.items():
        table.add_row(name, f"{value:.3f}")
    if report.errors:
        table.add_row("unanswered", ", ".join(f"{k} {v}" for k, v in report.errors.items()))
    table.add_row("calibration error (ECE)", f"{report.ece:.3f}")
    threshold = {
        "accept_threshold": report.accept_threshold,
        "accepted_share": report.accepted_share,
        "accepted_accuracy": report.accepted_accuracy,
    }
    table.add_row(*_threshold_row(threshold))
    table.add_row("throughput", f"{report.items_per_s:.1f} items/s")
    latency = f"p50 {report.latency_ms(50):.2f} ms, p99 {report.latency_ms(99):.2f} ms"
    table.add_row(f"latency per call of {report.batch_size}", latency)
    if report.tokens is not None:
        table.add_row("tokens", f"{report.tokens} (cost {report.cost:.4f})")
    console.print(table)
    console.print(_per_label_table(report.scores.per_label))


def _threshold_row(metrics: dict[str, float | None]) -> tuple[str, str]:
    accuracy = metrics.get("accepted_accuracy")
    accuracy_text = f"{accuracy:.3f}" if accuracy is not None else "n/a"
    return (
        f"at confidence >= {metrics['accept_threshold']:.2f}",
        f"accuracy {accuracy_text} on {metrics['accepted_share']:.1%} of items",
    )


def _per_label_table(per_label: dict[str, LabelScore]) -> Table:
    rows = sorted(per_label.items(), key=lambda item: item[1].f1)
    shown = rows if len(rows) <= PER_LABEL_ROWS else rows[:PER_LABEL_ROWS]
    title = "per label" if shown is rows else f"{PER_LABEL_ROWS} weakest of {len(rows)} labels"
    table = Table(title=title)
    for column in ("label", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for label, s in shown:
        figures = (f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", str(s.support))
        table.add_row(label, *figures)
    return table


def _calibration_text(meta: ModelMeta) -> str:
    if meta.steps:
        return "each step its own (see its directory under steps/)"
    temperature = meta.temperature
    if isinstance(temperature, list):
        text = f"temperature per label, {min(temperature):.2f} to {max(temperature):.2f}"
    else:
        text = f"temperature {temperature:.3f}"
    if meta.item_platt is not None:
        slope, intercept = meta.item_platt
        text += f"; item Platt slope {slope:.2f}, intercept {intercept:.2f}"
    return text


def _with_architecture(task: TaskConfig, architecture: str | None) -> TaskConfig:
    if architecture is None:
        return task
    steps = architecture.split(",")
    update = (
        {"architecture": "cascade", "steps": steps}
        if len(steps) > 1
        else {
            "architecture": architecture,
            "steps": [],
        }
    )
    try:
        student = task.student.model_validate({**task.student.model_dump(), **update})
    except ValueError:
        raise ConfigError(
            f"--architecture {architecture!r}: use bow, ensemble, cnn or encoder, or several "
            "of them, cheapest first, for a cascade (bow,encoder)"
        ) from None
    return task.model_copy(update={"student": student})
