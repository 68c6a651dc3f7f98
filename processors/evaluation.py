"""Scoring any Processor on gold data: quality, calibration, speed and (for the LLM) cost.

The student, the LLM teacher and any later annotator are measured the same way on the
same held-out human labels, which is what routing decisions should rest on.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from loopline.processors.calibration import expected_calibration_error
from loopline.processors.data import LabelledText
from loopline.processors.metrics import Scores, accepted_accuracy, correct_items, score
from loopline.processors.protocol import Processor
from loopline.processors.students import TrainedStudent
from loopline.schemas import Annotation, TaskConfig


@dataclass(frozen=True)
class EvalReport:
    annotator: str
    scores: Scores
    answered: int
    errors: dict[str, int]
    batch_size: int
    seconds: float
    batch_latencies_ms: list[float]
    ece: float
    accept_threshold: float
    accepted_accuracy: float | None
    accepted_share: float
    tokens: int | None
    cost: float | None

    @property
    def n(self) -> int:
        return self.scores.n

    @property
    def items_per_s(self) -> float:
        return self.n / self.seconds if self.seconds else 0.0

    def latency_ms(self, percentile: float) -> float:
        """Latency of one `annotate` call on `batch_size` items (of one item when it is 1)."""
        return float(np.percentile(self.batch_latencies_ms, percentile))

    def to_dict(self) -> dict:
        return {
            "annotator": self.annotator,
            **{k: v for k, v in self.scores.to_dict().items() if k != "per_label"},
            "answered": self.answered,
            "errors": self.errors,
            "items_per_s": self.items_per_s,
            "batch_size": self.batch_size,
            "latency_p50_ms": self.latency_ms(50),
            "latency_p99_ms": self.latency_ms(99),
            "ece": self.ece,
            "accept_threshold": self.accept_threshold,
            "accepted_accuracy": self.accepted_accuracy,
            "accepted_share": self.accepted_share,
            "tokens": self.tokens,
            "cost": self.cost,
            "per_label": self.scores.to_dict()["per_label"],
        }


async def evaluate(
    processor: Processor,
    task: TaskConfig,
    examples: Sequence[LabelledText],
    *,
    batch_size: int = 256,
    price_per_1k_tokens: float = 0.0,
    on_batch: Callable[[int], None] | None = None,
) -> EvalReport:
    """Annotate `examples` in batches through the Processor interface and score the answers.

    An item the processor could not answer (an error in place of an Annotation) counts as
    wrong and is tallied by error type. `on_batch(n)` is called after each batch of n items.
    """
    tokens_before = _tokens_so_far(processor)
    results: list = []
    latencies = []
    started = time.perf_counter()
    for start in range(0, len(examples), batch_size):
        texts = [eg.text for eg in examples[start : start + batch_size]]
        batch_started = time.perf_counter()
        results += await processor.annotate(texts)
        latencies.append((time.perf_counter() - batch_started) * 1000)
        if on_batch:
            on_batch(len(texts))
    seconds = time.perf_counter() - started
    predicted = [r if isinstance(r, Annotation) else None for r in results]
    errors = Counter(type(r).__name__ for r in results if not isinstance(r, Annotation))
    tokens_after = _tokens_so_far(processor)
    tokens = tokens_after - tokens_before if tokens_after is not None else None
    return EvalReport(
        annotator=f"{processor.source}:{processor.version}",
        scores=score(task.kind, task.label_names, examples, predicted),
        errors=dict(errors),
        batch_size=batch_size,
        seconds=seconds,
        batch_latencies_ms=latencies,
        tokens=tokens,
        cost=tokens / 1000 * price_per_1k_tokens if tokens is not None else None,
        **_calibration(task, examples, predicted),
    )


def _calibration(
    task: TaskConfig, examples: Sequence[LabelledText], predicted: list[Annotation | None]
) -> dict:
    """ECE and the accept-threshold figures over the items that got an answer."""
    answered = [i for i, p in enumerate(predicted) if p is not None]
    correct = correct_items(task.kind, examples, predicted)[answered]
    confidence = np.array([predicted[i].confidence for i in answered])
    threshold = task.routing.accept_threshold
    accuracy, share = accepted_accuracy(confidence, correct, threshold)
    return {
        "answered": len(answered),
        "ece": expected_calibration_error(confidence, correct),
        "accept_threshold": threshold,
        "accepted_accuracy": accuracy,
        "accepted_share": share * len(answered) / len(predicted) if predicted else 0.0,
    }


def _tokens_so_far(processor: Processor) -> int | None:
    """Tokens a processor that pays for them (the LLM teacher's `usage`) has spent so far."""
    usage = getattr(processor, "usage", None)
    return usage.total_tokens if usage is not None else None


@dataclass(frozen=True)
class Speed:
    """In-process speed of a student's `predict`, as the annotate worker calls it."""

    docs_per_s: float
    single_ms_p50: float
    single_ms_p99: float


def measure_speed(
    student: TrainedStudent,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    repeats: int = 3,
    single_calls: int = 200,
) -> Speed:
    """Median docs/s over `repeats` passes in batches, and the latency of one-text calls."""
    student.predict(texts[:batch_size], batch_size=batch_size)  # warm up caches
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        student.predict(texts, batch_size=batch_size)
        rates.append(len(texts) / (time.perf_counter() - started))
    latencies = []
    for i in range(single_calls):
        started = time.perf_counter()
        student.predict([texts[i % len(texts)]])
        latencies.append((time.perf_counter() - started) * 1000)
    return Speed(
        docs_per_s=statistics.median(rates),
        single_ms_p50=float(np.percentile(latencies, 50)),
        single_ms_p99=float(np.percentile(latencies, 99)),
    )
