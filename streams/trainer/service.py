"""`loopline trainer`: the long-running process that turns corrections into students.

It reads the task's `corrections` and `models` topics from the start (so a restart rebuilds
everything it knows), keeps the training set (`processors.learning.trainset`), and starts a
run when enough new gold labels arrived, when the interval passed and anything changed, or
when asked (`loopline models train`). The run happens in a child process (`job`); the gate
(`processors.learning.gate`) decides, and the outcome goes on `models`. Only the holder of
the task's lease in Redis trains; another trainer waits and takes over when it expires.

Corrections that do not fit the task (unknown labels, bad spans, not a Correction at all)
are never trained on: they go to `deadletter`, once (a Redis mark per partition remembers
how far they were checked).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError
from rich.console import Console

from loopline.processors.data import read_examples
from loopline.processors.isolated import exit_with_parent
from loopline.processors.learning.gate import decide
from loopline.processors.learning.trainset import Snapshot, TrainingSet, shortfall
from loopline.schemas import Correction, InputError, InvalidAnswer, ModelEvent, TaskConfig
from loopline.streams.codec import dead_letter, encode
from loopline.streams.connections import kafka_options, redis_sync_client
from loopline.streams.models.artifacts import DirectoryStore
from loopline.streams.models.registry import (
    RegistryState,
    decode_event,
    promotion,
    publish,
    registration,
    rejection,
)
from loopline.streams.review.validation import check_answer
from loopline.streams.settings import Settings
from loopline.streams.topics import ensure_topics
from loopline.streams.trainer.job import JobResult, TrainJob, run_job
from loopline.streams.trainer.lease import Lease

STAGE = "trainer"
POLL_MS = 500


def request_key(task: TaskConfig) -> str:
    """The Redis key `loopline models train` sets to ask for a run now."""
    return f"loopline:{task.topics.prefix}trainer:request"


def lease_key(task: TaskConfig) -> str:
    return f"loopline:{task.topics.prefix}trainer:lease"


@dataclass(frozen=True)
class Attempt:
    """What the last run started from: how many gold ids, which data, when (epoch seconds)."""

    gold: int
    data_hash: str
    at: float

    @classmethod
    def of(cls, event: ModelEvent | None) -> Attempt:
        if event is None:
            return cls(0, "", 0.0)
        return cls(event.data_counts.get("gold", 0), event.data_hash, event.created_at.timestamp())


def due(
    gold: int,
    last: Attempt,
    now: float,
    *,
    min_new_gold: int,
    interval_s: float,
    requested: bool,
    data_hash: str | None,
) -> str | None:
    """Why a run should start now, or None. `data_hash` is computed only once the interval
    has passed (it reads the whole set), and is None before."""
    if requested:
        return "asked for (`loopline models train`)"
    if gold - last.gold >= min_new_gold:
        return f"{gold - last.gold} new gold labels (at least {min_new_gold})"
    if now - last.at >= interval_s and data_hash is not None and data_hash != last.data_hash:
        return f"{interval_s:.0f} s passed and the data changed"
    return None


def check_correction(value: bytes | None, task: TaskConfig) -> Correction:
    """The message as a Correction that fits the task, or InputError saying what is wrong."""
    try:
        correction = Correction.model_validate_json(value or b"")
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "value"
        message = f"not a Correction ({where}: {problem['msg']})"
        raise InputError("schema_violation", message) from None
    if correction.task != task.name:
        raise InputError(
            "wrong_task", f"a correction for task {correction.task!r} on {task.name!r}'s topic"
        )
    try:
        check_answer(
            task, correction.text, correction.decision, correction.labels, correction.spans
        )
    except InvalidAnswer as error:
        raise InputError("invalid_correction", f"never trained on: {error}") from None
    return correction


class Trainer:
    def __init__(
        self,
        settings: Settings,
        task: TaskConfig,
        *,
        min_new_gold: int,
        interval_s: float,
        console: Console,
    ) -> None:
        self.settings = settings
        self.task = task
        self.min_new_gold = min_new_gold
        self.interval_s = interval_s
        self.console = console
        fixed = read_examples(task.learning.eval_file, task) if task.learning.eval_file else ()
        self.trainset = TrainingSet(task.learning.eval_share, task.learning.silver_weight, fixed)
        self.registry = RegistryState()
        self.redis = redis_sync_client(settings)
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.lease = Lease(self.redis, lease_key(task), self.holder, settings.trainer_lease_s)
        self.store_root = settings.artifacts_dir
        self.running: tuple[Future, Snapshot] | None = None
        self.pool: ProcessPoolExecutor | None = None
        self.last: Attempt | None = None
        self.leading = False
        self.said_waiting = False
        self.dead_letter_marks = f"loopline:{task.topics.prefix}{STAGE}:deadletter-offsets"

    # the loop ---------------------------------------------------------------------------

    def run(self, should_stop) -> None:
        ensure_topics(self.settings, self.task)
        consumer = self._consumer()
        producer = KafkaProducer(**kafka_options(self.settings), acks="all")
        try:
            ends = consumer.end_offsets(consumer.assignment())
            self.console.log(f"reading {self.task.topic('corrections')} and the registry ...")
            caught_up = False
            while not should_stop():
                batches = consumer.poll(timeout_ms=POLL_MS)
                for tp, records in batches.items():
                    if tp.topic == self.task.topic("models"):
                        self._fold_models(records)
                    else:
                        self._fold_corrections(records, producer)
                if not caught_up:
                    caught_up = all(consumer.position(tp) >= end for tp, end in ends.items())
                    if not caught_up:
                        continue
                    self._caught_up()
                self._step()
        finally:
            consumer.close()
            producer.close()
            self.lease.release()

    def _consumer(self) -> KafkaConsumer:
        consumer = KafkaConsumer(**kafka_options(self.settings), enable_auto_commit=False)
        partitions = [
            TopicPartition(topic, p)
            for topic in (self.task.topic("corrections"), self.task.topic("models"))
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        return consumer

    def _caught_up(self) -> None:
        self.last = Attempt.of(self.registry.latest())
        production = self.registry.production
        self.console.log(
            f"caught up: {len(self.trainset.gold)} gold and {len(self.trainset.silver)} silver "
            f"items; production {production.version if production else 'none yet'}"
        )

    def _step(self) -> None:
        if not self.lease.hold():
            if not self.said_waiting:
                self.console.log(f"waiting: trainer {self.lease.holder_now()} holds the lease")
            self.leading, self.said_waiting = False, True
            return
        if not self.leading:
            self.console.log(f"holding the lease ({self.holder}): this trainer trains")
            self.leading, self.said_waiting = True, False
            if self.running is None:
                DirectoryStore(self.store_root).clear_work()
        if self.running is not None:
            future, snapshot = self.running
            if future.done():
                self.running = None
                self._finish(future, snapshot)
            return
        self._maybe_start()

    def _maybe_start(self) -> None:
        requested = self.redis.getdel(request_key(self.task)) is not None
        now = time.time()
        gold = len(self.trainset.gold)
        interval_passed = now - self.last.at >= self.interval_s
        snapshot = self.trainset.snapshot() if requested or interval_passed else None
        reason = due(
            gold,
            self.last,
            now,
            min_new_gold=self.min_new_gold,
            interval_s=self.interval_s,
            requested=requested,
            data_hash=snapshot.data_hash if snapshot else None,
        )
        if reason is None:
            if interval_passed:  # nothing new: look again after another interval
                self.last = Attempt(self.last.gold, self.last.data_hash, now)
            return
        snapshot = snapshot or self.trainset.snapshot()
        self.last = Attempt(snapshot.gold, snapshot.data_hash, now)
        if missing := shortfall(snapshot, self.task.student.calibration_share):
            self.console.log(f"[yellow]not training yet[/] ({reason}): {missing}")
            return
        self._start(snapshot, reason)

    def _start(self, snapshot: Snapshot, reason: str) -> None:
        counts = snapshot.counts
        self.console.log(
            f"training ({reason}): {counts['train_gold']} gold + {counts['train_silver']} "
            f"silver training items, {counts['eval']} evaluation items"
        )
        job = TrainJob(
            task=self.task,
            snapshot=snapshot,
            store_root=self.store_root,
            cache_dir=self.settings.cache_dir,
            production=self.registry.production,
            threads=self.settings.encoder_threads,
        )
        self.running = (self._pool().submit(run_job, job), snapshot)

    def _pool(self) -> ProcessPoolExecutor:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=exit_with_parent,
                initargs=(os.getpid(),),
            )
        return self.pool

    def _finish(self, future: Future, snapshot: Snapshot) -> None:
        try:
            result: JobResult = future.result()
        except Exception as error:  # a run that failed must not stop the trainer
            self.console.log(f"[red]training failed[/]: {type(error).__name__}: {error}")
            if isinstance(error, BrokenProcessPool):  # the child died: start a new one next time
                self.pool = None
            return
        self._publish(result, snapshot)

    def _publish(self, result: JobResult, snapshot: Snapshot) -> None:
        records = []
        production = self.registry.production
        baseline = result.production.figures if result.production else None
        if result.production is not None and result.production.error:
            reason = f"artifact {production.artifact} {result.production.error}"
            records += rejection(production, reason)
            self.registry.apply(*records[-1])
            self.console.log(f"[red]production model {production.version}[/] {reason}")
        event = self._event(result, snapshot, baseline)
        if result.candidate.error:
            decision_promote, reason = False, f"artifact {result.candidate.error}"
        else:
            decision = decide(result.candidate.figures, baseline, self.task.learning)
            decision_promote, reason = decision.promote, decision.reason
        records += registration(event)
        if decision_promote:
            records += promotion(self.registry, event, reason)
        else:
            records += rejection(event, reason)
        publish(self.settings, self.task, records)
        for key, value in records:
            self.registry.apply(key, value)
        verdict = "[green]promoted[/]" if decision_promote else "[yellow]rejected[/]"
        self.console.log(
            f"{verdict} {event.version} after {result.train_seconds:.1f} s of training and "
            f"{result.evaluate_seconds:.1f} s of evaluation: {reason}"
        )

    def _event(self, result: JobResult, snapshot: Snapshot, baseline) -> ModelEvent:
        figures = result.candidate.figures
        meta = result.meta
        production = self.registry.production
        metrics = {**(figures.metrics if figures else {}), "train_seconds": result.train_seconds}
        return ModelEvent(
            task=self.task.name,
            version=meta.version,
            artifact=result.artifact,
            status="candidate",
            metrics=metrics,
            bands=list(figures.bands) if figures else [],
            compared_with=production.version if baseline is not None else None,
            baseline_metrics=baseline.metrics if baseline is not None else {},
            parent_version=meta.parent_version,
            config_hash=meta.config_hash,
            data_hash=snapshot.data_hash,
            data_counts=snapshot.counts,
            policy=result.candidate.policy,
            created_at=meta.created_at,
        )

    # folding topics ----------------------------------------------------------------------

    def _fold_models(self, records: list[ConsumerRecord]) -> None:
        for record in records:
            event = decode_event(record.topic, record.value)
            if record.key is not None and event is not None:
                self.registry.apply(record.key.decode("utf-8"), event)

    def _fold_corrections(self, records: list[ConsumerRecord], producer: KafkaProducer) -> None:
        letters = []
        for record in records:
            try:
                self.trainset.add(check_correction(record.value, self.task))
            except InputError as error:
                letters.append((record, error))
        if letters:
            self._dead_letter(letters, producer)

    def _dead_letter(self, letters, producer: KafkaProducer) -> None:
        """Send what was not sent before (by this or an earlier trainer), then move the mark."""
        marks = {}
        for record, error in letters:
            field = f"{record.topic}:{record.partition}"
            if field not in marks:
                marks[field] = int(self.redis.hget(self.dead_letter_marks, field) or -1)
            if record.offset <= marks[field]:
                continue
            letter = dead_letter(
                error,
                record.value,
                task=self.task.name,
                stage=STAGE,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            producer.send(
                self.task.topic("deadletter"), key=letter.key.encode(), value=encode(letter)
            )
            marks[field] = record.offset
            self.console.log(f"[yellow]dead-lettered[/] {letter.key}: {letter.message}")
        producer.flush()
        if marks:
            self.redis.hset(self.dead_letter_marks, mapping=marks)
