"""`loopline bench ...`: benchmarks that print figures against a baseline measured in the same run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from loopline.schemas import ConfigError, load_task
from loopline.streams.bench import plot_latency, run_stream_bench
from loopline.streams.codec import text_from_line
from loopline.streams.settings import Settings

app = typer.Typer(help="Benchmarks: figures and plots, compared with a baseline in the same run.",
                  no_args_is_help=True)
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
    data: Annotated[Path | None, typer.Option(help="JSONL texts (default: test.jsonl beside the task).")] = None,
    latency_seconds: Annotated[float, typer.Option(help="How long to send at half the rate.")] = 20.0,
    out: Annotated[Path | None, typer.Option(help="Where to write result.json and latency.png.")] = None,
) -> None:
    """End-to-end throughput and latency of a real worker vs the student in-process."""
    settings = Settings()
    config = load_task(task)
    lines = (data or default_data(task)).read_text(encoding="utf-8").splitlines()
    texts = [text_from_line(line, plain=False).text for line in lines if line.strip()]
    workdir = output_dir(out, "bench-stream")
    result = run_stream_bench(settings, config, model, texts, n, workdir, latency_seconds,
                              report=lambda line: err.print(f"[dim]{line}[/]"))
    plot_latency(np.load(workdir / "latencies_ms.npy"), result, workdir / "latency.png")
    (workdir / "result.json").write_text(json.dumps(result.as_dict(), indent=2))

    table = Table(title=f"bench stream: {config.name}, {n} items, batch {settings.batch_size}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("student in-process (items/s, median of 3)", f"{result.in_process_items_per_s:,.0f}")
    table.add_row("end-to-end through Kafka (items/s)", f"{result.end_to_end_items_per_s:,.0f}")
    table.add_row("ratio end-to-end / in-process", f"{result.ratio:.2f}")
    table.add_row(f"latency p50 at {result.latency_rate_per_s:,.0f}/s (ms)", f"{result.latency_p50_ms:.0f}")
    table.add_row(f"latency p99 at {result.latency_rate_per_s:,.0f}/s (ms)", f"{result.latency_p99_ms:.0f}")
    Console().print(table)
    err.print(f"wrote {workdir / 'result.json'} and {workdir / 'latency.png'}")
