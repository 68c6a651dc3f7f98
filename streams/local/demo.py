"""`loopline demo`: once around the learning loop on local defaults, in one command.

Starts the services and seeds the registry: gold labels for a few texts per intent go on
`corrections` (as if people had labelled them before), and the trainer makes the first student
from them. A worker that follows the registry, the trainer and the review service run as
processes of their own (`streams/local/loop.py`). Then two passes over different texts of the
bundled data that the student has never seen, their gold labels held back:

1. pass 1 streams the first slice and reports where its items went (accepted, sent to the
   LLM, sent to people) and how right the outputs were;
2. a SIMULATED reviewer answers the review queue from the held-back gold labels, through the
   review service's REST API, as a person would on the review page; its answers reach the
   trainer's `--min-new-gold` (else the demo asks for a run), the gate judges the candidate,
   and the worker swaps to a promoted student between two batches;
3. pass 2 streams the second slice through whatever serves now.

Each run uses topics of its own, so runs never mix.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from loopline.processors.data import LabelledText, read_examples
from loopline.processors.metrics import correct_items
from loopline.schemas import Annotation, ConfigError, Prediction, RoutedItem, TaskConfig, load_task
from loopline.streams.agents.annotate import group_id
from loopline.streams.bench.loop import split_data
from loopline.streams.local import services
from loopline.streams.local.loop import LocalLoop, Verdict
from loopline.streams.report import write_report
from loopline.streams.report.gather import read_records
from loopline.streams.report.series import ROUTES, TaskRecords, item_routes
from loopline.streams.settings import Settings
from loopline.streams.topics import ensure_topics, wait_for_assignment

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "banking77"
SEED_LABELS = 10
"""Gold labels per intent the first student learns from: few, so that the loop has work."""
FIRST_MODEL_FLOOR = 0.25
"""The gate promotes the demo's first student at this accuracy (77 intents, 10 labels each)."""
STEP_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class PassFigures:
    """Where one pass's items went and how right the outputs were, on held-back gold."""

    texts: int
    versions: list[str]
    routes: dict[str, int]
    outputs: int
    """Items with an output of the student's (accepted) or the LLM's, no person asked."""
    outputs_correct: int
    student_correct: int
    """The student's answer to every text, accepted or not."""
    llm_waiting: int

    def share(self, route: str) -> float:
        return self.routes.get(route, 0) / self.texts

    @property
    def accuracy(self) -> float | None:
        return self.outputs_correct / self.outputs if self.outputs else None

    @property
    def student_accuracy(self) -> float:
        return self.student_correct / self.texts


@dataclass
class DemoReport:
    seed: int
    passes: list[PassFigures] = field(default_factory=list)
    answered: int = 0
    min_new_gold: int = 0
    first_version: str = ""
    candidate: str = ""
    promoted: bool = False
    verdict: str = ""
    review_url: str = ""
    run_dir: str = ""
    report_page: str = ""


def pass_figures(
    task: TaskConfig, gold: Mapping[str, LabelledText], records: TaskRecords
) -> PassFigures:
    """The figures of the items in `gold` from the task's messages. Pure.

    People's answers are the reference, so only the machines' outputs are scored: the
    student's where it was accepted, the LLM's where no person was asked."""
    routes = {r.item_id: r.route for r in item_routes(records) if r.item_id in gold}
    machine: dict[str, Prediction] = {}
    student: dict[str, Prediction | Annotation] = {}
    versions: set[str] = set()
    for record in records.predictions:
        prediction: Prediction = record.message
        if prediction.id not in gold or prediction.source not in ("student", "llm"):
            continue
        if prediction.revision >= getattr(machine.get(prediction.id), "revision", -1):
            machine[prediction.id] = prediction
        if prediction.source == "student":
            student[prediction.id] = prediction
            versions.add(prediction.model_version)
    for record in records.llm_requests + records.review:
        routed: RoutedItem = record.message
        for suggestion in routed.suggestions if routed.id in gold else ():
            if suggestion.source == "student":
                student.setdefault(routed.id, suggestion.annotation)
                versions.add(suggestion.model_version)
    scored = [i for i, route in routes.items() if route in ("accepted", "llm") and i in machine]

    def right(items: Sequence[str], answers: Mapping) -> int:
        expected = [gold[i] for i in items]
        return int(correct_items(task.kind, expected, [answers.get(i) for i in items]).sum())

    return PassFigures(
        texts=len(gold),
        versions=sorted(versions),
        routes={route: sum(r == route for r in routes.values()) for route in ROUTES},
        outputs=len(scored),
        outputs_correct=right(scored, machine),
        student_correct=right(list(gold), student),
        llm_waiting=sum(r == "llm" and i not in machine for i, r in routes.items()),
    )


def run_demo(
    settings: Settings,
    *,
    llm_model: str | None,
    llm_wait_s: float,
    pass_size: int,
    answers: int,
    review_port: int,
    keep_running: bool,
    console: Console,
) -> DemoReport:
    if not services.port_is_free(review_port):
        raise ConfigError(f"port {review_port} is taken: pass --review-port with a free one")
    task = load_task(EXAMPLE / "task.yml")
    seed, _, (unseen_1, unseen_2) = split_data(
        [
            *read_examples(EXAMPLE / "train.jsonl", task),
            *read_examples(EXAMPLE / "test.jsonl", task),
        ],
        task.label_names,
        seed_labels=SEED_LABELS,
        eval_items=0,
        rounds=2,
        seed=0,
    )
    if not 0 < pass_size <= len(unseen_1):
        raise ConfigError(f"--pass-size must be between 1 and {len(unseen_1)}")
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
    task = demo_task(task, f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}")
    run_dir = settings.state_dir / "demo" / task.topics.prefix.rstrip(".")
    run_dir.mkdir(parents=True, exist_ok=True)
    report = DemoReport(seed=len(seed), min_new_gold=answers)
    loop = LocalLoop(
        settings,
        task,
        run_dir,
        lambda line: console.print(f"[dim]{escape(line)}[/]"),
        review_port=review_port,
        trainer_args=["--min-new-gold", str(answers)],
    )
    report.review_url, report.run_dir = f"{loop.review_url}/", str(run_dir)
    finished = False
    try:
        console.rule(f"seed: {len(seed)} gold labels ({SEED_LABELS} per intent) to start from")
        ensure_topics(settings, task)
        loop.write_corrections(seed, "gold")  # all in before the trainer starts reading
        loop.start()
        say_how_people_answer(console, report.review_url, loop.task_file)
        # A trainer with data and no model trains as soon as it has read the topics.
        first = loop.train_and_wait(STEP_TIMEOUT_S, ask=False, after=None)
        report.first_version = first.event.version
        loop.start_worker()
        console.print("Waiting for the worker to load the student and join its group ...")
        loop.wait_worker(report.first_version, time.monotonic() + STEP_TIMEOUT_S)
        wait_for_assignment(settings, group_id(task), task.topic("texts"))

        report.passes.append(run_pass(loop, 1, unseen_1[:pass_size], llm_wait_s, console))
        console.rule(
            "[bold magenta]SIMULATED reviewer[/]: answers the review queue from the held-back "
            "gold labels, through the review service (a script, not a person)"
        )
        report.answered = loop.review(answers, report.passes[0].routes["people"])
        console.print(f"The simulated reviewer answered {report.answered} items.")
        if report.answered < answers:
            console.print(
                f"Fewer than the trainer's --min-new-gold {answers}: asking it for a run "
                "(what `loopline models train` does)."
            )
        verdict = loop.train_and_wait(
            STEP_TIMEOUT_S, ask=report.answered < answers, after=report.first_version
        )
        note_verdict(report, verdict, console)

        report.passes.append(run_pass(loop, 2, unseen_2[:pass_size], llm_wait_s, console))
        with console.status("writing the report page"):
            page, _ = write_report(settings, task, run_dir)
        report.report_page = str(page)
        finished = True
    finally:
        if finished and keep_running:
            pids = " ".join(str(p.pid) for p in loop.processes)
            console.print(
                f"The trainer, review service and worker keep running (pids {pids}); the "
                f"review page stays at {report.review_url}. Stop them with `kill {pids}`."
            )
        else:
            loop.stop()
        if not keep_running and already_up is None:
            services.down(settings, console=console)
    (run_dir / "summary.json").write_text(json.dumps(asdict(report), indent=2))
    return report


def demo_task(task: TaskConfig, run_id: str) -> TaskConfig:
    """The bundled task on topics of this run, its dev file as the trainer's fixed
    evaluation set, and a floor the first student of few labels can clear."""
    learning = task.learning.model_copy(
        update={
            "floor": FIRST_MODEL_FLOOR,
            "eval_file": str((EXAMPLE / "dev.jsonl").resolve()),
        }
    )
    return task.model_copy(
        update={
            "topics": task.topics.model_copy(update={"prefix": f"demo-{run_id}."}),
            "learning": learning,
        }
    )


def say_how_people_answer(console: Console, url: str, task_file: Path) -> None:
    console.print(
        f"[bold]Review page:[/] {url}  (to answer items yourself: make a token with "
        "`.venv/bin/loopline review token add YOUR_NAME` and paste it there; run the demo "
        "with --keep-running to keep the page up afterwards; the task file is "
        f"{task_file})"
    )


def run_pass(
    loop: LocalLoop,
    number: int,
    examples: list[LabelledText],
    llm_wait_s: float,
    console: Console,
) -> PassFigures:
    served = ", ".join(sorted(set(loop.served())))
    console.rule(f"pass {number}: {len(examples)} unseen texts through the worker ({served})")
    items = loop.stream(f"pass{number}", examples)
    total = len(loop.gold)  # the ledger counts every pass so far
    with stream_progress(console, total) as on_counts:
        loop.wait_stream(total, STEP_TIMEOUT_S, llm_wait_s=llm_wait_s, on_counts=on_counts)
    gold = {item.id: loop.gold[item.id] for item in items}
    figures = pass_figures(loop.task, gold, read_records(loop.settings, loop.task))
    if figures.llm_waiting:
        console.print(
            f"[yellow]{figures.llm_waiting} items of pass {number} still wait for the LLM; "
            "they stay on its topic and the worker answers them later.[/]"
        )
    return figures


@contextlib.contextmanager
def stream_progress(
    console: Console, total: int
) -> Iterator[Callable[[dict[str, dict[str, int]]], None]]:
    """Progress bars of the annotate and teach stages, fed with the ledger's counters."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=console) as progress:
        annotate = progress.add_task("annotate", total=total, detail="")
        teach = progress.add_task("teach (LLM)", total=0, detail="", visible=False)

        def show(counts: dict[str, dict[str, int]]) -> None:
            done = counts["annotate"]
            progress.update(
                annotate,
                completed=sum(done.get(k, 0) for k in ("prediction", "llm", "review")),
                detail=" ".join(f"{k}={v}" for k, v in done.items()),
            )
            if sent := done.get("llm", 0):
                taught = counts["teach"]
                answered = sum(taught.get(k, 0) for k in ("prediction", "review", "deadletter"))
                progress.update(teach, total=sent, completed=answered, visible=True)

        yield show


def note_verdict(report: DemoReport, verdict: Verdict, console: Console) -> None:
    report.candidate = verdict.event.version
    report.promoted = verdict.promoted
    report.verdict = verdict.event.reason or ""
    if verdict.promoted:
        console.print(
            f"[green]promoted[/] {verdict.event.version}; the worker swapped to it: "
            f"{escape(report.verdict)}"
        )
    else:
        console.print(
            f"[yellow]the gate rejected[/] {verdict.event.version}: {escape(report.verdict)}; "
            f"pass 2 runs on {report.first_version} again"
        )
