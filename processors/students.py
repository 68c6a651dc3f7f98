"""Any trained student, whatever its architecture: one way to load a model directory, and
the cascade of students by cost.

`load_student(path, task)` reads `loopline.json` and builds what the directory holds: a
spaCy `Student`, an `EncoderStudent`, or a `StudentCascade`. The worker, the benchmarks,
`loopline evaluate` and the registry all load models through it, so none of them needs to
know which architecture it runs.

A cascade is one model directory and one Predictor::

    loopline.json          architecture `cascade`; `steps`: each step's directory and threshold
    steps/1-bow/           a complete model directory (the cheapest step)
    steps/2-encoder/       the next, more expensive one ...

Every item goes to the first step; an item whose calibrated confidence is below that step's
threshold goes on to the next step, and so on; the last step answers the rest. Each answer
is the answering step's own calibrated annotation, and its `model_version` says which step
gave it (`<cascade version>:<architecture>`). What the worker does next (accept, ask the
LLM, ask people) depends only on that annotation, as with any student.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from loopline.processors.encoder.student import EncoderStudent
from loopline.processors.registry import processors
from loopline.processors.student import ModelMeta, Student, read_meta
from loopline.schemas import Annotation, LooplineError, ModelError, TaskConfig
from loopline.schemas.messages import Source
from loopline.schemas.task import TaskKind


class TrainedStudent(Protocol):
    """What every loaded student offers: the Predictor of the worker's child process (a
    synchronous, batched `predict`), the Processor interface, and its `loopline.json`."""

    source: Source
    version: str
    meta: ModelMeta
    kind: TaskKind
    labels: list[str]

    def predict(self, texts: Sequence[str], batch_size: int = 256) -> list[Annotation]: ...

    async def annotate(self, texts: Sequence[str]) -> list[Annotation | LooplineError]: ...


def load_student(
    path: str | Path, task: TaskConfig | None = None, *, threads: int = 0
) -> TrainedStudent:
    """The student saved in `path`, of whatever architecture; with `task`, refuse a model
    made for another task or labels. `threads`: ONNX Runtime threads of encoder students
    (0: one per core)."""
    path = Path(path)
    architecture = read_meta(path).architecture
    if architecture == "encoder":
        return EncoderStudent.load(path, task, threads=threads)
    if architecture == "cascade":
        return StudentCascade.load(path, task, threads=threads)
    return Student.load(path, task)


@processors.register("loopline.Student.v2")
def make_any_student(
    path: Path, task: TaskConfig | None = None, threads: int = 0
) -> TrainedStudent:
    """Registry factory: the student in `path`, whatever its architecture (v1 is spaCy only)."""
    return load_student(path, task, threads=threads)


class StudentCascade:
    """Students by cost, cheapest first, behind one Predictor (see the module docstring)."""

    source = "student"

    def __init__(
        self, steps: Sequence[TrainedStudent], thresholds: Sequence[float], meta: ModelMeta
    ) -> None:
        if len(thresholds) != len(steps) - 1:
            raise ValueError("a cascade has one threshold per step but the last")
        self.steps = list(steps)
        self.thresholds = list(thresholds)
        self.meta = meta
        self.version = meta.version
        self.kind: TaskKind = meta.kind
        self.labels = list(meta.labels)
        self.metrics = dict(meta.metrics)
        self.step_versions = [f"{meta.version}:{step.meta.architecture}" for step in steps]

    @classmethod
    def load(
        cls, path: str | Path, task: TaskConfig | None = None, *, threads: int = 0
    ) -> StudentCascade:
        path = Path(path)
        meta = read_meta(path, task)
        if len(meta.steps) < 2 or any(s.threshold is None for s in meta.steps[:-1]):
            raise ModelError(
                f"{path}: a cascade needs at least two steps, each but the last with a "
                "threshold; retrain with `loopline train`"
            )
        steps = [load_student(path / step.path, task, threads=threads) for step in meta.steps]
        return cls(steps, [step.threshold for step in meta.steps[:-1]], meta)

    def predict(self, texts: Sequence[str], batch_size: int = 256) -> list[Annotation]:
        """Each text's answer from the first step sure enough of it (the last step if none)."""
        answers: list[Annotation | None] = [None] * len(texts)
        pending = list(range(len(texts)))
        for index, step in enumerate(self.steps):
            if not pending:
                break
            results = step.predict([texts[i] for i in pending], batch_size=batch_size)
            threshold = self.thresholds[index] if index < len(self.thresholds) else None
            tag = {"model_version": self.step_versions[index]}
            unsure = []
            for i, annotation in zip(pending, results):
                if threshold is None or annotation.confidence >= threshold:
                    answers[i] = annotation.model_copy(update=tag)
                else:
                    unsure.append(i)
            pending = unsure
        return answers

    async def annotate(self, texts: Sequence[str]) -> list[Annotation | LooplineError]:
        """The Processor interface: `predict` in a worker thread, off the event loop."""
        return await asyncio.to_thread(self.predict, texts)
