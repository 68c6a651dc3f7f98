"""Workers follow the registry: serve the production model, and swap to a new one between
two batches without stopping.

`FollowingStudent` is the annotate stage's student. A new model is loaded in a child process
of its own while the old one keeps answering; the swap happens when no batch is in flight,
so every batch, and every prediction in it, is answered by exactly one version, and
`version` names the one that answered the last batch; `routing` is that version's routing
(the task's, filled in by the policy fitted with the version). The old child is stopped after the
swap. A model that cannot be fetched or loaded is logged and reported in Redis, and the
worker keeps the model it has.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from datetime import UTC, datetime
from functools import partial

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition

from loopline.processors.isolated import InChildProcess
from loopline.processors.learning.policy import effective_routing
from loopline.processors.students import load_student
from loopline.schemas import Annotation, ConfigError, LooplineError, ModelEvent, TaskConfig
from loopline.schemas.task import RoutingConfig
from loopline.streams.connections import aiokafka_options, redis_client
from loopline.streams.models.artifacts import DirectoryStore
from loopline.streams.models.registry import PRODUCTION_KEY, decode_event, read_registry
from loopline.streams.settings import Settings
from loopline.streams.topics import partition_ids

log = logging.getLogger(__name__)
POLL_MS = 500


def workers_key(task: TaskConfig) -> str:
    """Redis hash: worker -> what it serves (and the last model it could not load)."""
    return f"loopline:{task.topics.prefix}models:workers"


class FollowingStudent:
    """A Processor whose model is replaced between batches (see the module docstring)."""

    source = "student"

    def __init__(self, current: InChildProcess, routing: RoutingConfig) -> None:
        self._current = current
        self._next: tuple[InChildProcess, RoutingConfig] | None = None
        self._idle = asyncio.Lock()
        self.version = current.version
        self.routing = routing

    async def annotate(self, texts) -> list[Annotation | LooplineError]:
        async with self._idle:
            self._swap_if_ready()
            model = self._current
            results = await model.annotate(texts)
            self.version = model.version
        return results

    async def offer(self, model: InChildProcess, routing: RoutingConfig) -> str:
        """Use `model` and its routing from the next batch on (now, when idle); returns the
        version replaced."""
        if self._next is not None:
            (superseded, _), self._next = self._next, None
            await asyncio.to_thread(superseded.close)
        self._next = (model, routing)
        async with self._idle:
            replaced = self._swap_if_ready()
        if replaced is not None:
            await asyncio.to_thread(replaced.close)
            return replaced.version
        return self._current.version

    def _swap_if_ready(self) -> InChildProcess | None:
        if self._next is None:
            return None
        replaced = self._current
        (self._current, self.routing), self._next = self._next, None
        self.version = self._current.version
        return replaced


def start_model(settings: Settings, task: TaskConfig, event: ModelEvent) -> InChildProcess:
    """Fetch `event`'s artifact (verified) and load it in a new child process. Blocking."""
    path = DirectoryStore(settings.artifacts_dir).fetch(event.artifact)
    return InChildProcess.start(partial(load_student, path, task, threads=settings.encoder_threads))


def production_student(app: faust.App, settings: Settings, task: TaskConfig) -> FollowingStudent:
    """The task's production model, followed from now on (a task on `app` does that)."""
    production = read_registry(settings, task).production
    if production is None:
        raise ConfigError(
            f"task {task.name} has no production model yet: run `loopline trainer --task "
            "TASK.yml` once corrections exist, or `loopline train ... --publish` and then "
            "`loopline models promote VERSION --task TASK.yml`; or pass --model DIR"
        )
    routing = effective_routing(task.routing, production.policy)
    student = FollowingStudent(start_model(settings, task, production), routing)
    partitions = partition_ids(settings, task.topic("models"))
    follower = RegistryFollower(settings, task, student, production.version, partitions)

    @app.task
    async def follow_registry() -> None:
        await follower.run()

    return student


class RegistryFollower:
    """Reads the `models` topic (no consumer group: every worker sees every change) and
    swaps the worker to each new production version."""

    def __init__(
        self,
        settings: Settings,
        task: TaskConfig,
        student: FollowingStudent,
        version: str,
        partitions: list[int],
    ) -> None:
        self.settings = settings
        self.task = task
        self.student = student
        self.settled = version  # the last version loaded or found unloadable
        self.target: ModelEvent | None = None
        self.partitions = [TopicPartition(task.topic("models"), p) for p in partitions]
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.redis = redis_client(settings)

    async def run(self) -> None:
        await self.report(error=None)
        consumer = AIOKafkaConsumer(**aiokafka_options(self.settings), enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = self.partitions
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            caught_up = False
            while True:
                batches = await consumer.getmany(timeout_ms=POLL_MS)
                for records in batches.values():
                    self._note(records)
                if not caught_up:
                    positions = [await consumer.position(tp) for tp in partitions]
                    caught_up = all(p >= ends[tp] for p, tp in zip(positions, partitions))
                if caught_up and self.target and self.target.version != self.settled:
                    await self.load(self.target)
        finally:
            await consumer.stop()

    def _note(self, records) -> None:
        for record in records:
            if record.key == PRODUCTION_KEY.encode():
                event = decode_event(record.topic, record.value)
                if event is not None:
                    self.target = event

    async def load(self, event: ModelEvent) -> None:
        self.settled = event.version
        started = time.monotonic()
        try:
            model = await asyncio.to_thread(start_model, self.settings, self.task, event)
        except Exception as error:  # any failure to load leaves the old model serving
            log.error(
                "cannot load model %s (%s); still serving %s",
                event.version,
                error,
                self.student.version,
            )
            await self.report(error=f"{event.version}: {error}")
            return
        loaded_s = time.monotonic() - started
        routing = effective_routing(self.task.routing, event.policy)
        replaced = await self.student.offer(model, routing)
        log.warning(
            "now serving model %s (was %s): loaded in %.1f s, swapped %.2f s later; "
            "accept threshold %.3f, LLM bands %s",
            model.version,
            replaced,
            loaded_s,
            time.monotonic() - started - loaded_s,
            routing.accept_threshold,
            routing.llm_bands or "all",
        )
        await self.report(error=None)

    async def report(self, error: str | None) -> None:
        status = {
            "version": self.student.version,
            "updated_at": datetime.now(UTC).isoformat(),
            "error": error,
        }
        await self.redis.hset(workers_key(self.task), self.name, json.dumps(status))
