"""The encoder student: sentence vectors from a pretrained encoder, a linear head, calibration.

A model directory (written by `loopline train` with `student.architecture: encoder`) holds::

    encoder/model.onnx       the sentence encoder (verified copy of the cached weights)
    encoder/tokenizer.json   its official tokenizer
    head.npz                 the linear head: weights (labels x dimension), bias (labels)
    loopline.json            ModelMeta: labels, version, temperature(s), metrics, `encoder`
    reliability.png          reliability diagram, raw vs calibrated

The directory carries its encoder files (hard links to the cache where the filesystem
allows), so a worker needs nothing else to load it. Confidence is calibrated exactly as the
spaCy student's: one temperature on the head's softmax (textcat) or one per label on its
sigmoids (textcat_multilabel), decoded by the same functions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loopline.processors.encoder.models import EncoderSpec, encoder_spec
from loopline.processors.encoder.runtime import SentenceEncoder
from loopline.processors.registry import processors
from loopline.processors.student import (
    Calibration,
    ModelMeta,
    decode_exclusive,
    decode_multilabel,
    read_meta,
)
from loopline.processors.weights import check_file
from loopline.schemas import Annotation, LooplineError, ModelError, TaskConfig
from loopline.schemas.task import TaskKind

ENCODER_DIR = "encoder"
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
HEAD_FILE = "head.npz"


@dataclass(frozen=True)
class LinearHead:
    """Label probabilities from sentence vectors: softmax (exclusive) or sigmoids."""

    weights: np.ndarray  # (labels, dimension)
    bias: np.ndarray  # (labels,)
    exclusive: bool

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        logits = np.asarray(vectors, dtype=np.float64) @ self.weights.T + self.bias
        if not self.exclusive:
            return 0.5 * (1.0 + np.tanh(0.5 * logits))
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        return logits / logits.sum(axis=1, keepdims=True)

    def save(self, path: Path) -> None:
        np.savez(path, weights=self.weights, bias=self.bias, exclusive=self.exclusive)

    @classmethod
    def load(cls, path: Path) -> LinearHead:
        with np.load(path) as stored:
            return cls(stored["weights"], stored["bias"], bool(stored["exclusive"]))


class EncoderStudent:
    """A trained encoder student: one Processor (and worker Predictor) among others.

    `raw_scores` and `decode` work on sentence vectors, the way the spaCy student's work on
    docs, so that training calibrates both with the same code.
    """

    source = "student"

    def __init__(
        self,
        encoder: SentenceEncoder,
        head: LinearHead,
        meta: ModelMeta,
        scores_top_k: int = 0,
    ) -> None:
        self.encoder = encoder
        self.head = head
        self.meta = meta
        self.version = meta.version
        self.kind: TaskKind = meta.kind
        self.labels = list(meta.labels)
        self.metrics = dict(meta.metrics)
        self.calibration = Calibration.from_meta(meta)
        self.scores_top_k = scores_top_k

    @classmethod
    def load(
        cls, path: str | Path, task: TaskConfig | None = None, *, threads: int = 0
    ) -> EncoderStudent:
        """Load a model directory, checking its encoder files against their sha256; with
        `task`, refuse a model made for another task or labels."""
        path = Path(path)
        meta = read_meta(path, task)
        spec = _spec_of(meta, path)
        files = path / ENCODER_DIR
        fix = "the model directory is damaged: retrain with `loopline train`"
        check_file(files / ONNX_FILE, spec.onnx.sha256, fix)
        check_file(files / TOKENIZER_FILE, spec.tokenizer.sha256, fix)
        try:
            head = LinearHead.load(path / HEAD_FILE)
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{path / HEAD_FILE}: unreadable ({exc}); {fix}") from None
        if head.weights.shape[0] != len(meta.labels):
            raise ModelError(f"{path / HEAD_FILE}: not one row per label; {fix}")
        encoder = SentenceEncoder(
            files / ONNX_FILE, files / TOKENIZER_FILE, max_length=spec.max_length, threads=threads
        )
        return cls(encoder, head, meta, task.scores_top_k if task is not None else 0)

    def predict(self, texts: Sequence[str], batch_size: int = 256) -> list[Annotation]:
        """One calibrated Annotation per text, in order (`batch_size` is the spaCy student's
        argument: the encoder batches by length itself)."""
        vectors = self.encoder.embed(texts)
        return self.decode(vectors, self.raw_scores(vectors), self.calibration, self.scores_top_k)

    async def annotate(self, texts: Sequence[str]) -> list[Annotation | LooplineError]:
        """The Processor interface: `predict` in a worker thread, off the event loop."""
        return await asyncio.to_thread(self.predict, texts)

    def raw_scores(self, vectors: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """The head's uncalibrated probabilities for sentence vectors."""
        return self.head.probabilities(np.asarray(vectors))

    def decode(
        self,
        vectors: Sequence[np.ndarray] | np.ndarray,
        raw: np.ndarray,
        calibration: Calibration,
        scores_top_k: int = 0,
    ) -> list[Annotation]:
        """Annotations from raw scores calibrated with `calibration` (the vectors are not
        needed: the argument mirrors the spaCy student's docs)."""
        if self.kind == "textcat_multilabel":
            return decode_multilabel(raw, self.labels, calibration, scores_top_k)
        return decode_exclusive(raw, self.labels, calibration, scores_top_k)


def _spec_of(meta: ModelMeta, path: Path) -> EncoderSpec:
    if meta.encoder is None:
        raise ModelError(f"{path}: loopline.json names no encoder; retrain with `loopline train`")
    return encoder_spec(meta.encoder)


@processors.register("loopline.EncoderStudent.v1")
def make_encoder_student(
    path: Path, task: TaskConfig | None = None, threads: int = 0
) -> EncoderStudent:
    """Registry factory: the encoder student saved in `path`, checked against `task` when
    given, running ONNX Runtime with `threads` intra-op threads (0: one per core)."""
    return EncoderStudent.load(path, task, threads=threads)
