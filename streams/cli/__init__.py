"""The `loopline` command. Each module here holds one group of commands; this one lists them all."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from loopline.schemas import LooplineError
from loopline.streams.cli import (
    bench,
    demo,
    encoder,
    infra,
    llm,
    model,
    models,
    report,
    review,
    schemas,
    stream,
)

app = typer.Typer(
    name="loopline",
    help="Human-in-the-loop distillation on Kafka: a fast spaCy student answers every item, "
    "an LLM and people answer the rest and teach it.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


app.command()(demo.demo)
app.command()(stream.worker)
app.command()(stream.produce)
app.command()(stream.consume)
app.command()(stream.stats)
app.command("train")(model.train)
app.command("evaluate")(model.evaluate)
app.command("report")(report.report)
app.command("trainer")(models.trainer)
app.add_typer(schemas.app, name="schemas")
app.add_typer(infra.app, name="infra")
app.add_typer(llm.app, name="llm")
app.add_typer(encoder.app, name="encoder")
app.add_typer(bench.app, name="bench")
app.add_typer(review.app, name="review")
app.add_typer(models.app, name="models")


def main() -> None:
    """Expected errors print one line saying what to do and exit 2; bugs keep their traceback."""
    try:
        app()
    except LooplineError as error:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {escape(str(error))}")
        sys.exit(2)
