"""Training the encoder student: embed (cached by text hash), fit a logistic head, calibrate.

Held-out data, calibration (temperature scaling, 2-fold cross-fitted ECE), the report and
the model directory's lifecycle are the spaCy student's (`processors.training`); only the
model differs. The encoder itself is not trained: its sentence vectors are computed once
per distinct text and cached (`cache.EmbeddingCache`), so retraining the head after new
labels embeds only the new texts and takes seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from loopline.processors.data import LabelledText
from loopline.processors.encoder.cache import EmbeddingCache
from loopline.processors.encoder.models import encoder_spec, fetch_encoder
from loopline.processors.encoder.runtime import SentenceEncoder
from loopline.processors.encoder.student import (
    ENCODER_DIR,
    HEAD_FILE,
    ONNX_FILE,
    TOKENIZER_FILE,
    EncoderStudent,
    LinearHead,
)
from loopline.processors.training import (
    TrainProgress,
    TrainReport,
    calibrate,
    check_out_dir,
    config_hash,
    draft_meta,
    final_meta,
    report_of,
    save,
    split_heldout,
    with_speed,
)
from loopline.processors.weights import link_verified
from loopline.schemas import DataError, TaskConfig

MAX_ITERATIONS = 2000
ABSENT_LABEL_BIAS = -30.0
"""Bias of a label no training example has: its probability is ~0 (e^-30 against the rest)."""

Progress = Callable[[TrainProgress], None] | None


def train_encoder(
    task: TaskConfig,
    examples: Sequence[LabelledText],
    eval_examples: Sequence[LabelledText] | None,
    *,
    out_dir: Path,
    on_progress: Progress,
    parent_version: str | None,
    force: bool,
    cache_dir: Path,
    measure: bool,
) -> TrainReport:
    """Train, calibrate, measure and save an encoder student for `task` into `out_dir`."""
    check_out_dir(out_dir, force)
    train_set, heldout, heldout_source = split_heldout(task, examples, eval_examples)
    spec = encoder_spec(task.student.encoder)
    files = fetch_encoder(spec, cache_dir)
    encoder = SentenceEncoder(files.onnx, files.tokenizer, max_length=spec.max_length)

    started = time.perf_counter()
    cache = EmbeddingCache.for_encoder(cache_dir, spec.name, spec.onnx.sha256, encoder.dimension)
    try:
        texts = [eg.text for eg in train_set] + [eg.text for eg in heldout]
        embedded = cache.embed(encoder, texts, _embed_progress(on_progress))
    finally:
        cache.close()
    train_vectors, heldout_vectors = np.split(embedded.vectors, [len(train_set)])
    embedded_at = time.perf_counter()
    head = fit_head(task, train_vectors, train_set, on_progress)
    fitted_at = time.perf_counter()

    student = EncoderStudent(encoder, head, draft_meta(task))
    outcome = calibrate(student, heldout_vectors, heldout, seed=task.student.seed)
    train_seconds = fitted_at - started
    timing = {
        "embed_seconds": embedded_at - started,
        "fit_seconds": fitted_at - embedded_at,
        "train_seconds": train_seconds,
        "train_docs_per_s": len(train_set) / train_seconds,
    }
    meta = final_meta(
        task,
        examples,
        train_set,
        heldout_source,
        outcome,
        timing,
        config_hash=config_hash(task, f"{spec.name}:{spec.onnx.sha256}:{spec.tokenizer.sha256}"),
        parent_version=parent_version,
        encoder=spec.name,
    )
    counts = {"texts_embedded": embedded.computed, "texts_from_cache": embedded.cached}
    meta = meta.model_copy(update={"data_counts": {**meta.data_counts, **counts}})

    def write_model(directory: Path) -> None:
        head.save(directory / HEAD_FILE)
        link_verified(files.onnx, spec.onnx.sha256, directory / ENCODER_DIR / ONNX_FILE)
        link_verified(
            files.tokenizer, spec.tokenizer.sha256, directory / ENCODER_DIR / TOKENIZER_FILE
        )

    report = report_of(out_dir, meta, outcome)
    save(report, out_dir, force, write_model)
    return with_speed(report, heldout) if measure else report


def fit_head(
    task: TaskConfig,
    vectors: np.ndarray,
    examples: Sequence[LabelledText],
    on_progress: Progress = None,
) -> LinearHead:
    """Logistic regression on sentence vectors (L2, C = student.head_c), example weights as
    sample weights: multinomial for exclusive labels, one binary model per label otherwise."""
    if on_progress:
        on_progress(TrainProgress(1, 1, 0, 1, stage="fit head"))
    weights = np.array([eg.weight for eg in examples])
    if task.kind == "textcat":
        head = _exclusive_head(task, vectors, examples, weights)
    else:
        head = _binary_head(task, vectors, examples, weights)
    if on_progress:
        on_progress(TrainProgress(1, 1, 1, 1, stage="fit head"))
    return head


def _exclusive_head(
    task: TaskConfig, vectors: np.ndarray, examples: Sequence[LabelledText], weights: np.ndarray
) -> LinearHead:
    labels = task.label_names
    index = {label: i for i, label in enumerate(labels)}
    gold = np.array([index[eg.labels[0]] for eg in examples])
    present = np.unique(gold)
    if len(present) < 2:
        raise DataError(
            "the encoder's head needs training examples of at least two labels; label more examples"
        )
    model = _logistic(task).fit(vectors, gold, sample_weight=weights)
    coef, intercept = model.coef_, model.intercept_
    if len(present) == 2:  # scikit-learn fits one logit for two classes: p(second) = σ(z)
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    full_weights = np.zeros((len(labels), vectors.shape[1]))
    full_bias = np.full(len(labels), ABSENT_LABEL_BIAS)
    full_weights[model.classes_] = coef
    full_bias[model.classes_] = intercept
    return LinearHead(full_weights, full_bias, exclusive=True)


def _binary_head(
    task: TaskConfig, vectors: np.ndarray, examples: Sequence[LabelledText], weights: np.ndarray
) -> LinearHead:
    """One logistic model per label; a label always on (or off) in the data gets a constant
    logit from its smoothed frequency."""
    rows, biases = [], []
    for label in task.label_names:
        gold = np.array([label in eg.labels for eg in examples])
        if gold.all() or not gold.any():
            share = (gold.sum() + 0.5) / (len(gold) + 1.0)
            rows.append(np.zeros(vectors.shape[1]))
            biases.append(float(np.log(share / (1 - share))))
            continue
        model = _logistic(task).fit(vectors, gold, sample_weight=weights)
        rows.append(model.coef_[0])
        biases.append(float(model.intercept_[0]))
    return LinearHead(np.vstack(rows), np.array(biases), exclusive=False)


def _logistic(task: TaskConfig) -> LogisticRegression:
    return LogisticRegression(C=task.student.head_c, max_iter=MAX_ITERATIONS)


def _embed_progress(on_progress: Progress) -> Callable[[int, int], None] | None:
    if on_progress is None:
        return None
    return lambda done, total: on_progress(TrainProgress(1, 1, done, total, stage="embed"))
