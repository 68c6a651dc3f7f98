"""The student: a small spaCy pipeline whose confidence is a calibrated probability.

A model directory (written by `loopline train`) holds::

    pipeline/        the spaCy pipeline (`nlp.to_disk`): one trainable component
    loopline.json    ModelMeta: task, labels, version, temperature(s), metrics, lineage
    reliability.png  reliability diagram, raw vs calibrated (for people)

`predict` is the hot path of the annotate worker: it tokenises, runs the component's model
once per batch, calibrates the whole score matrix at once and skips spaCy's per-doc
`set_annotations`. Confidence is the calibrated probability that the whole annotation is
right:

- textcat: the top label's probability after temperature scaling.
- textcat_multilabel: the product over labels of p (chosen) or 1 - p (not chosen), each
  label with its own temperature.
- ner: spancat scores every candidate n-gram with a softmax over the entity types plus
  "no entity". Entities are the candidates whose best class is a type, taken greedily by
  score without overlaps; an entity's score is its type's probability. The item's
  confidence is the product of the probabilities of every kept entity and of "no entity"
  for every candidate that does not overlap a kept one: the chance that exactly this set
  of entities is right, if candidates were independent. They are not (overlapping
  candidates share evidence), so after the temperature, which is fitted on candidates and
  calibrates the entity scores, that product goes through Platt scaling fitted on whether
  whole items were right.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import spacy
from pydantic import BaseModel, ConfigDict, ValidationError
from spacy.language import Language
from spacy.tokens import Doc

from loopline.processors.calibration import (
    apply_binary_temperatures,
    apply_platt,
    apply_temperature,
)
from loopline.processors.registry import processors
from loopline.schemas import Annotation, LooplineError, ModelError, Span, TaskConfig
from loopline.schemas.task import TaskKind

MODEL_FORMAT = 1
META_FILE = "loopline.json"
PIPELINE_DIR = "pipeline"
RELIABILITY_PLOT = "reliability.png"
COMPONENTS: dict[str, str] = {
    "textcat": "textcat",
    "textcat_multilabel": "textcat_multilabel",
    "ner": "spancat",
}
"""The one trainable component of a student pipeline, by task kind."""


class CascadeStep(BaseModel):
    """One student of a cascade (architecture `cascade`): its model directory (relative to
    the cascade's) and the confidence at or above which its answer is kept (None: last)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    architecture: str
    path: str
    threshold: float | None


class ModelMeta(BaseModel):
    """`loopline.json`: what a model directory holds and where it came from.

    Every architecture writes one, so that the trainer, the registry and the worker treat
    them alike; `encoder` (architecture `encoder`) and `steps` (architecture `cascade`)
    say what else the directory holds.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = MODEL_FORMAT
    task: str
    kind: TaskKind
    labels: list[str]
    version: str
    created_at: datetime
    architecture: str
    temperature: float | list[float] = 1.0
    item_platt: tuple[float, float] | None = None
    metrics: dict[str, float] = {}
    per_label: dict[str, dict[str, float]] = {}
    data_counts: dict[str, int] = {}
    calibration_data: str = ""
    config_hash: str = ""
    parent_version: str | None = None
    spacy_version: str = ""
    encoder: str | None = None
    steps: list[CascadeStep] = []


@dataclass(frozen=True)
class Calibration:
    """What turns raw scores into probabilities; the defaults leave them raw.

    `temperature` is one number (textcat, ner) or one per label (textcat_multilabel);
    `item_platt` (slope, intercept) rescales NER item confidences.
    """

    temperature: float | np.ndarray = 1.0
    item_platt: tuple[float, float] | None = None

    @classmethod
    def from_meta(cls, meta: ModelMeta) -> Calibration:
        temperature = meta.temperature
        if isinstance(temperature, list):
            temperature = np.asarray(temperature, dtype=np.float64)
        return cls(temperature, meta.item_platt)

    def to_meta(self) -> dict[str, Any]:
        """The ModelMeta fields that store this calibration."""
        temperature = self.temperature
        if isinstance(temperature, np.ndarray):
            temperature = [float(t) for t in temperature]
        return {"temperature": temperature, "item_platt": self.item_platt}


RAW = Calibration()


@dataclass(frozen=True)
class Candidates:
    """spancat's raw output for a batch: candidate token spans and their class probabilities."""

    starts: np.ndarray
    ends: np.ndarray
    lengths: np.ndarray
    probs: np.ndarray  # (candidates, types + 1); the last column is "no entity"


RawScores = np.ndarray | Candidates


class Student:
    """A trained student pipeline with its calibration: one Processor among others."""

    source = "student"

    def __init__(self, nlp: Language, meta: ModelMeta, scores_top_k: int = 0) -> None:
        self.nlp = nlp
        self.meta = meta
        self.version = meta.version
        self.task_name = meta.task
        self.kind: TaskKind = meta.kind
        self.labels = list(meta.labels)
        self.metrics = dict(meta.metrics)
        self.calibration = Calibration.from_meta(meta)
        self.scores_top_k = scores_top_k
        self._component = nlp.get_pipe(COMPONENTS[meta.kind])

    @classmethod
    def load(cls, path: str | Path, task: TaskConfig | None = None) -> Student:
        """Load a model directory; with `task`, refuse a model made for another task or labels,
        and keep only as many label scores per annotation as the task's messages carry."""
        path = Path(path)
        meta = read_meta(path, task)
        if not (path / PIPELINE_DIR).is_dir():
            raise ModelError(f"{path}: no {PIPELINE_DIR}/ directory; retrain with `loopline train`")
        try:
            nlp = spacy.load(path / PIPELINE_DIR)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"{path / PIPELINE_DIR}: cannot load the spaCy pipeline ({exc}); "
                "the directory is incomplete or damaged: retrain with `loopline train`"
            ) from None
        if COMPONENTS[meta.kind] not in nlp.pipe_names:
            raise ModelError(
                f"{path}: the pipeline has no {COMPONENTS[meta.kind]!r} component for a "
                f"{meta.kind} task; retrain with `loopline train`"
            )
        component_labels = list(nlp.get_pipe(COMPONENTS[meta.kind]).labels)
        if component_labels != meta.labels:
            raise ModelError(
                f"{path}: the pipeline's labels differ from {META_FILE}; retrain the model"
            )
        return cls(nlp, meta, task.scores_top_k if task is not None else 0)

    def predict(self, texts: Sequence[str], batch_size: int = 256) -> list[Annotation]:
        """One calibrated Annotation per text, in order."""
        annotations: list[Annotation] = []
        for start in range(0, len(texts), batch_size):
            docs = [self.nlp.make_doc(text) for text in texts[start : start + batch_size]]
            raw = self.raw_scores(docs)
            annotations += self.decode(docs, raw, self.calibration, self.scores_top_k)
        return annotations

    async def annotate(self, texts: Sequence[str]) -> list[Annotation | LooplineError]:
        """The Processor interface: `predict` in a worker thread, off the event loop."""
        return await asyncio.to_thread(self.predict, texts)

    def raw_scores(self, docs: list[Doc]) -> RawScores:
        """The component's uncalibrated probabilities for a batch of docs.

        A doc without tokens holds no evidence: it gets uniform scores (0.5 for independent
        labels), hence a low confidence, without reaching the model (spaCy's bag-of-ngrams
        layer fails on empty docs mixed with others).
        """
        if self.kind == "ner":
            return _candidates(self._component, docs, len(self.labels))
        has_tokens = np.fromiter((len(doc) > 0 for doc in docs), dtype=bool, count=len(docs))
        if has_tokens.all():
            return np.asarray(self._component.predict(docs), dtype=np.float64)
        uninformed = 1.0 / len(self.labels) if self.kind == "textcat" else 0.5
        probs = np.full((len(docs), len(self.labels)), uninformed)
        if has_tokens.any():
            probs[has_tokens] = self._component.predict([d for d in docs if len(d)])
        return probs

    def decode(
        self, docs: list[Doc], raw: RawScores, calibration: Calibration, scores_top_k: int = 0
    ) -> list[Annotation]:
        """Annotations from raw scores calibrated with `calibration` (RAW leaves them raw),
        with the `scores_top_k` highest label scores (0: all)."""
        if self.kind == "ner":
            return decode_entities(docs, raw, self.labels, calibration)
        if self.kind == "textcat_multilabel":
            return decode_multilabel(raw, self.labels, calibration, scores_top_k)
        return decode_exclusive(raw, self.labels, calibration, scores_top_k)


@processors.register("loopline.Student.v1")
def make_student(path: Path, task: TaskConfig | None = None) -> Student:
    """Registry factory: the student saved in `path`, checked against `task` when given."""
    return Student.load(path, task)


# model directory ----------------------------------------------------------------------------


def read_meta(path: Path, task: TaskConfig | None = None) -> ModelMeta:
    """`loopline.json` of a model directory, with errors that say how to get a usable one;
    with `task`, refuse a model made for another task or labels."""
    if not path.is_dir():
        raise ModelError(
            f"{path}: no model directory there; train one with "
            f"`loopline train --task TASK --data DATA --out {path}`"
        )
    meta_path = path / META_FILE
    try:
        raw: Any = json.loads(meta_path.read_text(encoding="utf-8"))
        meta = ModelMeta.model_validate(raw)
    except FileNotFoundError:
        raise ModelError(
            f"{path}: no {META_FILE}, so this is not a loopline model directory "
            "(or training did not finish); retrain with `loopline train`"
        ) from None
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ModelError(
            f"{meta_path}: unreadable ({exc}); retrain with `loopline train`"
        ) from None
    if meta.format != MODEL_FORMAT:
        raise ModelError(
            f"{meta_path}: model format {meta.format}, this loopline reads {MODEL_FORMAT}; "
            "retrain the model with this version"
        )
    if task is not None:
        check_matches_task(meta, task, path)
    return meta


def check_matches_task(meta: ModelMeta, task: TaskConfig, path: Path) -> None:
    """Refuse a model whose task, kind or labels differ from the task file."""
    if meta.task != task.name or meta.kind != task.kind:
        raise ModelError(
            f"{path}: model made for task {meta.task!r} ({meta.kind}), not {task.name!r} "
            f"({task.kind}); pass the right --task or a model trained for it"
        )
    if meta.labels != task.label_names:
        missing = sorted(set(task.labels) - set(meta.labels))
        extra = sorted(set(meta.labels) - set(task.labels))
        detail = f"missing {missing}, extra {extra}" if missing or extra else "in another order"
        raise ModelError(
            f"{path}: the model's labels differ from task {task.name!r} ({detail}); "
            "retrain after changing labels"
        )


# decoding -----------------------------------------------------------------------------------


def label_scores(probs: np.ndarray, labels: list[str], top_k: int = 0) -> list[dict[str, float]]:
    """Each row's scores by label; only its `top_k` highest, highest first, when top_k > 0.

    Done here, on the whole matrix, because sorting each item's scores in Python costs
    more than the student's forward pass on it.
    """
    rows = probs.tolist()
    if top_k == 0 or top_k >= len(labels):
        return [dict(zip(labels, row)) for row in rows]
    top = np.argsort(-probs, axis=1, kind="stable")[:, :top_k].tolist()
    return [{labels[j]: row[j] for j in columns} for columns, row in zip(top, rows)]


def decode_exclusive(
    probs: np.ndarray, labels: list[str], calibration: Calibration, scores_top_k: int = 0
) -> list[Annotation]:
    """One label per text; confidence = its calibrated probability."""
    calibrated = apply_temperature(probs, calibration.temperature)
    best = calibrated.argmax(axis=1)
    confidence = calibrated[np.arange(len(best)), best].tolist()
    return [
        Annotation.model_construct(labels=[labels[b]], scores=scores, spans=[], confidence=c)
        for b, scores, c in zip(
            best.tolist(), label_scores(calibrated, labels, scores_top_k), confidence
        )
    ]


def decode_multilabel(
    probs: np.ndarray, labels: list[str], calibration: Calibration, scores_top_k: int = 0
) -> list[Annotation]:
    """Labels with p > 0.5; confidence = probability that the whole label set is right."""
    calibrated = apply_binary_temperatures(probs, calibration.temperature)
    chosen = calibrated > 0.5
    confidence = np.where(chosen, calibrated, 1.0 - calibrated).prod(axis=1).tolist()
    return [
        Annotation.model_construct(
            labels=[label for label, on in zip(labels, row_chosen) if on],
            scores=scores,
            spans=[],
            confidence=c,
        )
        for row_chosen, scores, c in zip(
            chosen.tolist(), label_scores(calibrated, labels, scores_top_k), confidence
        )
    ]


def decode_entities(
    docs: list[Doc], candidates: Candidates, labels: list[str], calibration: Calibration
) -> list[Annotation]:
    """Non-overlapping entities per doc and the probability that the set is exactly right."""
    probs = candidates.probs
    if len(probs):
        probs = apply_temperature(probs, calibration.temperature)
    found = []
    offset = 0
    for doc, count in zip(docs, candidates.lengths.tolist()):
        rows = slice(offset, offset + count)
        offset += count
        found.append(
            _doc_entities(doc, candidates.starts[rows], candidates.ends[rows], probs[rows], labels)
        )
    confidence = np.exp([log_confidence for _, log_confidence in found])
    if calibration.item_platt is not None:
        confidence = apply_platt(confidence, *calibration.item_platt)
    return [
        Annotation.model_construct(labels=[], scores={}, spans=spans, confidence=c)
        for (spans, _), c in zip(found, confidence.tolist())
    ]


def _doc_entities(
    doc: Doc, starts: np.ndarray, ends: np.ndarray, probs: np.ndarray, labels: list[str]
) -> tuple[list[Span], float]:
    """Greedy non-overlapping entities and the log-probability that they are the whole set."""
    if not len(probs):
        return [], 0.0
    none = probs.shape[1] - 1
    best = probs.argmax(axis=1)
    best_p = probs[np.arange(len(best)), best]
    positive = np.flatnonzero(best != none)
    covered = np.zeros(len(doc), dtype=bool)
    kept = []
    for i in positive[np.argsort(-best_p[positive], kind="stable")]:
        if not covered[starts[i] : ends[i]].any():
            covered[starts[i] : ends[i]] = True
            kept.append(i)
    covered_before = np.concatenate(([0], np.cumsum(covered)))
    free = covered_before[ends] == covered_before[starts]
    log_confidence = np.log(best_p[kept]).sum() + np.log(probs[free, none]).sum()
    spans = [
        Span(
            start=doc[starts[i]].idx,
            end=doc[ends[i] - 1].idx + len(doc[ends[i] - 1]),
            label=labels[best[i]],
            score=float(best_p[i]),
        )
        for i in sorted(kept, key=lambda i: starts[i])
    ]
    return spans, float(log_confidence)


def _candidates(component, docs: list[Doc], n_labels: int) -> Candidates:
    indices, scores = component.predict(docs)
    spans = np.asarray(indices.dataXd, dtype=np.int64).reshape(-1, 2)
    probs = np.asarray(scores, dtype=np.float64).reshape(-1, n_labels + 1)
    return Candidates(
        starts=spans[:, 0],
        ends=spans[:, 1],
        lengths=np.asarray(indices.lengths, dtype=np.int64),
        probs=probs,
    )
