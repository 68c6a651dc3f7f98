"""The learning loop as local processes, for `loopline bench loop` and `loopline demo`.

A trainer, a review service and workers that follow the registry run as processes of their
own on one task's topics; this drives them from outside, as people and producers would: it
writes gold corrections, streams texts (keeping their gold labels apart), asks the trainer
for a run and waits for its verdict and the workers' swap, and plays a scripted reviewer who
answers the review queue from the held-back gold labels through the review service's REST
API.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from kafka import KafkaProducer
from redis import Redis

from loopline.processors.data import LabelledText
from loopline.schemas import Correction, ModelEvent, ServiceError, TaskConfig, TextIn
from loopline.streams import worker as worker_assembly
from loopline.streams.codec import encode
from loopline.streams.connections import kafka_options, redis_sync_client
from loopline.streams.models.follow import workers_key
from loopline.streams.models.registry import RegistryState, read_registry
from loopline.streams.review import server
from loopline.streams.review.client import ReviewAPIError, ReviewClient
from loopline.streams.review.tokens import add_token
from loopline.streams.settings import Settings
from loopline.streams.topics import ensure_topics
from loopline.streams.trainer.service import request_key


@dataclass(frozen=True)
class Verdict:
    """The trainer's last judgement, and the registry as it left it."""

    event: ModelEvent
    state: RegistryState

    @property
    def promoted(self) -> bool:
        return self.state.production is not None and (
            self.state.production.version == self.event.version
        )


class LocalLoop:
    """The loop's processes for one task, driven from outside (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        task: TaskConfig,
        workdir: Path,
        report: Callable[[str], None],
        *,
        review_port: int,
        trainer_args: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.task = task
        self.workdir = workdir
        self.report = report
        self.trainer_args = list(trainer_args)
        self.task_file = workdir / "task.yml"
        self.task_file.write_text(yaml.safe_dump(task.model_dump(mode="json"), sort_keys=False))
        self.env = {**os.environ, **child_env(settings)}
        self.review_url = f"http://127.0.0.1:{review_port}"
        self.review_port = review_port
        self.processes: list[subprocess.Popen] = []
        self.redis: Redis = redis_sync_client(settings)
        self.gold: dict[str, LabelledText] = {}
        self.gold_written = 0

    # services ---------------------------------------------------------------------------

    def start(self) -> None:
        """The trainer and the review service, with a token for the scripted reviewer."""
        ensure_topics(self.settings, self.task)
        trainer = ["trainer", "--task", str(self.task_file), *self.trainer_args]
        self.processes.append(self._spawn(trainer, "trainer"))
        self.token = add_token(
            self.settings, f"scripted-reviewer-{uuid.uuid4().hex[:6]}", "reviewer"
        )
        review = server.spawn(
            self.task_file, self.review_port, self.workdir / "review.log", self.env
        )
        self.processes.append(review)
        server.wait_ready(self.review_url, review, self.workdir / "review.log")

    def start_worker(self) -> None:
        """A worker without --model: it serves the task's production model."""
        self.processes.append(self._spawn(["worker", "--task", str(self.task_file)], "worker"))

    def stop(self) -> None:
        for process in reversed(self.processes):
            worker_assembly.stop_process(process, grace_s=20)
        self.redis.close()

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log = (self.workdir / f"{name}.log").open("ab")
        command = [sys.executable, "-m", "loopline.streams.cli", *args]
        return subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def _alive(self) -> None:
        """ServiceError naming the first process that has exited."""
        for process in self.processes:
            if process.poll() is not None:
                raise ServiceError(
                    f"`{' '.join(process.args[3:5])}` exited with {process.returncode}; "
                    f"see the logs in {self.workdir}"
                )

    # data in ----------------------------------------------------------------------------

    def write_corrections(self, examples: Sequence[LabelledText], source: str) -> None:
        """`examples` as corrections: gold ones as if people had labelled them before."""
        producer = KafkaProducer(**kafka_options(self.settings), acks="all")
        now = datetime.now(UTC)
        for i, example in enumerate(examples):
            correction = Correction(
                id=f"seed-{source}-{i}",
                task=self.task.name,
                text=example.text,
                labels=example.labels,
                spans=example.spans,
                source="human" if source == "gold" else "llm",
                reviewer="seed" if source == "gold" else "llm:bootstrap",
                time=now,
            )
            producer.send(
                self.task.topic("corrections"),
                key=correction.key.encode(),
                value=encode(correction),
            )
        producer.flush()
        producer.close()
        if source == "gold":
            self.gold_written += len(examples)

    def stream(self, name: str, examples: Sequence[LabelledText]) -> list[TextIn]:
        """The texts of `examples` onto `texts` as items `<name>-<i>`; their gold labels stay
        here, for the scripted reviewer and for scoring."""
        producer = KafkaProducer(**kafka_options(self.settings), linger_ms=5)
        items = []
        for i, example in enumerate(examples):
            item = TextIn(id=f"{name}-{i}", text=example.text)
            self.gold[item.id] = example
            items.append(item)
            producer.send(self.task.topic("texts"), key=item.id.encode(), value=encode(item))
        producer.flush()
        producer.close()
        return items

    # waiting ----------------------------------------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        """Each stage's outcome counters (the workers' ledger in Redis)."""
        return asyncio.run(worker_assembly.stage_counts(self.settings, self.task))

    def wait_stream(
        self,
        total: int,
        timeout_s: float,
        *,
        llm_wait_s: float | None = None,
        on_counts: Callable[[dict[str, dict[str, int]]], None] | None = None,
    ) -> dict[str, dict[str, int]]:
        """Until every item streamed so far has its outcome, the LLM's included, or until
        the LLM has had `llm_wait_s` after the annotate stage finished (its remaining items
        stay on `llm.requests` for later). `on_counts` sees the counters as they move."""
        deadline = time.monotonic() + timeout_s
        annotated_at = None
        while True:
            counts = self.counts()
            if on_counts is not None:
                on_counts(counts)
            annotate, teach = counts["annotate"], counts["teach"]
            annotated = sum(annotate.get(k, 0) for k in ("prediction", "llm", "review"))
            taught = sum(teach.get(k, 0) for k in ("prediction", "review", "deadletter"))
            if annotated >= total:
                if taught >= annotate.get("llm", 0):
                    return counts
                annotated_at = annotated_at or time.monotonic()
                if llm_wait_s is not None and time.monotonic() - annotated_at > llm_wait_s:
                    return counts
            self._alive()
            if time.monotonic() > deadline:
                raise ServiceError(f"the stream stalled at {counts}; see {self.workdir}")
            time.sleep(0.5)

    def train_and_wait(
        self, timeout_s: float, *, ask: bool = True, after: str | None = None
    ) -> Verdict:
        """Wait for the trainer's next verdict and, on a promotion, for every worker to serve
        the new model. `ask`: ask for a run, as `loopline models train` does; else the trainer
        starts one by itself, and `after` names the last version judged before it."""
        if ask:
            after = self.latest_version()
            self.redis.set(request_key(self.task), "1")
        deadline = time.monotonic() + timeout_s
        while True:
            state = read_registry(self.settings, self.task)
            latest = state.latest()
            if latest is not None and latest.version != after:
                break
            self._alive()
            if time.monotonic() > deadline:
                raise ServiceError(f"no training verdict in {timeout_s:.0f}s; see trainer.log")
            time.sleep(1.0)
        if state.production is None:
            raise ServiceError(f"the first model was not promoted: {latest.reason}")
        self.report(f"trainer: {latest.version} {state.status(latest.version)}: {latest.reason}")
        self.wait_worker(state.production.version, deadline)
        return Verdict(latest, state)

    def latest_version(self) -> str | None:
        latest = read_registry(self.settings, self.task).latest()
        return latest.version if latest else None

    def served(self) -> list[str]:
        """The version each running worker serves (what `models list` shows)."""
        return [
            json.loads(value)["version"]
            for value in self.redis.hgetall(workers_key(self.task)).values()
        ]

    def wait_worker(self, version: str, deadline: float) -> None:
        if not any(p.args[3] == "worker" for p in self.processes):
            return
        while True:
            served = self.served()
            if served and all(v == version for v in served):
                return
            self._alive()
            if time.monotonic() > deadline:
                raise ServiceError(f"the worker did not swap to {version}; see worker.log")
            time.sleep(0.5)

    # the scripted reviewer --------------------------------------------------------------

    def review(self, budget: int, routed_to_people: int) -> int:
        return asyncio.run(self._review(budget, routed_to_people))

    async def _review(self, budget: int, routed_to_people: int) -> int:
        """Once the service has every item routed to people so far, answer up to `budget` of
        them from the gold labels, most urgent first."""
        answered = 0
        async with ReviewClient(self.review_url, self.token, self.task.name) as client:
            deadline = time.monotonic() + 60
            while True:
                stats = await client.stats()
                if stats["pending"] + stats["leased"] + stats["decided"] >= routed_to_people:
                    break
                if time.monotonic() > deadline:
                    self.report(f"reviewer: the queue holds fewer items than routed: {stats}")
                    break
                await asyncio.sleep(0.5)
            while answered < budget:
                leased = await client.next(n=min(16, budget - answered))
                if not leased:
                    break
                for item in leased:
                    example = self.gold.get(item.id)
                    try:
                        if example is None:
                            await client.release(item)
                            continue
                        spans = [s.model_dump(exclude={"score"}) for s in example.spans]
                        await client.answer(item, labels=example.labels, spans=spans)
                        answered += 1
                    except ReviewAPIError as error:
                        self.report(f"reviewer: {item.id}: {error}")
        self.gold_written += answered
        return answered


def child_env(settings: Settings) -> dict[str, str]:
    """The `LOOPLINE_*` variables that point the loop's processes at the same services,
    artifact store and LLM."""
    values = {
        "kafka_bootstrap": settings.kafka_bootstrap,
        "redis_url": settings.redis_url,
        "state_dir": settings.state_dir.resolve(),
        "artifacts": settings.artifacts_dir.resolve(),
        "llm_model": settings.llm_model,
        "llm_base_url": settings.llm_base_url,
    }
    return {f"LOOPLINE_{k.upper()}": str(v) for k, v in values.items() if v is not None}
