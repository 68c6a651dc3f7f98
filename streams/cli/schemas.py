"""`loopline schemas export DIR`: JSON Schemas of every message, for downstream consumers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from loopline.schemas.export import export as export_schemas

app = typer.Typer(help="JSON Schemas of loopline's messages.", no_args_is_help=True)


@app.command()
def export(
    directory: Annotated[Path, typer.Argument(help="Where to write *.schema.json.")],
) -> None:
    """Write one JSON Schema per message (and one for the task config)."""
    for path in export_schemas(directory):
        Console(stderr=True).print(f"wrote {path}")
