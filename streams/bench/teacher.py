"""`loopline bench teacher`: the student alone, the LLM alone, and student-then-LLM at several
thresholds, on the same gold items: quality, share sent to the LLM, speed, tokens, cost.

Each annotator answers every item once; the cascades follow from those answers (see
`processors/cascade.py`). The LLM is asked without the response cache, one batch of
`llm_max_concurrency` items at a time, so its speed is what a worker would see.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loopline.processors.cascade import (
    AnnotatorRun,
    CascadePoint,
    alone,
    best_within_share,
    cascade_point,
)
from loopline.processors.data import LabelledText
from loopline.processors.llm.teacher import LLMAnswer, LLMTeacher
from loopline.processors.students import TrainedStudent
from loopline.schemas import TaskConfig

MAX_LLM_SHARE = 0.2


@dataclass(frozen=True)
class TeacherBench:
    student: CascadePoint
    llm: CascadePoint
    cascades: list[CascadePoint]
    llm_errors: int

    @property
    def best_cheap(self) -> CascadePoint | None:
        return best_within_share(self.cascades, MAX_LLM_SHARE)

    @property
    def verdict(self) -> str:
        best = self.best_cheap
        if best is None:
            return f"no threshold sends at most {MAX_LLM_SHARE:.0%} of items to the LLM"
        reached = best.quality >= self.llm.quality
        return (
            f"student-then-LLM {'reaches' if reached else 'does not reach'} the LLM's "
            f"{self.llm.quality:.3f} with at most {MAX_LLM_SHARE:.0%} of items sent to it: "
            f"best is {best.quality:.3f} at threshold {best.threshold:g} "
            f"({best.llm_share:.1%} to the LLM)"
        )

    def as_dict(self) -> dict:
        return {
            "student": self.student.as_dict(),
            "llm": self.llm.as_dict(),
            "cascades": [p.as_dict() for p in self.cascades],
            "llm_errors": self.llm_errors,
            "verdict": self.verdict,
        }


def run_student(student: TrainedStudent, texts: Sequence[str], batch_size: int) -> AnnotatorRun:
    started = time.perf_counter()
    answers = student.predict(texts, batch_size=batch_size)
    per_item = (time.perf_counter() - started) / len(texts)
    return AnnotatorRun(
        answers=list(answers), seconds=[per_item] * len(texts), tokens=[0] * len(texts)
    )


async def run_llm(
    teacher: LLMTeacher, texts: Sequence[str], batch_size: int, on_items: Callable[[int], None]
) -> AnnotatorRun:
    answers, seconds, tokens = [], [], []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        started = time.perf_counter()
        results = await teacher.answer(chunk)
        per_item = (time.perf_counter() - started) / len(chunk)
        for result in results:
            answered = isinstance(result, LLMAnswer)
            answers.append(result.annotation if answered else None)
            tokens.append(result.usage.total_tokens if answered else 0)
            seconds.append(per_item)
        on_items(len(chunk))
    return AnnotatorRun(answers=answers, seconds=seconds, tokens=tokens)


def compare(
    task: TaskConfig,
    gold: Sequence[LabelledText],
    student: AnnotatorRun,
    llm: AnnotatorRun,
    thresholds: Sequence[float],
    price_per_1k_tokens: float,
) -> TeacherBench:
    return TeacherBench(
        student=alone("student alone", task, gold, student, 0.0, price_per_1k_tokens),
        llm=alone("LLM alone", task, gold, llm, 1.0, price_per_1k_tokens),
        cascades=[
            cascade_point(task, gold, student, llm, t, price_per_1k_tokens) for t in thresholds
        ],
        llm_errors=sum(answer is None for answer in llm.answers),
    )


def plot(bench: TeacherBench, metric: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    shares = [p.llm_share for p in bench.cascades]
    ax.plot(shares, [p.quality for p in bench.cascades], marker="o", label="student then LLM")
    for point in bench.cascades:
        ax.annotate(
            f"{point.threshold:g}",
            (point.llm_share, point.quality),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=8,
        )
    ax.axhline(
        bench.llm.quality,
        color="tab:red",
        linestyle="--",
        label=f"LLM alone {bench.llm.quality:.3f}",
    )
    ax.axhline(
        bench.student.quality,
        color="tab:green",
        linestyle=":",
        label=f"student alone {bench.student.quality:.3f}",
    )
    ax.axvline(MAX_LLM_SHARE, color="grey", linewidth=0.8)
    ax.set_xlabel("share of items sent to the LLM (labels: threshold)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
