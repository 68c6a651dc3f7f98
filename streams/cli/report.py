"""`loopline report`: one HTML page on how a task's loop is doing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from loopline.schemas import load_task
from loopline.streams.report import write_report
from loopline.streams.settings import Settings

err = Console(stderr=True)


def report(
    task: Annotated[Path, typer.Option("--task", "-t", help="The task's YAML config.")],
    out: Annotated[
        Path, typer.Option(help="Directory for report-<task>.html (created when missing).")
    ] = Path("reports"),
) -> None:
    """Learning curve, shares accepted / LLM / people over time, LLM tokens and cost, live
    audit accuracy and review queue depth, as one self-contained HTML page."""
    settings = Settings()
    config = load_task(task)
    with err.status(f"reading {config.topics.prefix}* topics and Redis"):
        path, summary = write_report(settings, config, out)
    for name, value in summary.items():
        err.print(f"  {name}: {value}")
    err.print(f"[bold]report[/] written to {path}")
