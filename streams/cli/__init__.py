"""The `loopline` command. Each module here holds one group of commands; this one lists them all."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="loopline",
    help="Human-in-the-loop distillation on Kafka: a fast spaCy student answers every item, "
    "an LLM and people answer the rest and teach it.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def main() -> None:
    app()
