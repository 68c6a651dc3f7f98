"""One training run, in the trainer's child process: train, store, evaluate both models.

Everything slow happens here, so the trainer keeps reading corrections meanwhile. The
candidate is trained by the same code as `loopline train` (every architecture; an encoder
student's sentence vectors come from its cache, so only new texts are embedded), moved into
the artifact store whole, loaded back from there (a copy that cannot be loaded is caught
now, not in a worker), and scored beside the production model on the same evaluation set.
Deciding and publishing are the trainer's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from loopline.processors.learning.gate import Figures, measure
from loopline.processors.learning.policy import fit_policy, gold_evidence
from loopline.processors.learning.trainset import Snapshot
from loopline.processors.student import ModelMeta
from loopline.processors.students import load_student
from loopline.processors.training import train
from loopline.schemas import LooplineError, ModelEvent, TaskConfig
from loopline.schemas.policy import RoutingPolicy
from loopline.streams.models.artifacts import DirectoryStore


@dataclass(frozen=True)
class TrainJob:
    task: TaskConfig
    snapshot: Snapshot
    store_root: Path
    cache_dir: Path
    production: ModelEvent | None
    threads: int = 0


@dataclass(frozen=True)
class Scored:
    """A model's figures on the evaluation set and the routing they support, or why it
    could not be scored."""

    figures: Figures | None = None
    policy: RoutingPolicy | None = None
    error: str | None = None


@dataclass(frozen=True)
class JobResult:
    meta: ModelMeta
    artifact: str
    candidate: Scored
    production: Scored | None
    train_seconds: float
    evaluate_seconds: float


def run_job(job: TrainJob) -> JobResult:
    store = DirectoryStore(job.store_root)
    started = time.perf_counter()
    build = store.work_dir() / "model"
    parent = job.production.version if job.production else None
    report = train(
        job.task,
        job.snapshot.train,
        None,
        out_dir=build,
        parent_version=parent,
        cache_dir=job.cache_dir,
        measure=False,
    )
    artifact = store.put(f"{job.task.name}/{report.version}", build)
    trained = time.perf_counter()
    candidate = score_artifact(job, store, artifact)
    production = score_artifact(job, store, job.production.artifact) if job.production else None
    return JobResult(
        meta=report.meta,
        artifact=artifact,
        candidate=candidate,
        production=production,
        train_seconds=trained - started,
        evaluate_seconds=time.perf_counter() - trained,
    )


def score_artifact(job: TrainJob, store: DirectoryStore, artifact: str) -> Scored:
    """The model stored as `artifact`, loaded as a worker would and scored on the eval set."""
    try:
        student = load_student(store.fetch(artifact), job.task, threads=job.threads)
    except (LooplineError, OSError, ValueError) as error:  # damaged files fail in many ways
        return Scored(error=f"cannot be loaded: {error}")
    evaluation, llm = job.snapshot.eval, job.snapshot.eval_llm
    predicted = student.predict([eg.text for eg in evaluation])
    task = job.task
    evidence = gold_evidence(task.kind, evaluation, predicted, llm)
    return Scored(
        measure(task.kind, task.label_names, evaluation, predicted, llm),
        fit_policy(evidence, task.routing),
    )
