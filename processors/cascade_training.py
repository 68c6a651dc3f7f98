"""Training a cascade of students by cost: each step trained and calibrated like any student,
then one threshold per step but the last, chosen on the held-out human labels.

Every step is trained on the same training items and calibrated on the same held-out
items (`processors.training.train` with those as `eval`). The steps then answer the
held-out items; `cascade.choose_thresholds` picks each step's threshold from those
answers. The saved thresholds are chosen on all held-out items, but the reported figures
(accuracy, macro-F1, ECE, the share each step answers) are cross-fitted, as calibration
error is: thresholds chosen on one half of the held-out items score the other half.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from loopline.processors.calibration import expected_calibration_error, reliability_bins
from loopline.processors.cascade import answering_step, choose_thresholds
from loopline.processors.data import LabelledText
from loopline.processors.metrics import Scores, accepted_accuracy, correct_items, score
from loopline.processors.student import CascadeStep, ModelMeta, read_meta
from loopline.processors.students import load_student
from loopline.processors.training import (
    TrainProgress,
    TrainReport,
    check_out_dir,
    config_hash,
    save,
    split_heldout,
    train,
    version_id,
    with_speed,
)
from loopline.schemas import Annotation, TaskConfig

STEPS_DIR = "steps"


def train_cascade(
    task: TaskConfig,
    examples: Sequence[LabelledText],
    eval_examples: Sequence[LabelledText] | None,
    *,
    out_dir: Path,
    on_progress: Callable[[TrainProgress], None] | None,
    parent_version: str | None,
    force: bool,
    cache_dir: Path,
    measure: bool,
) -> TrainReport:
    """Train every step, choose the thresholds, measure and save the cascade into `out_dir`."""
    check_out_dir(out_dir, force)
    train_set, heldout, heldout_source = split_heldout(task, examples, eval_examples)
    work = out_dir.parent / f".{out_dir.name}.steps"
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    try:
        step_dirs = []
        for number, architecture in enumerate(task.student.steps, start=1):
            step_dir = work / f"{number}-{architecture}"
            train(
                step_task(task, architecture),
                train_set,
                heldout,
                out_dir=step_dir,
                on_progress=_prefixed(on_progress, architecture),
                cache_dir=cache_dir,
                measure=False,
            )
            step_dirs.append(step_dir)
        steps = [load_student(step_dir) for step_dir in step_dirs]
        texts = [eg.text for eg in heldout]
        answers = [step.predict(texts) for step in steps]
        thresholds, measured = fit_thresholds(task, heldout, answers)
        seconds = time.perf_counter() - started
        timing = {"train_seconds": seconds, "train_docs_per_s": len(train_set) / seconds}
        meta = _meta(task, examples, train_set, heldout_source, step_dirs, thresholds, measured)
        meta = meta.model_copy(
            update={"parent_version": parent_version, "metrics": {**meta.metrics, **timing}}
        )
        report = TrainReport(
            out_dir=out_dir,
            meta=meta,
            scores=measured.scores,
            reliability_raw=[],
            reliability_calibrated=reliability_bins(measured.confidence, measured.correct),
        )

        def write_model(directory: Path) -> None:
            for step_dir in step_dirs:
                shutil.move(step_dir, directory / STEPS_DIR / step_dir.name)

        save(report, out_dir, force, write_model)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return with_speed(report, heldout) if measure else report


def step_task(task: TaskConfig, architecture: str) -> TaskConfig:
    """The task as one step of its cascade sees it: the same student section, one model."""
    student = task.student.model_copy(update={"architecture": architecture, "steps": []})
    return task.model_copy(update={"student": student})


@dataclasses.dataclass(frozen=True)
class CascadeMeasure:
    """The cascade's cross-fitted answers on the held-out items, and their figures."""

    answers: list[Annotation]
    step: np.ndarray
    confidence: np.ndarray
    correct: np.ndarray
    scores: Scores


def fit_thresholds(
    task: TaskConfig, heldout: Sequence[LabelledText], answers: Sequence[Sequence[Annotation]]
) -> tuple[list[float], CascadeMeasure]:
    """Thresholds from all held-out items, and the cascade measured by 2-fold cross-fitting."""
    confidence = [np.array([a.confidence for a in step]) for step in answers]
    correct = [correct_items(task.kind, heldout, step) for step in answers]
    floor, tolerance = task.routing.accept_threshold, task.student.cascade_tolerance
    thresholds = choose_thresholds(confidence, correct, floor, tolerance)

    order = np.random.default_rng(task.student.seed).permutation(len(heldout))
    halves = [np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])]
    chosen = np.zeros(len(heldout), dtype=int)
    for half, other in zip(halves, reversed(halves)):
        other_thresholds = choose_thresholds(
            [c[other] for c in confidence], [c[other] for c in correct], floor, tolerance
        )
        chosen[half] = answering_step([c[half] for c in confidence], other_thresholds)
    cascade = [answers[step][i] for i, step in enumerate(chosen.tolist())]
    measured = CascadeMeasure(
        answers=cascade,
        step=chosen,
        confidence=np.array([a.confidence for a in cascade]),
        correct=correct_items(task.kind, heldout, cascade),
        scores=score(task.kind, task.label_names, heldout, cascade),
    )
    return thresholds, measured


def _meta(
    task: TaskConfig,
    examples: Sequence[LabelledText],
    train_set: Sequence[LabelledText],
    heldout_source: str,
    step_dirs: Sequence[Path],
    thresholds: Sequence[float],
    measured: CascadeMeasure,
) -> ModelMeta:
    step_metas = [read_meta(step_dir) for step_dir in step_dirs]
    hash_ = config_hash(task, ",".join(meta.config_hash for meta in step_metas))
    created_at = datetime.now(UTC)
    accuracy, share = accepted_accuracy(
        measured.confidence, measured.correct, task.routing.accept_threshold
    )
    shares = {
        f"share_{meta.architecture}": float(np.mean(measured.step == index))
        for index, meta in enumerate(step_metas)
    }
    metrics = {
        **measured.scores.overall,
        "ece_calibrated": expected_calibration_error(measured.confidence, measured.correct),
        "accept_threshold": task.routing.accept_threshold,
        "accepted_share": share,
        **({"accepted_accuracy": accuracy} if accuracy is not None else {}),
        **shares,
    }
    return ModelMeta(
        task=task.name,
        kind=task.kind,
        labels=task.label_names,
        version=version_id(task.name, created_at, hash_, examples),
        created_at=created_at,
        architecture="cascade",
        metrics=metrics,
        per_label={k: vars(v) for k, v in measured.scores.per_label.items()},
        data_counts={
            "train": len(train_set),
            "train_human": sum(eg.source == "human" for eg in train_set),
            "train_llm": sum(eg.source == "llm" for eg in train_set),
            "heldout": measured.scores.n,
        },
        calibration_data=heldout_source,
        config_hash=hash_,
        steps=[
            CascadeStep(
                architecture=meta.architecture,
                path=f"{STEPS_DIR}/{step_dir.name}",
                threshold=threshold,
            )
            for meta, step_dir, threshold in zip(step_metas, step_dirs, [*thresholds, None])
        ],
    )


def _prefixed(
    on_progress: Callable[[TrainProgress], None] | None, architecture: str
) -> Callable[[TrainProgress], None] | None:
    if on_progress is None:
        return None
    return lambda event: on_progress(
        dataclasses.replace(event, stage=f"{architecture}: {event.stage}")
    )
