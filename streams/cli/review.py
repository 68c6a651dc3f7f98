"""`loopline review ...`: the review service, reviewers' tokens, Prodigy JSONL out and in."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from loopline.schemas import InvalidAnswer, RoutedItem, load_task
from loopline.streams.review import prodigy, server, tokens
from loopline.streams.settings import Settings

app = typer.Typer(
    help="Human review: the service and web UI, reviewers' tokens, Prodigy JSONL.",
    no_args_is_help=True,
)
token_app = typer.Typer(help="Reviewers' API tokens (only a hash is stored).", no_args_is_help=True)
app.add_typer(token_app, name="token")
err = Console(stderr=True, soft_wrap=True)

TaskOption = Annotated[Path, typer.Option("--task", "-t", help="The task's YAML config.")]


@app.command()
def serve(
    task: TaskOption,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8700,
) -> None:
    """Run the review service: REST API, web UI at /, /healthz, /metrics."""
    settings = Settings()
    config = load_task(task)
    err.print(
        f"[bold]review[/] for task {config.name}: http://{host}:{port}/ "
        f"(Kafka {settings.kafka_bootstrap}, Redis {settings.redis_url})"
    )
    server.serve(settings, config, host, port)


@token_app.command("add")
def token_add(
    name: Annotated[str, typer.Argument(help="The reviewer's name.")],
    role: Annotated[str, typer.Option(help="reviewer or admin.")] = "reviewer",
) -> None:
    """Make a token for NAME (replacing any earlier one); the token is the last line printed."""
    if role not in ("reviewer", "admin"):
        raise typer.BadParameter("use reviewer or admin", param_hint="--role")
    token = tokens.add_token(Settings(), name, role)  # type: ignore[arg-type]
    err.print(f"token for {name} ({role}); it is shown only once:")
    print(token)


@token_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Argument(help="The reviewer's name.")]) -> None:
    """Revoke NAME's token: every review service refuses it within a second or two."""
    tokens.revoke_token(Settings(), name)
    err.print(f"revoked the token of {name}")


@token_app.command("list")
def token_list() -> None:
    """Reviewers with a token, and their roles."""
    table = Table(title="review tokens")
    table.add_column("reviewer")
    table.add_column("role")
    for name, role in tokens.current_tokens(Settings()).roles().items():
        table.add_row(name, role)
    Console().print(table)


@app.command("export")
def export(
    task: TaskOption,
    out: Annotated[Path, typer.Argument(help="JSONL file to write, or - for stdout.")],
) -> None:
    """Write the pending items as Prodigy-style JSONL (text, options or spans, meta)."""
    config = load_task(task)

    async def pending() -> list[RoutedItem]:
        async with server.caught_up(Settings(), config) as service:
            return await service.queue.pending_items()

    items = asyncio.run(pending())
    lines = [json.dumps(prodigy.export_record(item, config)) + "\n" for item in items]
    if str(out) == "-":
        sys.stdout.writelines(lines)
    else:
        out.write_text("".join(lines), encoding="utf-8")
    err.print(f"exported {len(items)} pending items" + ("" if str(out) == "-" else f" to {out}"))


@app.command("import")
def import_(
    task: TaskOption,
    source: Annotated[Path, typer.Argument(help="Prodigy-style JSONL answers.")],
    reviewer: Annotated[
        str, typer.Option(help="Who answered, for lines without `_annotator_id`.")
    ] = "import",
) -> None:
    """Write Prodigy-style answers as reviewers' answers (validated; importing twice is a no-op)."""
    config = load_task(task)
    lines = source.read_text(encoding="utf-8").splitlines()
    written, known, rejected = asyncio.run(_import(config, lines, source, reviewer))
    err.print(
        f"imported {written} answers from {source}; {known} were there already"
        + (f"; {rejected} lines rejected" if rejected else "")
    )
    if rejected:
        raise typer.Exit(1)


async def _import(config, lines: list[str], source: Path, default_reviewer: str):  # noqa: ANN001, ANN202
    written = known = rejected = 0
    async with server.caught_up(Settings(), config) as service:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                answer = prodigy.import_record(_json(line), config)
                item = await service.queue.leased_item(answer.item.id) or RoutedItem(
                    id=answer.item.id,
                    task=config.name,
                    item=answer.item,
                    route="review",
                    reason="import",
                )
                if item.item.text != answer.item.text:
                    raise InvalidAnswer(
                        f"item {answer.item.id!r} in the queue has another text; fix meta.id"
                    )
                result = await service.import_answer(
                    tokens.check_name(answer.reviewer or default_reviewer), item, answer.answer
                )
            except (InvalidAnswer, tokens.ConfigError) as error:
                rejected += 1
                err.print(f"[yellow]{source}:{number}[/]: {error} (not imported)")
                continue
            written += result is not None
            known += result is None
    return written, known, rejected


def _json(line: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidAnswer(f"not JSON ({exc.msg})") from None
