"""Assembling a worker: load the student once (in a child process), make sure topics exist,
wire the agents."""

from __future__ import annotations

import gc
import subprocess
import sys
from functools import partial
from pathlib import Path

import faust
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from loopline.processors.isolated import InChildProcess
from loopline.processors.students import load_student
from loopline.schemas import TaskConfig
from loopline.streams import observe
from loopline.streams.agents import annotate, teach
from loopline.streams.app import create_app
from loopline.streams.connections import redis_client
from loopline.streams.models import follow
from loopline.streams.settings import Settings
from loopline.streams.state import OutcomeLedger
from loopline.streams.topics import ensure_topics
from loopline.streams.wiring import build_teacher, human_examples

STAGES = (annotate.STAGE, teach.STAGE)
# Nothing a worker needs to answer items lives in Redis: when it is down, a call should fail
# at once (the ledger keeps counts in memory, the LLM limits send items to review) instead
# of holding a batch through redis-py's default ten retries.
FAIL_FAST = {
    "socket_timeout": 2.0,
    "socket_connect_timeout": 2.0,
    "retry": Retry(NoBackoff(), retries=1),
}


def ledger(redis: aioredis.Redis, task: TaskConfig, stage: str) -> OutcomeLedger:
    return OutcomeLedger(redis, task.topics.prefix, stage)


async def stage_counts(settings: Settings, task: TaskConfig) -> dict[str, dict[str, int]]:
    """Each stage's outcome counters, as every worker of the task has recorded them."""
    redis = redis_client(settings)
    try:
        return {stage: await ledger(redis, task, stage).counts() for stage in STAGES}
    finally:
        await redis.aclose()


def build(settings: Settings, task: TaskConfig, model_dir: Path | None) -> faust.App:
    """A worker app: the annotate stage, the teach agent when an LLM is configured, and with
    LOOPLINE_METRICS_PORT set, /metrics and /healthz.

    Without `model_dir` the worker serves the task's production model and follows the
    registry (hot swap); with it, that model only.
    """
    ensure_topics(settings, task)
    app, topics = create_app(settings, task)
    if model_dir is None:
        student = follow.production_student(app, settings, task)
    else:
        student = InChildProcess.start(
            partial(load_student, model_dir, task, threads=settings.encoder_threads)
        )
    redis = redis_client(settings, **FAIL_FAST)
    llm_available = settings.llm_base_url is not None
    metrics = observe.WorkerMetrics(task.name) if settings.metrics_port is not None else None
    stage = annotate.AnnotateStage(
        task, topics, student, ledger(redis, task, annotate.STAGE), llm_available=llm_available
    )
    intake = annotate.register(app, stage, settings, metrics)
    teacher = None
    if llm_available:
        teacher = build_teacher(task, settings, redis, human_examples(settings, task))
        teach.register(
            app,
            teach.TeachStage(task, topics, teacher, ledger(redis, task, teach.STAGE)),
            batch_size=settings.llm_batch_size,
            window_s=settings.llm_batch_window_s,
            metrics=metrics,
        )
    if metrics is not None:
        scrape = observe.ScrapeTimeCollector(task.name, lambda: stage.student.version, teacher)
        metrics.registry.register(scrape)
        observe.register(app, intake, metrics, settings.metrics_host, settings.metrics_port)
    return app


def run(app: faust.App, *, loglevel: str = "warn", log_format: str = "text") -> None:
    """Run until SIGTERM/SIGINT; exits non-zero when an agent crashed."""
    worker = faust.Worker(
        app,
        loglevel=loglevel,
        quiet=True,
        redirect_stdouts=False,
        logging_config=observe.logging_config(log_format, loglevel),
    )
    # Faust's start-up spinner sets the root logger to DEBUG, which makes every Kafka client
    # call build log records nobody reads: a third of the worker's time.
    worker.spinner = None
    # What exists now (Faust, spaCy, schemas) lives as long as the worker: frozen, the
    # collector stops walking it, which otherwise paused the worker 180-300 ms at a time.
    gc.collect()
    gc.freeze()
    worker.execute_from_commandline()


def start_process(
    task_file: Path, model_dir: Path | None, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """`loopline worker` in a process of its own, as in production (benchmarks, the demo);
    without `model_dir` it follows the registry."""
    model = ["--model", str(model_dir)] if model_dir is not None else []
    return subprocess.Popen(
        [sys.executable, "-m", "loopline.streams.cli", "worker", "--task", str(task_file), *model],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop_process(process: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after the grace period: nothing is lost either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
