"""Assembling and running a review service from Settings: Redis, Kafka, the ingest, tokens,
the outbox sweep, and uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from subprocess import STDOUT, Popen

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from loopline.schemas import ServiceError, TaskConfig
from loopline.streams.connections import aiokafka_options, redis_client
from loopline.streams.observe import logging_config
from loopline.streams.review.api import ReviewMetrics, create_app
from loopline.streams.review.ingest import Ingest
from loopline.streams.review.queue import ReviewQueue
from loopline.streams.review.service import KafkaWriter, ReviewService
from loopline.streams.review.tokens import TokenFollower, TokenStore, ensure_tokens_topic
from loopline.streams.settings import Settings
from loopline.streams.topics import ensure_topics

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def review_parts(
    settings: Settings,
    task: TaskConfig,
    *,
    write_timeout_s: float = 10.0,
    on_answer: Callable[[str], None] | None = None,
) -> AsyncIterator[tuple[ReviewService, Ingest]]:
    """A review service and its ingest on started Kafka and Redis clients, stopped after."""
    redis = redis_client(settings)
    producer = AIOKafkaProducer(
        **aiokafka_options(settings),
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        request_timeout_ms=int(write_timeout_s * 1000),
    )
    consumer = AIOKafkaConsumer(
        **aiokafka_options(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await producer.start()
    await consumer.start()
    queue = ReviewQueue(redis, task.topics.prefix)
    try:
        yield (
            ReviewService(task, queue, KafkaWriter(producer, write_timeout_s), on_answer=on_answer),
            Ingest(task, queue, consumer),
        )
    finally:
        await consumer.stop()
        await producer.stop()
        await redis.aclose()


@contextlib.asynccontextmanager
async def caught_up(settings: Settings, task: TaskConfig) -> AsyncIterator[ReviewService]:
    """A review service whose queue has read the topics to their end (for CLI commands)."""
    async with review_parts(settings, task) as (service, ingest):
        following = asyncio.create_task(ingest.run())
        ready = asyncio.create_task(ingest.ready.wait())
        await asyncio.wait({following, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if following.done():
            following.result()  # the ingest failed: raise its error
        try:
            yield service
        finally:
            ingest.stop()
            await following


def build(settings: Settings, task: TaskConfig, *, write_timeout_s: float = 10.0) -> FastAPI:
    """The service's ASGI app; its Kafka and Redis clients and background loops start and
    stop with it (its lifespan)."""
    ensure_topics(settings, task)
    ensure_tokens_topic(settings)
    store = TokenStore()
    metrics = ReviewMetrics(CollectorRegistry(), task.name)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        parts = review_parts(
            settings, task, write_timeout_s=write_timeout_s, on_answer=metrics.answered
        )
        async with parts as (service, ingest):
            app.state.service, app.state.ingest = service, ingest
            tokens = TokenFollower(settings, store)
            loops = [
                asyncio.create_task(_crash_on_error(ingest.run(), "ingest")),
                asyncio.create_task(_crash_on_error(tokens.run(), "tokens")),
                asyncio.create_task(_crash_on_error(_sweep(service, metrics), "outbox sweep")),
            ]
            await tokens.caught_up.wait()
            try:
                yield
            finally:
                ingest.stop()
                for loop in loops[1:]:
                    loop.cancel()
                await asyncio.gather(*loops, return_exceptions=True)

    return create_app(task, store, metrics, lifespan=lifespan)


async def _sweep(service: ReviewService, metrics: ReviewMetrics) -> None:
    """Finish outbox entries a crashed or failed attempt left (older than any write in
    flight can be); refresh the queue's gauges."""
    older_than_s = service.writer.timeout_s + 5.0
    while True:
        await asyncio.sleep(2.0)
        try:
            metrics.queue_sizes(await service.queue.counts())
            finished = await service.flush_outbox(older_than_s)
        except Exception as exc:  # Kafka still down: try again next round
            log.warning("outbox sweep: %s", exc)
            continue
        if finished:
            log.warning("outbox sweep: finished %d answer(s) an earlier attempt left", finished)


async def _crash_on_error(work, name: str) -> None:  # noqa: ANN001 (a coroutine)
    """A background loop that fails takes the service down loudly, not silently."""
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:
        log.critical("review %s failed; stopping the service", name, exc_info=True)
        os.kill(os.getpid(), signal.SIGTERM)


def serve(settings: Settings, task: TaskConfig, host: str, port: int) -> None:
    app = build(settings, task, write_timeout_s=settings.review_write_timeout_s)
    json_logs = logging_config(settings.log_format, "warning")
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        **({"log_config": json_logs} if json_logs else {}),
    )


def spawn(task_file: Path, port: int, log: Path, env: dict[str, str] | None = None) -> Popen:
    """`loopline review serve` in a process of its own (benchmarks, tests, the demo)."""
    command = [sys.executable, "-m", "loopline.streams.cli", "review", "serve"]
    command += ["--task", str(task_file), "--port", str(port)]
    return Popen(command, env=env, stdout=log.open("ab"), stderr=STDOUT)


def wait_ready(url: str, process: Popen, log: Path, timeout_s: float = 60.0) -> None:
    """Until the service at `url` says its queue is ready; ServiceError if it dies first."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise ServiceError(f"the review service exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).json()["ready"]:
                return
        if time.monotonic() > deadline:
            raise ServiceError(f"the review service was not ready in {timeout_s:.0f}s; see {log}")
        time.sleep(0.2)
