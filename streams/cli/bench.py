"""`loopline bench ...`: figures printed beside a baseline measured in the same run."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from loopline.processors.data import read_examples
from loopline.processors.students import load_student
from loopline.schemas import ConfigError, load_task
from loopline.streams.bench import chaos as chaos_bench
from loopline.streams.bench import students as students_bench
from loopline.streams.bench.loop import plot_loop, result_dict, run_loop_bench
from loopline.streams.bench.review import plot_latencies, run_review_bench
from loopline.streams.bench.stream import plot_latency, run_stream_bench
from loopline.streams.bench.teacher import compare, plot, run_llm, run_student
from loopline.streams.cli.model import TrainProgressBars
from loopline.streams.codec import text_from_line
from loopline.streams.settings import Settings
from loopline.streams.wiring import build_teacher

app = typer.Typer(
    help="Benchmarks: figures and plots, compared with a baseline in the same run.",
    no_args_is_help=True,
)
err = Console(stderr=True)


def default_data(task_path: Path) -> Path:
    folder = task_path if task_path.is_dir() else task_path.parent
    candidate = folder / "test.jsonl"
    if not candidate.exists():
        raise ConfigError(f"no --data given and no {candidate}; pass --data FILE.jsonl")
    return candidate


def output_dir(out: Path | None, name: str) -> Path:
    path = out or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@app.command()
def stream(
    task: Annotated[Path, typer.Option("--task", "-t", help="The task's YAML config.")],
    model: Annotated[Path, typer.Option(help="Student model directory.")],
    n: Annotated[int, typer.Option(help="Items in the throughput backlog.")] = 20_000,
    data: Annotated[
        Path | None, typer.Option(help="JSONL texts (default: test.jsonl beside the task).")
    ] = None,
    latency_seconds: Annotated[
        float, typer.Option(help="How long to send at half the rate.")
    ] = 20.0,
    workers: Annotated[
        int, typer.Option(help="Worker processes sharing the task (at most topics.partitions).")
    ] = 1,
    out: Annotated[
        Path | None, typer.Option(help="Where to write result.json and latency.png.")
    ] = None,
) -> None:
    """End-to-end throughput and latency of real workers vs the student in-process."""
    settings = Settings()
    config = load_task(task)
    lines = (data or default_data(task)).read_text(encoding="utf-8").splitlines()
    texts = [text_from_line(line, plain=False).text for line in lines if line.strip()]
    workdir = output_dir(out, "bench-stream")
    result = run_stream_bench(
        settings,
        config,
        model,
        texts,
        n,
        workdir,
        latency_seconds,
        workers,
        report=lambda line: err.print(f"[dim]{line}[/]"),
    )
    plot_latency(np.load(workdir / "latencies_ms.npy"), result, workdir / "latency.png")
    (workdir / "result.json").write_text(json.dumps(result.as_dict(), indent=2))

    table = Table(
        title=f"bench stream: {config.name}, {n} items, batch {settings.batch_size}, "
        f"{workers} worker(s)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        "student in-process (items/s, median of 3)", f"{result.in_process_items_per_s:,.0f}"
    )
    table.add_row(
        "plain aiokafka pipe, same work (items/s)", f"{result.plain_pipe_items_per_s:,.0f}"
    )
    table.add_row("end-to-end through Kafka (items/s)", f"{result.end_to_end_items_per_s:,.0f}")
    table.add_row("ratio end-to-end / plain pipe", f"{result.ratio_to_plain_pipe:.2f}")
    table.add_row("ratio end-to-end / in-process", f"{result.ratio:.2f}")
    table.add_row(
        f"latency p50 at {result.latency_rate_per_s:,.0f}/s (ms)", f"{result.latency_p50_ms:.0f}"
    )
    table.add_row(
        f"latency p99 at {result.latency_rate_per_s:,.0f}/s (ms)", f"{result.latency_p99_ms:.0f}"
    )
    Console().print(table)
    err.print(f"wrote {workdir / 'result.json'} and {workdir / 'latency.png'}")


@app.command()
def teacher(
    task: Annotated[Path, typer.Option("--task", "-t", help="The task's YAML config.")],
    data: Annotated[Path, typer.Option(help="Gold JSONL (Prodigy-style) to score against.")],
    model: Annotated[Path, typer.Option(help="Student model directory.")],
    thresholds: Annotated[
        str, typer.Option(help="Comma-separated student confidence thresholds.")
    ] = "0.5,0.7,0.8,0.9,0.95,0.98,0.99",
    limit: Annotated[int | None, typer.Option(help="Use only the first N items.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to write result.json and cascade.png.")
    ] = None,
) -> None:
    """Student alone vs LLM alone vs student-then-LLM: quality, LLM share, speed, tokens, cost."""
    settings = Settings()
    config = load_task(task)
    gold = read_examples(data, config)[:limit]
    texts = [example.text for example in gold]
    cuts = sorted(float(value) for value in thresholds.split(","))
    workdir = output_dir(out, "bench-teacher")

    student = load_student(model, config, threads=settings.encoder_threads)
    student_run = run_student(student, texts, settings.batch_size)
    llm = build_teacher(config, settings, redis=None)
    with Progress(console=err) as progress:
        bar = progress.add_task(f"LLM ({settings.llm_model})", total=len(texts))
        llm_run = asyncio.run(
            run_llm(llm, texts, settings.llm_max_concurrency, lambda n: progress.advance(bar, n))
        )
    bench = compare(config, gold, student_run, llm_run, cuts, settings.llm_price_per_1k_tokens)
    metric = {"textcat": "accuracy", "textcat_multilabel": "micro-F1", "ner": "entity F1"}[
        config.kind
    ]
    plot(
        bench,
        metric,
        f"{config.name}: {len(gold)} gold items, LLM {settings.llm_model}",
        workdir / "cascade.png",
    )
    (workdir / "result.json").write_text(json.dumps(bench.as_dict(), indent=2))

    table = Table(title=f"bench teacher: {config.name}, {len(gold)} items")
    for column in ("annotator", metric, "to LLM", "items/s", "tokens", "cost"):
        table.add_column(column, justify="left" if column == "annotator" else "right")
    for point in (bench.student, bench.llm, *bench.cascades):
        table.add_row(
            point.name,
            f"{point.quality:.3f}",
            f"{point.llm_share:.1%}",
            f"{point.items_per_s:,.1f}",
            f"{point.tokens:,}",
            f"{point.cost:.4f}",
        )
    Console().print(table)
    Console().print(bench.verdict)
    if bench.llm_errors:
        err.print(f"[yellow]{bench.llm_errors} LLM calls gave no answer (counted as wrong).[/]")
    err.print(f"wrote {workdir / 'result.json'} and {workdir / 'cascade.png'}")


@app.command()
def students(
    task: Annotated[Path, typer.Option("--task", "-t", help="The task's YAML config (textcat).")],
    train: Annotated[Path, typer.Option(help="Pool of gold training data, Prodigy-style JSONL.")],
    test: Annotated[Path, typer.Option(help="Gold test data, Prodigy-style JSONL.")],
    names: Annotated[
        str,
        typer.Option(
            "--students",
            help="Comma-separated students; `a>b` is the cascade of a, then b.",
        ),
    ] = "bow,ensemble,encoder,bow>encoder",
    per_label: Annotated[
        str, typer.Option(help="Labelled examples per label to train on (`all`: the pool).")
    ] = "3,10,all",
    dev_per_label: Annotated[
        int, typer.Option(min=2, help="Held-out examples per label for calibration.")
    ] = 5,
    out: Annotated[
        Path | None, typer.Option(help="Where to write result.json, students.png and models.")
    ] = None,
) -> None:
    """bow, ensemble, encoder and cascades side by side on the same items, at 3, 10 and all
    labels per class: accuracy, macro-F1, ECE, items/s, the share each cascade step answers."""
    settings = Settings()
    config = load_task(task)
    workdir = output_dir(out, "bench-students")
    sizes = students_bench.parse_sizes(per_label)
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    for name in chosen:
        students_bench.student_task(config, name)  # fail early on a bad name
    results = students_bench.run_students_bench(
        config,
        config.name,
        read_examples(train, config),
        read_examples(test, config),
        chosen,
        sizes,
        dev_per_label=dev_per_label,
        workdir=workdir,
        cache_dir=settings.cache_dir,
        batch_size=settings.batch_size,
        threads=settings.encoder_threads,
        progress=lambda: TrainProgressBars(transient=True),
        report=lambda line: err.print(f"[dim]{line}[/]"),
    )
    targets = students_bench.targets(results)
    title = f"{config.name}: {len(read_examples(test, config))} test items"
    students_bench.plot(results, title, workdir / "students.png")
    payload = {
        "results": [r.as_dict() for r in results],
        "targets": [t.as_dict() for t in targets],
    }
    (workdir / "result.json").write_text(json.dumps(payload, indent=2))

    table = Table(title=f"bench students: {title}, batch {settings.batch_size}")
    columns = ("per label", "student", "train items", "accuracy", "macro-F1", "ECE")
    for column in (*columns, "items/s", "1 text (ms)", "answered by step"):
        table.add_column(
            column, justify="left" if column in ("student", "answered by step") else "right"
        )
    for r in results:
        shares = ", ".join(f"{step} {share:.0%}" for step, share in r.shares.items())
        table.add_row(
            r.per_label,
            r.student,
            f"{r.train_items:,}",
            f"{r.accuracy:.3f}",
            f"{r.macro_f1:.3f}",
            f"{r.ece:.3f}",
            f"{r.items_per_s:,.0f}",
            f"{r.single_ms:.2f}",
            shares if len(r.shares) > 1 else "",
        )
    wide = Console(width=max(Console().width, 132))
    wide.print(table)
    for target in targets:
        wide.print(target.text())
    err.print(f"wrote {workdir / 'result.json'} and {workdir / 'students.png'}")


@app.command()
def review(
    task: Annotated[Path, typer.Option("--task", "-t", help="The task's YAML config.")],
    reviewers: Annotated[int, typer.Option(help="Scripted reviewers answering at once.")] = 16,
    items: Annotated[int, typer.Option(help="Review items to answer.")] = 3000,
    data: Annotated[
        Path | None, typer.Option(help="JSONL texts (default: test.jsonl beside the task).")
    ] = None,
    instances: Annotated[int, typer.Option(help="Review service processes sharing one Redis.")] = 1,
    port: Annotated[
        int, typer.Option(help="Port of the first review service (the next ones follow).")
    ] = 8790,
    out: Annotated[
        Path | None, typer.Option(help="Where to write result.json and latency.png.")
    ] = None,
) -> None:
    """Review service: answers/s and latencies of scripted reviewers over HTTP, against the
    raw Kafka produce rate of the same messages."""
    settings = Settings()
    config = load_task(task)
    lines = (data or default_data(task)).read_text(encoding="utf-8").splitlines()
    examples = [json.loads(line) for line in lines if line.strip()]
    workdir = output_dir(out, "bench-review")
    result, tally = run_review_bench(
        settings,
        config,
        examples,
        items,
        reviewers,
        workdir,
        port,
        report=lambda line: err.print(f"[dim]{line}[/]"),
        instances=instances,
    )
    plot_latencies(tally, result, workdir / "latency.png")
    (workdir / "result.json").write_text(json.dumps(result.as_dict(), indent=2))

    table = Table(
        title=f"bench review: {config.name}, {items} items, {reviewers} reviewers, "
        f"{instances} service instance(s)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("answers/s (over HTTP, acknowledged by Kafka)", f"{result.answers_per_s:,.0f}")
    table.add_row("next p50 / p99 (ms)", f"{result.next_p50_ms:.1f} / {result.next_p99_ms:.1f}")
    table.add_row(
        "answers p50 / p99 (ms)", f"{result.answer_p50_ms:.1f} / {result.answer_p99_ms:.1f}"
    )
    table.add_row("double leases (must be 0)", str(result.double_leases))
    table.add_row("answers lost (must be 0)", str(result.lost))
    table.add_row(
        f"baseline: raw Kafka produce ({result.messages_per_answer:.1f} messages per answer)",
        f"{result.raw_produce_messages_per_s:,.0f} msg/s = "
        f"{result.raw_produce_answers_per_s:,.0f} answers/s",
    )
    table.add_row("ratio service / raw Kafka", f"{result.ratio:.2f}")
    table.add_row(
        f"baseline: {reviewers} Kafka writers, each awaiting one answer's acks",
        f"{result.acked_writers_answers_per_s:,.0f} answers/s",
    )
    table.add_row("ratio service / acknowledged writers", f"{result.ratio_to_acked_writers:.2f}")
    table.add_row(
        "CPU per answer: service(s) / scripted reviewers (ms)",
        f"{result.service_cpu_ms_per_answer:.2f} / {result.reviewers_cpu_ms_per_answer:.2f}",
    )
    Console().print(table)
    err.print(f"wrote {workdir / 'result.json'} and {workdir / 'latency.png'}")


@app.command()
def chaos(
    task: Annotated[Path, typer.Option("--task", "-t", help="The task's YAML config.")],
    model: Annotated[Path, typer.Option(help="Student model directory.")],
    n: Annotated[int, typer.Option(help="Items to stream.")] = 100_000,
    workers: Annotated[int, typer.Option(help="Worker processes (at most topics.partitions).")] = 2,
    llm: Annotated[
        bool, typer.Option("--llm", help="Also run and kill a local LLM server (smollm2-135m).")
    ] = False,
    times: Annotated[int, typer.Option(help="Kills of each service.")] = 2,
    duration: Annotated[float, typer.Option(help="Seconds over which the items are sent.")] = 180.0,
    seed: Annotated[int, typer.Option(help="Seed of the fault moments.")] = 0,
    data: Annotated[
        Path | None, typer.Option(help="JSONL texts (default: test.jsonl beside the task).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to write result.json, chaos.png and logs.")
    ] = None,
) -> None:
    """Kill (SIGKILL) and restart a worker, Kafka, Redis (and the LLM) while streaming; then
    account for every id: lost, duplicates and whether they are byte-identical, recovery."""
    config = load_task(task)
    lines = (data or default_data(task)).read_text(encoding="utf-8").splitlines()
    texts = [text_from_line(line, plain=False).text for line in lines if line.strip()]
    workdir = output_dir(out, "bench-chaos")
    with Progress(console=err) as bars:
        produced = bars.add_task("produced", total=n)
        answered = bars.add_task("answered", total=n)

        def show(sent: int, done: int, status: str) -> None:
            bars.update(produced, completed=sent, description=f"produced ({status})")
            bars.update(answered, completed=done)

        result, start_ms, answered_ms = chaos_bench.run_chaos_bench(
            config, model, texts, n, workdir, workers=workers, llm=llm, times=times,
            duration_s=duration, seed=seed, console=err, progress=show,
        )  # fmt: skip
    chaos_bench.plot(result, start_ms, answered_ms, workdir / "chaos.png")
    (workdir / "result.json").write_text(json.dumps(result.as_dict(), indent=2))

    table = Table(title=f"bench chaos: {config.name}, {n} items, {workers} worker(s)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("ids accounted for", f"{result.ids_accounted:,} / {n:,}")
    table.add_row("lost", str(result.lost))
    identical = "all byte-identical" if result.duplicates_identical else "NOT identical"
    table.add_row("duplicate outputs", f"{result.duplicates:,} ({identical})")
    for label, value in (("before", result.throughput_before), ("during", result.throughput_during),
                         ("after", result.throughput_after)):  # fmt: skip
        table.add_row(f"throughput {label} the faults (items/s)", f"{value:,.0f}")
    if llm:
        table.add_row(
            "LLM requests with a teach outcome by the end",
            f"{result.llm_answered:,} / {result.llm_requests:,}",
        )
    table.add_row("unplanned worker restarts", str(len(result.unplanned_restarts)))
    Console().print(table)
    faults = Table(title="faults")
    for column in ("service", "killed at (s)", "restart took (s)", "recovered after (s)"):
        faults.add_column(column, justify="left" if column == "service" else "right")
    for fault in result.faults:
        recovered = "never" if fault.recovered_s is None else f"{fault.recovered_s:.1f}"
        faults.add_row(
            fault.service, f"{fault.at_s:.0f}", f"{fault.restarted_after_s:.1f}", recovered
        )
    Console().print(faults)
    for line in result.unplanned_restarts:
        err.print(f"[yellow]{line}[/]")
    err.print(f"wrote {workdir / 'result.json'} and {workdir / 'chaos.png'}")
    chaos_bench.check(result)


@app.command("loop")
def loop(
    task: Annotated[Path, typer.Option("--task", "-t", help="The task's YAML config.")],
    data: Annotated[
        Path, typer.Option(help="Gold JSONL: the stream's texts and the reviewer's answers.")
    ],
    test: Annotated[Path, typer.Option(help="Held-out gold JSONL, never trained on.")],
    seed_labels: Annotated[
        int, typer.Option(help="Gold labels per label to start from (0: LLM silver labels).")
    ] = 3,
    review_budget: Annotated[
        int, typer.Option(help="Most answers the reviewer gives a round.")
    ] = 100,
    rounds: Annotated[int, typer.Option(help="Rounds of streaming, reviewing, training.")] = 4,
    eval_items: Annotated[
        int, typer.Option(help="Gold items of --data kept as the trainer's evaluation set.")
    ] = 100,
    test_n: Annotated[
        int | None, typer.Option(help="Score on the first N test items only.")
    ] = None,
    port: Annotated[int, typer.Option(help="Port of the review service.")] = 8795,
    out: Annotated[
        Path | None, typer.Option(help="Where to write result.json and the plot.")
    ] = None,
) -> None:
    """The learning loop on real services: seed, then rounds of stream -> scripted review ->
    train -> hot swap; per round accuracy of the final outputs on held-out gold, shares
    accepted / LLM / people, LLM tokens; baselines: the LLM alone, a student on all gold."""
    settings = Settings()
    config = load_task(task)
    train_examples = read_examples(data, config)
    test_examples = read_examples(test, config)[:test_n]
    workdir = output_dir(out, "bench-loop")
    settings = settings.model_copy(update={"artifacts": workdir / "artifacts"})
    result = run_loop_bench(
        settings,
        config,
        train_examples,
        test_examples,
        seed_labels=seed_labels,
        review_budget=review_budget,
        rounds=rounds,
        eval_items=eval_items,
        workdir=workdir,
        review_port=port,
        report=lambda line: err.print(f"[dim]{line}[/]"),
    )
    plot_loop(result, workdir / "learning-curve.png")
    (workdir / "result.json").write_text(json.dumps(result_dict(result), indent=2))
    table = Table(
        title=f"bench loop: {config.name}, seed {seed_labels} per label + {eval_items} for "
        f"evaluation, review budget {review_budget} a round, {len(test_examples)} held-out items"
    )
    for column in (
        "round",
        "model",
        "gold",
        "threshold",
        "final acc.",
        "student acc.",
        "accepted",
        "LLM",
        "people",
        "LLM tokens",
        "reviewed",
    ):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in result.rounds:
        table.add_row(
            str(r.round),
            r.version,
            str(r.gold_labels),
            f"{r.accept_threshold:.3f}",
            f"{r.test_accuracy:.3f}",
            f"{r.test_student_accuracy:.3f}",
            f"{r.stream_accepted:.1%}",
            f"{r.stream_llm:.1%}",
            f"{r.stream_people:.1%}",
            f"{r.llm_tokens:,}",
            str(r.reviewed),
        )
    Console(width=160).print(table)
    if result.llm_alone_accuracy is not None:
        err.print(
            f"baseline: the LLM alone {result.llm_alone_accuracy:.3f} "
            f"({result.llm_alone_tokens:,} tokens for {len(test_examples)} items)"
        )
    err.print(
        f"baseline: a student on all {result.all_gold_labels} gold labels "
        f"{result.all_gold_accuracy:.3f}"
    )
    err.print(f"results and learning-curve.png in {workdir}")
