"""Training a student: a spaCy pipeline, its calibration, an honest report, a model directory.

Held-out data. The `eval` examples (human ones) when given, else a seeded
`task.student.calibration_share` of the human training examples, which are then not
trained on. Silver (LLM) examples are only ever trained on: calibration and metrics must
rest on human labels.

Weights. spaCy's `Example`s carry no weight, so each epoch an example of weight `w` is
trained on `floor(w)` times plus once more with probability `w - floor(w)` (seeded). Its
expected share of the gradient is then exactly proportional to `w`, with no change to
spaCy's losses.

Calibration. One temperature (one per label for multilabel; for NER a temperature on the
candidates plus Platt scaling of item confidence, see `student`) is fitted on the held-out
set by minimising NLL, and stored. The reported calibration error must not be measured on
the data the calibration was fitted on, so it is cross-fitted: the held-out set is split in
two halves, the calibration fitted on each half is applied to the other, and the ECE and
the accuracy/share above `routing.accept_threshold` are measured on those out-of-fold
confidences. Accuracy and F1 are those of the final model on the whole held-out set.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import spacy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import fix_random_seed, minibatch

from loopline.processors.calibration import (
    ReliabilityBin,
    expected_calibration_error,
    fit_binary_temperatures,
    fit_platt,
    fit_temperature,
    reliability_bins,
)
from loopline.processors.data import LabelledText, to_spacy_examples, tokenizer_pipeline
from loopline.processors.evaluation import measure_speed
from loopline.processors.metrics import Scores, accepted_accuracy, correct_items, score
from loopline.processors.student import (
    COMPONENTS,
    META_FILE,
    PIPELINE_DIR,
    RAW,
    RELIABILITY_PLOT,
    Calibration,
    Candidates,
    ModelMeta,
    RawScores,
    Student,
)
from loopline.processors.students import load_student
from loopline.processors.weights import DEFAULT_CACHE_DIR
from loopline.schemas import Annotation, ConfigError, DataError, TaskConfig
from loopline.schemas.task import TaskKind

MIN_HELDOUT = 20
"""Fewer held-out items than this cannot fit a temperature and measure it on two halves."""
BOW_NGRAM_SIZE = 2
BOW_LENGTH = 2**16
SPANCAT_WIDTH = 64
SPANCAT_DEPTH = 2
SPANCAT_NEGATIVE_WEIGHT = 0.3
"""Weight of "no entity" candidates in the loss: they outnumber entities ~90 to 1 on WNUT-17."""
NER_LENGTH_COVERAGE = 0.98
"""The n-gram suggester proposes spans up to the length that covers this share of entities."""
MAX_NGRAM = 10


# building -----------------------------------------------------------------------------------


def textcat_model(architecture: str, exclusive: bool) -> dict:
    """spaCy's text classifier architectures, as in spaCy's own default configs."""
    bow = {
        "@architectures": "spacy.TextCatBOW.v3",
        "exclusive_classes": exclusive,
        "length": BOW_LENGTH,
        "ngram_size": BOW_NGRAM_SIZE,
        "no_output_layer": False,
    }
    if architecture == "bow":
        return bow
    if architecture == "ensemble":
        tok2vec = {
            "@architectures": "spacy.Tok2Vec.v2",
            "embed": {
                "@architectures": "spacy.MultiHashEmbed.v2",
                "width": 64,
                "rows": [2000, 2000, 500, 1000, 500],
                "attrs": ["NORM", "LOWER", "PREFIX", "SUFFIX", "SHAPE"],
                "include_static_vectors": False,
            },
            "encode": {
                "@architectures": "spacy.MaxoutWindowEncoder.v2",
                "width": 64,
                "window_size": 1,
                "maxout_pieces": 3,
                "depth": 2,
            },
        }
        return {
            "@architectures": "spacy.TextCatEnsemble.v2",
            "tok2vec": tok2vec,
            "linear_model": bow,
        }
    if architecture == "cnn":
        return {
            "@architectures": "spacy.TextCatReduce.v1",
            "exclusive_classes": exclusive,
            "use_reduce_first": False,
            "use_reduce_last": False,
            "use_reduce_max": True,
            "use_reduce_mean": True,
            "tok2vec": {
                "@architectures": "spacy.HashEmbedCNN.v2",
                "pretrained_vectors": None,
                "width": 96,
                "depth": 4,
                "embed_size": 2000,
                "window_size": 1,
                "maxout_pieces": 3,
                "subword_features": True,
            },
        }
    raise ConfigError(
        f"student.architecture {architecture!r} is not a text classifier; "
        "use bow, ensemble or cnn for textcat tasks"
    )


def spancat_model() -> dict:
    """spaCy's single-label spancat model, narrowed (width 64, depth 2) to serve fast on CPU."""
    return {
        "@architectures": "spacy.SpanCategorizer.v1",
        "scorer": {"@layers": "Softmax.v2"},
        "reducer": {"@layers": "spacy.mean_max_reducer.v1", "hidden_size": SPANCAT_WIDTH},
        "tok2vec": {
            "@architectures": "spacy.Tok2Vec.v2",
            "embed": {
                "@architectures": "spacy.MultiHashEmbed.v2",
                "width": SPANCAT_WIDTH,
                "rows": [5000, 1000, 2500, 1000],
                "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
                "include_static_vectors": False,
            },
            "encode": {
                "@architectures": "spacy.MaxoutWindowEncoder.v2",
                "width": SPANCAT_WIDTH,
                "window_size": 1,
                "maxout_pieces": 3,
                "depth": SPANCAT_DEPTH,
            },
        },
    }


def student_architecture(task: TaskConfig) -> str:
    """The task's architecture; NER uses spancat, which is also its default."""
    chosen = task.student.architecture
    explicit = "architecture" in task.student.model_fields_set
    if task.kind == "ner":
        if explicit and chosen != "spancat":
            raise ConfigError(
                f"student.architecture {chosen!r} cannot find entities; use spancat for ner"
            )
        return "spancat"
    return chosen


def build_pipeline(task: TaskConfig, train_examples: Sequence[LabelledText]) -> Language:
    """A blank English pipeline with the task's one trainable component and all its labels."""
    nlp = spacy.blank("en")
    architecture = student_architecture(task)
    if task.kind == "ner":
        config = {
            "spans_key": "sc",
            "allow_overlap": False,
            "negative_weight": SPANCAT_NEGATIVE_WEIGHT,
            "suggester": {
                "@misc": "spacy.ngram_suggester.v1",
                "sizes": list(range(1, entity_length_limit(train_examples) + 1)),
            },
            "model": spancat_model(),
        }
    else:
        config = {"model": textcat_model(architecture, exclusive=task.kind == "textcat")}
    factory = "spancat_singlelabel" if task.kind == "ner" else task.kind
    component = nlp.add_pipe(factory, name=COMPONENTS[task.kind], config=config)
    for label in task.labels:
        component.add_label(label)
    return nlp


def entity_length_limit(examples: Sequence[LabelledText]) -> int:
    """Longest candidate span in tokens: covers NER_LENGTH_COVERAGE of the training entities."""
    tokenizer = tokenizer_pipeline()
    lengths = sorted(
        len(tokenizer.make_doc(eg.text).char_span(s.start, s.end))
        for eg in examples
        for s in eg.spans
    )
    if not lengths:
        raise DataError("no entities in the training data; label some before training")
    covered = lengths[min(len(lengths) - 1, math.ceil(NER_LENGTH_COVERAGE * len(lengths)) - 1)]
    return min(covered, MAX_NGRAM)


# training -----------------------------------------------------------------------------------


class Calibratable(Protocol):
    """What calibration needs of a student: raw scores for its inputs (spaCy docs, sentence
    vectors) and annotations from raw scores under a calibration."""

    kind: TaskKind
    labels: list[str]

    def raw_scores(self, docs: Sequence) -> RawScores: ...

    def decode(
        self, docs: Sequence, raw: RawScores, calibration: Calibration, scores_top_k: int = 0
    ) -> list[Annotation]: ...


@dataclass(frozen=True)
class TrainProgress:
    """Sent after every minibatch; `score` (on held-out data) is set at the end of an epoch.

    `stage` says what is progressing: `train` (epochs of minibatches, with a loss), or the
    encoder student's `embed` (texts embedded, cached ones first) and `fit head`. A
    cascade prefixes the stage with its step's architecture (`bow: train`).
    """

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float = 0.0
    score: float | None = None
    score_name: str = ""
    stage: str = "train"


@dataclass(frozen=True)
class TrainReport:
    """What training produced and how good it is, all measured on held-out human labels."""

    out_dir: Path
    meta: ModelMeta
    scores: Scores
    reliability_raw: list[ReliabilityBin]
    reliability_calibrated: list[ReliabilityBin]
    fold_calibrations: list[dict] = field(default_factory=list)

    @property
    def version(self) -> str:
        return self.meta.version

    @property
    def metrics(self) -> dict[str, float]:
        return self.meta.metrics

    def to_dict(self) -> dict:
        return {
            "out_dir": str(self.out_dir),
            **self.meta.model_dump(mode="json"),
            "fold_calibrations": self.fold_calibrations,
        }


def train(
    task: TaskConfig,
    examples: Sequence[LabelledText],
    eval_examples: Sequence[LabelledText] | None = None,
    *,
    out_dir: Path,
    on_progress: Callable[[TrainProgress], None] | None = None,
    parent_version: str | None = None,
    force: bool = False,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    measure: bool = True,
) -> TrainReport:
    """Train, calibrate, measure and save a student for `task` into `out_dir`.

    The one entry point for every architecture (`task.student.architecture`): spaCy's
    here, `encoder` and `cascade` in their modules. `cache_dir` holds the encoder's
    weights and its embedding cache (pass Settings.cache_dir). `measure=False` skips the
    speed measurement, which takes longer than refitting an encoder's head on cached
    embeddings (the trainer's runs, a cascade's steps).
    """
    # Imported here: both build on this module.
    from loopline.processors.cascade_training import train_cascade
    from loopline.processors.encoder.training import train_encoder

    architecture = student_architecture(task)
    if architecture in ("encoder", "cascade"):
        trainer = train_encoder if architecture == "encoder" else train_cascade
        return trainer(
            task,
            examples,
            eval_examples,
            out_dir=Path(out_dir),
            on_progress=on_progress,
            parent_version=parent_version,
            force=force,
            cache_dir=cache_dir,
            measure=measure,
        )
    return _train_spacy(
        task, examples, eval_examples, out_dir, on_progress, parent_version, force, measure
    )


def _train_spacy(
    task: TaskConfig,
    examples: Sequence[LabelledText],
    eval_examples: Sequence[LabelledText] | None,
    out_dir: Path,
    on_progress: Callable[[TrainProgress], None] | None,
    parent_version: str | None,
    force: bool,
    measure: bool,
) -> TrainReport:
    out_dir = Path(out_dir)
    check_out_dir(out_dir, force)
    train_set, heldout, heldout_source = split_heldout(task, examples, eval_examples)
    fix_random_seed(task.student.seed)
    nlp = build_pipeline(task, train_set)
    student = Student(nlp, draft_meta(task))
    started = time.perf_counter()
    trained_docs = _fit(task, nlp, student, train_set, heldout, on_progress)
    train_seconds = time.perf_counter() - started

    heldout_docs = [nlp.make_doc(eg.text) for eg in heldout]
    outcome = calibrate(student, heldout_docs, heldout, seed=task.student.seed)
    timing = {"train_seconds": train_seconds, "train_docs_per_s": trained_docs / train_seconds}
    meta = final_meta(
        task,
        examples,
        train_set,
        heldout_source,
        outcome,
        timing,
        config_hash=config_hash(task, nlp.config.to_str()),
        parent_version=parent_version,
        spacy_version=spacy.__version__,
    )
    report = report_of(out_dir, meta, outcome)
    save(report, out_dir, force, lambda partial: nlp.to_disk(partial / PIPELINE_DIR))
    return with_speed(report, heldout) if measure else report


def report_of(out_dir: Path, meta: ModelMeta, outcome: CalibrationOutcome) -> TrainReport:
    return TrainReport(
        out_dir=out_dir,
        meta=meta,
        scores=outcome.scores,
        reliability_raw=outcome.bins_raw,
        reliability_calibrated=outcome.bins_calibrated,
        fold_calibrations=[c.to_meta() for c in outcome.fold_calibrations],
    )


def final_meta(
    task: TaskConfig,
    examples: Sequence[LabelledText],
    train_set: Sequence[LabelledText],
    heldout_source: str,
    outcome: CalibrationOutcome,
    timing: dict[str, float],
    *,
    config_hash: str,
    **fields,
) -> ModelMeta:
    """The ModelMeta of a trained student; `fields` are further ModelMeta fields."""
    created_at = datetime.now(UTC)
    return ModelMeta(
        task=task.name,
        kind=task.kind,
        labels=task.label_names,
        version=version_id(task.name, created_at, config_hash, examples),
        created_at=created_at,
        architecture=student_architecture(task),
        **outcome.calibration.to_meta(),
        metrics={
            **outcome.scores.overall,
            **_calibration_metrics(outcome, task.routing.accept_threshold),
            **timing,
        },
        per_label={k: vars(v) for k, v in outcome.scores.per_label.items()},
        data_counts={
            "train": len(train_set),
            "train_human": sum(eg.source == "human" for eg in train_set),
            "train_llm": sum(eg.source == "llm" for eg in train_set),
            "heldout": outcome.scores.n,
        },
        calibration_data=heldout_source,
        config_hash=config_hash,
        **fields,
    )


def split_heldout(
    task: TaskConfig,
    examples: Sequence[LabelledText],
    eval_examples: Sequence[LabelledText] | None,
) -> tuple[list[LabelledText], list[LabelledText], str]:
    """(train, held-out, where held-out came from); held-out items are human-labelled."""
    if eval_examples is not None:
        heldout = [eg for eg in eval_examples if eg.source == "human"]
        train_set, source = list(examples), "eval"
    else:
        human = [eg for eg in examples if eg.source == "human"]
        random.Random(task.student.seed).shuffle(human)
        cut = math.ceil(task.student.calibration_share * len(human))
        heldout = human[:cut]
        train_set = human[cut:] + [eg for eg in examples if eg.source != "human"]
        source = f"train_share:{task.student.calibration_share}"
    if len(heldout) < MIN_HELDOUT:
        raise DataError(
            f"only {len(heldout)} human-labelled held-out items; calibration needs at least "
            f"{MIN_HELDOUT}: pass --eval with more gold data or label more examples"
        )
    if not train_set:
        raise DataError("no training examples left after holding out calibration data")
    return train_set, heldout, source


def _fit(
    task: TaskConfig,
    nlp: Language,
    student: Student,
    train_set: Sequence[LabelledText],
    heldout: Sequence[LabelledText],
    on_progress: Callable[[TrainProgress], None] | None,
) -> int:
    """nlp.update over weighted, shuffled minibatches; returns how many docs were trained on."""
    spacy_examples = to_spacy_examples(nlp, train_set, task)
    weights = [eg.weight for eg in train_set]
    optimizer = nlp.initialize(lambda: spacy_examples)
    heldout_docs = [nlp.make_doc(eg.text) for eg in heldout]
    rng = random.Random(task.student.seed)
    settings = task.student
    trained = 0
    for epoch in range(1, settings.epochs + 1):
        epoch_examples = weighted_epoch(spacy_examples, weights, rng)
        batches = list(minibatch(epoch_examples, size=settings.batch_size))
        losses: dict[str, float] = {}
        for step, batch in enumerate(batches, start=1):
            nlp.update(batch, drop=settings.dropout, sgd=optimizer, losses=losses)
            trained += len(batch)
            if on_progress:
                progress = TrainProgress(epoch, settings.epochs, step, len(batches), _loss(losses))
                on_progress(progress)
        if on_progress:
            raw = student.raw_scores(heldout_docs)
            scores = _score(student, heldout, student.decode(heldout_docs, raw, RAW))
            end_of_epoch = TrainProgress(
                epoch,
                settings.epochs,
                len(batches),
                len(batches),
                _loss(losses),
                score=scores.main,
                score_name=scores.main_name,
            )
            on_progress(end_of_epoch)
    return trained


def weighted_epoch(items: Sequence, weights: Sequence[float], rng: random.Random) -> list:
    """Each item floor(w) times, plus once with probability frac(w); shuffled."""
    epoch = []
    for item, weight in zip(items, weights):
        repeats = int(weight) + (rng.random() < weight - int(weight))
        epoch.extend([item] * repeats)
    rng.shuffle(epoch)
    return epoch


# calibration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationOutcome:
    calibration: Calibration
    fold_calibrations: list[Calibration]
    scores: Scores
    confidence_raw: np.ndarray
    correct_raw: np.ndarray
    confidence_cross: np.ndarray
    correct_cross: np.ndarray
    bins_raw: list[ReliabilityBin]
    bins_calibrated: list[ReliabilityBin]


def calibrate(
    student: Calibratable, docs: Sequence, heldout: Sequence[LabelledText], seed: int
) -> CalibrationOutcome:
    """Fit the final calibration on all held-out items; measure it by 2-fold cross-fitting.

    `docs` are the student's inputs for the held-out items: spaCy docs, or the encoder
    student's sentence vectors.
    """
    raw = student.raw_scores(docs)
    raw_annotations = student.decode(docs, raw, RAW)
    final = fit_calibration(student, docs, raw, heldout)

    order = np.random.default_rng(seed).permutation(len(heldout))
    folds = [np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2 :])]
    fold_calibrations, cross = [], [None] * len(heldout)
    fold_data = []
    for fold in folds:
        fold_docs = [docs[i] for i in fold]
        fold_gold = [heldout[i] for i in fold]
        fold_raw = student.raw_scores(fold_docs)
        fold_data.append((fold, fold_docs, fold_raw))
        fold_calibrations.append(fit_calibration(student, fold_docs, fold_raw, fold_gold))
    for (fold, fold_docs, fold_raw), other in zip(fold_data, reversed(fold_calibrations)):
        for i, annotation in zip(fold, student.decode(fold_docs, fold_raw, other)):
            cross[i] = annotation

    kind = student.kind
    confidence_raw = np.array([a.confidence for a in raw_annotations])
    correct_raw = correct_items(kind, heldout, raw_annotations)
    confidence_cross = np.array([a.confidence for a in cross])
    correct_cross = correct_items(kind, heldout, cross)
    return CalibrationOutcome(
        calibration=final,
        fold_calibrations=fold_calibrations,
        scores=_score(student, heldout, student.decode(docs, raw, final)),
        confidence_raw=confidence_raw,
        correct_raw=correct_raw,
        confidence_cross=confidence_cross,
        correct_cross=correct_cross,
        bins_raw=reliability_bins(confidence_raw, correct_raw),
        bins_calibrated=reliability_bins(confidence_cross, correct_cross),
    )


def fit_calibration(
    student: Calibratable, docs: Sequence, raw: RawScores, gold: Sequence[LabelledText]
) -> Calibration:
    """The calibration that makes `raw` scores fit the gold labels best (lowest NLL).

    NER gets a temperature fitted on spancat candidates (it calibrates the entity scores)
    and then Platt scaling of the item confidence, fitted on whether whole items were right.
    """
    labels = student.labels
    if student.kind == "textcat":
        index = {label: i for i, label in enumerate(labels)}
        return Calibration(fit_temperature(raw, np.array([index[eg.labels[0]] for eg in gold])))
    if student.kind == "textcat_multilabel":
        gold_matrix = np.array([[label in eg.labels for label in labels] for eg in gold])
        return Calibration(fit_binary_temperatures(raw, gold_matrix))
    tempered = Calibration(fit_temperature(raw.probs, candidate_classes(raw, docs, gold, labels)))
    annotations = student.decode(docs, raw, tempered)
    confidence = np.array([a.confidence for a in annotations])
    item_platt = fit_platt(confidence, correct_items("ner", gold, annotations))
    return Calibration(tempered.temperature, item_platt)


def candidate_classes(
    candidates: Candidates, docs: list[Doc], gold: Sequence[LabelledText], labels: list[str]
) -> np.ndarray:
    """The gold class of every spancat candidate: its entity type, or "no entity" (last)."""
    index = {label: i for i, label in enumerate(labels)}
    classes = np.full(len(candidates.starts), len(labels), dtype=np.int64)
    offset = 0
    for doc, example, count in zip(docs, gold, candidates.lengths.tolist()):
        entities = {}
        for span in example.spans:
            token_span = doc.char_span(span.start, span.end)
            entities[(token_span.start, token_span.end)] = index[span.label]
        for row in range(offset, offset + count):
            key = (int(candidates.starts[row]), int(candidates.ends[row]))
            if key in entities:
                classes[row] = entities[key]
        offset += count
    return classes


def _calibration_metrics(outcome: CalibrationOutcome, threshold: float) -> dict[str, float]:
    accuracy, share = accepted_accuracy(outcome.confidence_cross, outcome.correct_cross, threshold)
    metrics = {
        "ece_raw": expected_calibration_error(outcome.confidence_raw, outcome.correct_raw),
        "ece_calibrated": expected_calibration_error(
            outcome.confidence_cross, outcome.correct_cross
        ),
        "accept_threshold": threshold,
        "accepted_share": share,
    }
    if accuracy is not None:
        metrics["accepted_accuracy"] = accuracy
    return metrics


# saving and measuring -----------------------------------------------------------------------


def check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise ConfigError(
            f"{out_dir} already exists and is not empty; choose another --out "
            "(model versions are immutable) or pass --force to replace it"
        )


def save(
    report: TrainReport, out_dir: Path, force: bool, write_model: Callable[[Path], None]
) -> None:
    """`write_model(dir)` writes the model's own files; with them, loopline.json and the
    reliability plot go into a sibling directory that is then renamed, so no reader sees
    half a model."""
    partial = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    write_model(partial)
    write_meta(partial, report.meta)
    plot_reliability(report, partial / RELIABILITY_PLOT)
    if out_dir.exists() and force:
        shutil.rmtree(out_dir)
    elif out_dir.exists():
        out_dir.rmdir()
    partial.rename(out_dir)


def write_meta(model_dir: Path, meta: ModelMeta) -> None:
    text = json.dumps(meta.model_dump(mode="json"), indent=2, ensure_ascii=False)
    (model_dir / META_FILE).write_text(text + "\n", encoding="utf-8")


def with_speed(report: TrainReport, heldout: Sequence[LabelledText]) -> TrainReport:
    """Measure the saved model as the worker will run it: loaded from disk, batches of 256."""
    student = load_student(report.out_dir)
    speed = measure_speed(student, [eg.text for eg in heldout], single_calls=50)
    files = [f for f in report.out_dir.rglob("*") if f.is_file()]
    size = sum(f.stat().st_size for f in files if f.name not in (META_FILE, RELIABILITY_PLOT))
    metrics = {
        **report.meta.metrics,
        "predict_docs_per_s": speed.docs_per_s,
        "latency_single_ms_p50": speed.single_ms_p50,
        "model_mb": size / 1e6,
    }
    meta = report.meta.model_copy(update={"metrics": metrics})
    write_meta(report.out_dir, meta)
    return TrainReport(**{**vars(report), "meta": meta})


def plot_reliability(report: TrainReport, path: Path) -> None:
    """Reliability diagram: accuracy per confidence band, raw vs calibrated (out-of-fold).

    A cascade has no raw curve: each of its steps has its own diagram.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = report.meta.metrics
    figure, axes = plt.subplots(figsize=(5.5, 5))
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    curves = [
        (
            report.reliability_calibrated,
            f"calibrated, out-of-fold (ECE {metrics['ece_calibrated']:.3f})",
            "tab:blue",
        )
    ]
    if report.reliability_raw:
        raw = (report.reliability_raw, f"raw (ECE {metrics['ece_raw']:.3f})", "tab:red")
        curves.insert(0, raw)
    for bins, name, colour in curves:
        confidence, accuracy = [b.confidence for b in bins], [b.accuracy for b in bins]
        axes.plot(confidence, accuracy, marker="o", color=colour, label=name)
    threshold = metrics["accept_threshold"]
    axes.axvline(threshold, color="black", linewidth=0.8, linestyle=":", label="accept threshold")
    scores = report.scores
    axes.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence",
        ylabel="accuracy",
        title=f"{report.meta.version}\n{scores.main_name} {scores.main:.3f} "
        f"on {scores.n} held-out items",
    )
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# helpers ------------------------------------------------------------------------------------


def draft_meta(task: TaskConfig) -> ModelMeta:
    """The meta of a student still in training: enough to score and calibrate it."""
    return ModelMeta(
        task=task.name,
        kind=task.kind,
        labels=task.label_names,
        version="training",
        created_at=datetime.now(UTC),
        architecture=student_architecture(task),
    )


def _score(
    student: Calibratable, gold: Sequence[LabelledText], predicted: list[Annotation]
) -> Scores:
    return score(student.kind, student.labels, gold, predicted)


def _loss(losses: dict[str, float]) -> float:
    return float(sum(losses.values()))


def config_hash(task: TaskConfig, model_config: str) -> str:
    """What decides a model besides its data: the task's labels and student section, and
    the model's own configuration (spaCy's config, the encoder's weights)."""
    payload = json.dumps(
        {
            "kind": task.kind,
            "labels": task.label_names,
            "student": task.student.model_dump(),
            "model": model_config,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def version_id(
    task_name: str, created_at: datetime, config_hash: str, examples: Sequence[LabelledText]
) -> str:
    """`<task>-<UTC minute>-<6 hex>`: sortable by time, unique per config, data and moment."""
    digest = hashlib.sha256(f"{config_hash}:{len(examples)}:{created_at.isoformat()}".encode())
    return f"{task_name}-{created_at:%Y%m%dT%H%M}-{digest.hexdigest()[:6]}"
