"""`loopline demo`: the quick start's main job (see streams/local/demo.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from loopline.streams.local.demo import DemoReport, PassFigures, run_demo
from loopline.streams.settings import Settings

console = Console(stderr=True)


def demo(
    llm: Annotated[
        bool,
        typer.Option(
            help="Also start a local LLM for the unsure items. On 2 cores it needs about a "
            "minute to warm up, then answers about one item a second: use a small --pass-size."
        ),
    ] = False,
    llm_model: Annotated[
        str | None, typer.Option(help="Local model (default: LOOPLINE_LLM_MODEL).")
    ] = None,
    llm_wait: Annotated[
        float,
        typer.Option(help="Seconds a pass waits for the LLM's answers after the student's."),
    ] = 90.0,
    pass_size: Annotated[
        int, typer.Option(help="Texts streamed in each pass (different ones in each).")
    ] = 1000,
    answers: Annotated[
        int,
        typer.Option(
            help="Most answers the simulated reviewer gives; also the trainer's --min-new-gold."
        ),
    ] = 900,
    review_port: Annotated[int, typer.Option(help="Port of the review service.")] = 8700,
    keep_running: Annotated[
        bool,
        typer.Option(help="Leave the services, the review page and the worker running afterwards."),
    ] = False,
) -> None:
    """The learning loop on banking77: seed a student, stream pass 1, a SIMULATED reviewer
    answers the review queue, the trainer promotes, the worker swaps, stream pass 2, compare."""
    settings = Settings()
    model = (llm_model or settings.llm_model) if llm else None
    report = run_demo(
        settings,
        llm_model=model,
        llm_wait_s=llm_wait,
        pass_size=pass_size,
        answers=answers,
        review_port=review_port,
        keep_running=keep_running,
        console=console,
    )
    Console(width=max(Console().width, 120)).print(comparison(report))
    console.print(f"Logs, task file and summary.json: {report.run_dir}")
    console.print(
        f"Report page: {report.report_page} "
        f"(again later: loopline report --task {report.run_dir}/task.yml)"
    )


def comparison(report: DemoReport) -> Table:
    """Pass 1 beside pass 2."""
    first, second = report.passes
    table = Table(
        title="loopline demo: banking77, before and after the loop "
        f"(seed {report.seed} gold labels; the simulated reviewer answered {report.answered})"
    )
    table.add_column("")
    table.add_column("pass 1", justify="right")
    table.add_column("pass 2", justify="right")
    rows: list[tuple[str, Callable[[PassFigures], str]]] = [
        ("model version", lambda p: ", ".join(p.versions) or "-"),
        ("texts (unseen, gold labels held back)", lambda p: str(p.texts)),
        ("accepted (the student's answer stands)", lambda p: f"{p.share('accepted'):.1%}"),
        ("sent to the LLM", lambda p: f"{p.share('llm'):.1%}"),
        ("sent to people", lambda p: f"{p.share('people'):.1%}"),
        ("accuracy of the outputs (accepted + LLM)", _accuracy),
        ("the student's accuracy on every text", lambda p: f"{p.student_accuracy:.3f}"),
    ]
    for name, cell in rows:
        table.add_row(name, cell(first), cell(second))
    verdict = "promoted" if report.promoted else "rejected"
    table.caption = f"{report.candidate} {verdict}: {report.verdict}"
    return table


def _accuracy(figures: PassFigures) -> str:
    if figures.accuracy is None:
        return "-"
    return f"{figures.accuracy:.3f} ({figures.outputs} items)"
