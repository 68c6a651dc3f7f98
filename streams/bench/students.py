"""`loopline bench students`: students side by side on the same items, at several amounts of
labelled data: quality, calibration, speed, and the share each step of a cascade answers.

For every amount (k labelled examples per label, or all), each student is trained on the
same k per label, calibrated on the same held-out examples (`dev_per_label` per label, drawn
from the rest of the training pool), and scored on the same test items. Smaller amounts are
subsets of larger ones. Speed is the in-process `predict` rate on (up to 1,000) test texts
in batches of the worker's size, median of 3 passes, the students timed in turns so that a
busy spell on a shared machine slows all of them alike.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from loopline.processors.calibration import expected_calibration_error
from loopline.processors.data import LabelledText
from loopline.processors.metrics import correct_items, score
from loopline.processors.students import TrainedStudent, load_student
from loopline.processors.training import TrainProgress, train
from loopline.schemas import ConfigError, TaskConfig

CASCADE_MARK = ">"
"""`bow>encoder` names the cascade of those students, cheapest first."""
SPEED_TEXTS = 1000
"""Test texts timed for speed (all of them are scored)."""
TARGET_ACCURACY_SHARE = 0.95
TARGET_SPEEDUP = 4.0


@dataclass(frozen=True)
class StudentResult:
    dataset: str
    per_label: str
    student: str
    train_items: int
    accuracy: float
    macro_f1: float
    ece: float
    items_per_s: float
    single_ms: float
    train_seconds: float
    shares: dict[str, float]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """The issue's target for a cascade against its most expensive step alone."""

    per_label: str
    cascade: str
    accuracy_share: float
    speedup: float

    @property
    def met(self) -> bool:
        return self.accuracy_share >= TARGET_ACCURACY_SHARE and self.speedup >= TARGET_SPEEDUP

    def text(self) -> str:
        verdict = "met" if self.met else "NOT met"
        return (
            f"{self.per_label} per label: {self.cascade} has {self.accuracy_share:.3f} of the "
            f"last step's accuracy at {self.speedup:.1f}x its speed: target "
            f"(>= {TARGET_ACCURACY_SHARE} at >= {TARGET_SPEEDUP:g}x) {verdict}"
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "met": self.met}


def parse_sizes(text: str) -> list[int | None]:
    """`3,10,all` -> [3, 10, None] (None: every training example)."""
    sizes: list[int | None] = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            sizes.append(None)
        elif part.isdigit() and int(part) > 0:
            sizes.append(int(part))
        else:
            raise ConfigError(
                f"--per-label {text!r}: use positive numbers and `all`, e.g. 3,10,all"
            )
    return sizes


def student_task(task: TaskConfig, name: str) -> TaskConfig:
    """The task with its student section set to `name` (`bow`, or `bow>encoder`)."""
    steps = name.split(CASCADE_MARK)
    update = (
        {"architecture": "cascade", "steps": steps}
        if len(steps) > 1
        else {"architecture": name, "steps": []}
    )
    try:
        student = task.student.model_validate({**task.student.model_dump(), **update})
    except ValueError as exc:
        raise ConfigError(f"--students: {name!r} is not a student ({exc})") from None
    return task.model_copy(update={"student": student})


def split_pool(
    pool: Sequence[LabelledText], dev_per_label: int, seed: int
) -> tuple[dict[str, list[LabelledText]], list[LabelledText]]:
    """Per label, the training examples in a seeded order (k per label = the first k), and
    `dev_per_label` held-out examples per label, apart from them."""
    by_label: dict[str, list[LabelledText]] = defaultdict(list)
    for example in pool:
        by_label[example.labels[0]].append(example)
    rng = random.Random(seed)
    dev = []
    for label in sorted(by_label):
        rng.shuffle(by_label[label])
        dev += by_label[label][:dev_per_label]
        by_label[label] = by_label[label][dev_per_label:]
    return dict(by_label), dev


def take(by_label: dict[str, list[LabelledText]], per_label: int | None) -> list[LabelledText]:
    return [eg for label in sorted(by_label) for eg in by_label[label][:per_label]]


def run_students_bench(
    task: TaskConfig,
    dataset: str,
    pool: Sequence[LabelledText],
    test: Sequence[LabelledText],
    students: Sequence[str],
    sizes: Sequence[int | None],
    *,
    dev_per_label: int,
    workdir: Path,
    cache_dir: Path,
    batch_size: int,
    threads: int,
    progress: Callable[[], AbstractContextManager[Callable[[TrainProgress], None]]],
    report: Callable[[str], None] = print,
) -> list[StudentResult]:
    """Train, score and time every student at every size; each training runs inside a
    `progress()` context that gives its progress callback."""
    if task.kind != "textcat":
        raise ConfigError("bench students compares intent classifiers: use a textcat task")
    by_label, dev = split_pool(pool, dev_per_label, task.student.seed)
    texts = [eg.text for eg in test]
    results = []
    for size in sizes:
        train_set = take(by_label, size)
        size_name = "all" if size is None else str(size)
        trained = {}
        for name in students:
            out = workdir / "models" / f"{size_name}-{name.replace(CASCADE_MARK, '-then-')}"
            report(f"{size_name} per label: training {name} on {len(train_set)} items")
            with progress() as on_progress:
                trained[name] = train(
                    student_task(task, name),
                    train_set,
                    dev,
                    out_dir=out,
                    on_progress=on_progress,
                    force=True,
                    cache_dir=cache_dir,
                )
        loaded = {
            name: load_student(r.out_dir, task, threads=threads) for name, r in trained.items()
        }
        report(f"{size_name} per label: scoring on {len(test)} test items, timing in turns")
        speeds = interleaved_speeds(loaded, texts[:SPEED_TEXTS], batch_size)
        for name, student in loaded.items():
            answers = student.predict(texts, batch_size=batch_size)
            scores = score(task.kind, task.label_names, test, answers)
            confidence = np.array([a.confidence for a in answers])
            results.append(
                StudentResult(
                    dataset=dataset,
                    per_label=size_name,
                    student=name,
                    train_items=len(train_set),
                    accuracy=scores.overall["accuracy"],
                    macro_f1=scores.overall["macro_f1"],
                    ece=expected_calibration_error(
                        confidence, correct_items(task.kind, test, answers)
                    ),
                    items_per_s=speeds[name][0],
                    single_ms=speeds[name][1],
                    train_seconds=trained[name].metrics["train_seconds"],
                    shares=step_shares(answers, name),
                )
            )
    return results


def interleaved_speeds(
    students: dict[str, TrainedStudent],
    texts: Sequence[str],
    batch_size: int,
    repeats: int = 3,
    single_calls: int = 50,
) -> dict[str, tuple[float, float]]:
    """Per student, the median items/s over `repeats` passes and the median latency (ms) of
    one-text calls, taking turns, so that a busy spell on a shared machine slows all alike."""
    rates: dict[str, list[float]] = defaultdict(list)
    singles: dict[str, list[float]] = defaultdict(list)
    for student in students.values():
        student.predict(texts[:batch_size], batch_size=batch_size)  # warm up
    for _ in range(repeats):
        for name, student in students.items():
            started = time.perf_counter()
            student.predict(texts, batch_size=batch_size)
            rates[name].append(len(texts) / (time.perf_counter() - started))
    for i in range(single_calls):
        for name, student in students.items():
            started = time.perf_counter()
            student.predict([texts[i % len(texts)]])
            singles[name].append((time.perf_counter() - started) * 1000)
    return {
        name: (statistics.median(rates[name]), statistics.median(singles[name]))
        for name in students
    }


def step_shares(answers: Sequence, name: str) -> dict[str, float]:
    """Share of items each step answered: cascade answers name their step in
    `model_version` (`<version>:<architecture>`); a single student answers everything."""
    steps = name.split(CASCADE_MARK)
    if len(steps) == 1:
        return {name: 1.0}
    answered = [a.model_version.rsplit(":", 1)[-1] for a in answers]
    return {step: answered.count(step) / len(answered) for step in steps}


def targets(results: Sequence[StudentResult]) -> list[Target]:
    """Each cascade against its last step alone, at each size, where both were run."""
    by_key = {(r.per_label, r.student): r for r in results}
    found = []
    for result in results:
        steps = result.student.split(CASCADE_MARK)
        last = by_key.get((result.per_label, steps[-1]))
        if len(steps) > 1 and last is not None:
            found.append(
                Target(
                    per_label=result.per_label,
                    cascade=result.student,
                    accuracy_share=result.accuracy / last.accuracy,
                    speedup=result.items_per_s / last.items_per_s,
                )
            )
    return found


def plot(results: Sequence[StudentResult], title: str, path: Path) -> None:
    """Accuracy by labels per class, and accuracy against speed, one line per student."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    students = list(dict.fromkeys(r.student for r in results))
    sizes = list(dict.fromkeys(r.per_label for r in results))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for student in students:
        rows = [r for r in results if r.student == student]
        left.plot(
            [r.per_label for r in rows], [r.accuracy for r in rows], marker="o", label=student
        )
        right.plot(
            [r.items_per_s for r in rows], [r.accuracy for r in rows], marker="o", label=student
        )
        for r in rows:
            right.annotate(
                r.per_label,
                (r.items_per_s, r.accuracy),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=8,
            )
    left.set(xlabel="labelled examples per label", ylabel="test accuracy", title=title)
    left.set_xticks(range(len(sizes)), sizes)
    right.set(
        xscale="log",
        xlabel="items/s in-process (log scale; labels: examples per label)",
        ylabel="test accuracy",
        title="accuracy against speed",
    )
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
