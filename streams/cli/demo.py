"""`loopline demo`: the quick start's main job (see streams/local/demo.py)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from loopline.streams.local.demo import run_demo
from loopline.streams.settings import Settings

console = Console(stderr=True)


def demo(
    llm: Annotated[bool, typer.Option(help="Start a local LLM for the unsure items.")] = True,
    llm_model: Annotated[
        str | None, typer.Option(help="Local model (default: LOOPLINE_LLM_MODEL).")
    ] = None,
    llm_wait: Annotated[
        float, typer.Option(help="Seconds to wait for LLM answers before reporting.")
    ] = 180.0,
    retrain: Annotated[bool, typer.Option(help="Train the student again.")] = False,
    keep_running: Annotated[
        bool, typer.Option(help="Leave the services running afterwards.")
    ] = False,
) -> None:
    """Start services, train a banking77 student, stream the test texts through a worker, report."""
    settings = Settings()
    model = (llm_model or settings.llm_model) if llm else None
    report = run_demo(
        settings,
        llm_model=model,
        retrain=retrain,
        llm_wait_s=llm_wait,
        keep_running=keep_running,
        console=console,
    )
    table = Table(title=f"loopline demo: banking77, {report.n} test texts", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    for outcome in ("prediction", "llm", "review", "deadletter"):
        table.add_row(f"annotate -> {outcome}", str(report.outcomes.get(outcome, 0)))
    accepted = report.student_accepted
    table.add_row(
        "accuracy of confident student predictions",
        f"{report.student_accepted_correct / accepted:.3f} ({accepted} items)" if accepted else "-",
    )
    table.add_row(
        "annotate throughput (items/s, first text in to last outcome)", f"{report.items_per_s:,.0f}"
    )
    if report.taught:
        answered = report.llm_answered
        table.add_row("LLM answers published", str(answered))
        if answered:
            llm_accuracy = report.llm_correct / answered
            student_accuracy = report.student_correct_where_llm_answered / answered
            table.add_row(
                "accuracy of LLM answers (the student's on the same items)",
                f"{llm_accuracy:.3f} ({student_accuracy:.3f})",
            )
    for reason, count in sorted(report.review_reasons.items()):
        table.add_row(f"review <- {reason}", str(count))
    Console().print(table)
