"""`loopline bench loop`: does the loop learn? A simulation on real services.

A trainer, a worker that follows the registry and a review service run as processes of
their own on the task's fresh topics. The run starts from K gold labels per label (K = 0:
silver labels from the LLM on a few texts), then, round after round, streams texts through
the worker; a scripted reviewer (answering from the gold labels of the training file, through
the review service's REST API, at most B answers a round) works the review queue; the
trainer is asked for a run, and the worker swaps to a promoted model.

Per round, on the held-out test file, the final outputs of the whole pipeline with the
model that served the round: its routing (threshold and LLM bands, as the worker applies
them) decides per test item whether the student's answer stands, the LLM's (the same LLM,
through the same Redis cache) is used, or people answer (counted as right: they are the
reference, and their answers on test items are never trained on). The stream itself gives
the round's shares and LLM tokens. Baselines in the same run: the LLM alone, and a student
trained on every gold label of the training file.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from loopline.processors.data import LabelledText, write_examples
from loopline.processors.learning.policy import effective_routing
from loopline.processors.metrics import correct_items
from loopline.processors.routing import after_llm, audit_draw, route
from loopline.processors.students import load_student
from loopline.processors.training import MIN_HELDOUT, train
from loopline.schemas import (
    Annotation,
    ConfigError,
    LooplineError,
    TaskConfig,
)
from loopline.streams.connections import redis_client
from loopline.streams.local.loop import LocalLoop
from loopline.streams.models.artifacts import DirectoryStore
from loopline.streams.models.registry import read_registry
from loopline.streams.settings import Settings
from loopline.streams.wiring import build_teacher

NEVER = 10**12  # seconds or labels: the bench asks the trainer for each run


@dataclass(frozen=True)
class RoundResult:
    round: int
    version: str
    gold_labels: int
    accept_threshold: float
    test_accuracy: float
    test_student_accuracy: float
    test_accepted: float
    test_llm: float
    test_people: float
    stream_items: int
    stream_accepted: float
    stream_llm: float
    stream_people: float
    llm_tokens: int
    reviewed: int


@dataclass(frozen=True)
class LoopBenchResult:
    task: str
    seed_labels: int
    review_budget: int
    rounds: list[RoundResult]
    llm_alone_accuracy: float | None
    llm_alone_tokens: int | None
    all_gold_accuracy: float
    all_gold_labels: int
    test_items: int


def split_data(
    examples: Sequence[LabelledText],
    labels: Sequence[str],
    *,
    seed_labels: int,
    eval_items: int,
    rounds: int,
    seed: int,
) -> tuple[list[LabelledText], list[LabelledText], list[list[LabelledText]]]:
    """K examples per label for the seed, `eval_items` for the trainer's evaluation set, the
    rest shuffled into equal rounds."""
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    taken: dict[str, int] = defaultdict(int)
    seed_set, rest = [], []
    for example in shuffled:
        label = example.labels[0] if example.labels else None
        if label in labels and taken[label] < seed_labels:
            taken[label] += 1
            seed_set.append(example)
        else:
            rest.append(example)
    evaluation, rest = rest[:eval_items], rest[eval_items:]
    size = len(rest) // rounds
    return seed_set, evaluation, [rest[i * size : (i + 1) * size] for i in range(rounds)]


def pipeline_outcome(
    student: Annotation,
    llm: Annotation | LooplineError | None,
    routing,
    *,
    item_id: str,
    min_confidence: float,
) -> str:
    """Where one test item's final answer comes from, by the worker's own routing functions."""
    decision = route(student, routing, llm_available=llm is not None, draw=audit_draw(item_id))
    if decision.destination == "accept":
        return "accepted"
    if decision.destination == "review" or llm is None:
        return "people"
    after = after_llm(student, llm, min_confidence=min_confidence)
    return "people" if after.destination == "review" else "llm"


def final_accuracy(
    task: TaskConfig,
    test: Sequence[LabelledText],
    student: Sequence[Annotation],
    llm: Sequence[Annotation | LooplineError] | None,
    routing,
) -> tuple[float, dict[str, float]]:
    """Accuracy of the pipeline's final outputs (people's answers count as right) and where
    they came from."""
    student_right = correct_items(task.kind, test, student)
    llm_answers = [a if isinstance(a, Annotation) else None for a in llm] if llm else None
    llm_right = correct_items(task.kind, test, llm_answers) if llm_answers else None
    sources = []
    right = 0
    for i, answer in enumerate(student):
        source = pipeline_outcome(
            answer,
            llm[i] if llm else None,
            routing,
            item_id=f"test-{i}",
            min_confidence=task.llm.min_confidence,
        )
        sources.append(source)
        right += {"accepted": student_right[i], "people": True}.get(
            source, llm_right[i] if llm_right is not None else False
        )
    shares = {s: sources.count(s) / len(sources) for s in ("accepted", "llm", "people")}
    return right / len(test), shares


class LoopBench(LocalLoop):
    """The loop's processes on fresh topics of the task, every training run asked for, and
    what the rounds are measured with."""

    def __init__(
        self,
        settings: Settings,
        task: TaskConfig,
        workdir: Path,
        report: Callable[[str], None],
        *,
        review_port: int,
        eval_file: Path,
    ) -> None:
        run_id = uuid.uuid4().hex[:8]
        learning = task.learning.model_copy(
            update={
                "min_new_gold": NEVER,
                "interval_s": float(NEVER),
                "floor": 0.0,
                "eval_file": str(eval_file.resolve()),
            }
        )
        task = task.model_copy(
            update={
                "topics": task.topics.model_copy(update={"prefix": f"bench-loop-{run_id}."}),
                "routing": task.routing.model_copy(update={"audit_rate": 0.0}),
                "learning": learning,
            }
        )
        super().__init__(settings, task, workdir, report, review_port=review_port)
        self.has_llm = settings.llm_base_url is not None

    def silver_bootstrap(self, texts: Sequence[LabelledText]) -> list[LabelledText]:
        """The LLM's answers to `texts`, as training examples (what K = 0 starts from)."""
        if not self.has_llm:
            raise ConfigError("--seed-labels 0 needs an LLM: set LOOPLINE_LLM_BASE_URL")
        answers = asyncio.run(self._llm([t.text for t in texts]))
        return [
            LabelledText(text=t.text, labels=a.labels, spans=a.spans)
            for t, a in zip(texts, answers)
            if isinstance(a, Annotation) and (a.labels or a.spans)
        ]

    # measuring --------------------------------------------------------------------------

    async def _llm(self, texts: Sequence[str]) -> list[Annotation | LooplineError]:
        redis = redis_client(self.settings)
        teacher = build_teacher(self.task, self.settings, redis)
        try:
            answers: list = []
            for start in range(0, len(texts), 32):
                answers += await teacher.annotate(texts[start : start + 32])
                self.report(f"LLM: {len(answers)}/{len(texts)} answered")
            self.llm_tokens = teacher.usage.total_tokens
            return answers
        finally:
            await teacher.aclose()
            await redis.aclose()

    def llm_answers(self, test: Sequence[LabelledText]) -> tuple[list, int] | None:
        """The LLM's answers to the test texts (cached in Redis, so rounds reuse them)."""
        if not self.has_llm:
            return None
        answers = asyncio.run(self._llm([t.text for t in test]))
        return answers, self.llm_tokens

    def production_routing(self):
        production = read_registry(self.settings, self.task).production
        return production, effective_routing(self.task.routing, production.policy)

    def test_student(self, test: Sequence[LabelledText]) -> list[Annotation]:
        production, _ = self.production_routing()
        path = DirectoryStore(self.settings.artifacts_dir).fetch(production.artifact)
        student = load_student(path, self.task, threads=self.settings.encoder_threads)
        return student.predict([t.text for t in test])


def run_loop_bench(
    settings: Settings,
    task: TaskConfig,
    train_examples: Sequence[LabelledText],
    test: Sequence[LabelledText],
    *,
    seed_labels: int,
    review_budget: int,
    rounds: int,
    workdir: Path,
    review_port: int,
    report: Callable[[str], None],
    eval_items: int = 100,
    seed: int = 0,
    timeout_s: float = 1800.0,
) -> LoopBenchResult:
    labels = task.label_names
    seed_set, evaluation, round_sets = split_data(
        train_examples,
        labels,
        seed_labels=seed_labels,
        eval_items=eval_items,
        rounds=rounds,
        seed=seed,
    )
    needed = math.ceil(
        MIN_HELDOUT / task.student.calibration_share / (1 - task.learning.eval_share)
    )
    if seed_labels and len(seed_set) < needed:
        raise ConfigError(
            f"{len(seed_set)} seed labels, but the trainer makes no first model from fewer than "
            f"about {needed} gold labels: raise --seed-labels"
        )
    eval_file = workdir / "eval.jsonl"
    write_examples(eval_file, evaluation)
    bench = LoopBench(settings, task, workdir, report, review_port=review_port, eval_file=eval_file)
    try:
        bench.start()
        llm = bench.llm_answers(test)
        llm_alone = None
        if llm is not None:
            answers, tokens = llm
            right = correct_items(
                bench.task.kind, test, [a if isinstance(a, Annotation) else None for a in answers]
            )
            llm_alone = (float(right.mean()), tokens)
            report(f"baseline: the LLM alone, accuracy {llm_alone[0]:.3f} on {len(test)} items")
        if seed_labels:
            bench.write_corrections(seed_set, "gold")
            report(f"seed: {len(seed_set)} gold labels ({seed_labels} per label)")
        else:
            bootstrap = round_sets[0][: 5 * len(labels)]
            round_sets[0] = round_sets[0][len(bootstrap) :]
            bench.write_corrections(bench.silver_bootstrap(bootstrap), "silver")
            report(f"seed: LLM (silver) answers to {len(bootstrap)} texts")
        bench.train_and_wait(timeout_s)
        bench.start_worker()
        bench.wait_worker(bench.production_routing()[0].version, time.monotonic() + 300)
        results = []
        streamed = people = 0
        before = bench.counts()
        for number, examples in enumerate(round_sets, start=1):
            production, routing = bench.production_routing()
            student = bench.test_student(test)
            accuracy, shares = final_accuracy(
                bench.task, test, student, llm[0] if llm else None, routing
            )
            student_accuracy = float(correct_items(bench.task.kind, test, student).mean())
            report(f"round {number}: streaming {len(examples)} texts through {production.version}")
            bench.stream(f"r{number}", examples)
            streamed += len(examples)
            after = bench.wait_stream(streamed, timeout_s)
            stream = stream_shares(before, after, len(examples))
            people += round(stream["people"] * len(examples))
            answered = bench.review(review_budget, people)
            report(f"round {number}: the scripted reviewer answered {answered}")
            results.append(
                RoundResult(
                    round=number,
                    version=production.version,
                    gold_labels=production.data_counts.get("gold", 0),
                    accept_threshold=round(routing.accept_threshold, 4),
                    test_accuracy=round(accuracy, 4),
                    test_student_accuracy=round(student_accuracy, 4),
                    test_accepted=round(shares["accepted"], 4),
                    test_llm=round(shares["llm"], 4),
                    test_people=round(shares["people"], 4),
                    stream_items=len(examples),
                    stream_accepted=round(stream["accepted"], 4),
                    stream_llm=round(stream["llm"], 4),
                    stream_people=round(stream["people"], 4),
                    llm_tokens=stream["tokens"],
                    reviewed=answered,
                )
            )
            before = after
            if number < len(round_sets):
                bench.train_and_wait(timeout_s)
    finally:
        bench.stop()
    report(f"baseline: a student trained on all {len(train_examples)} gold labels")
    train(bench.task, train_examples, out_dir=workdir / "all-gold", cache_dir=settings.cache_dir)
    all_gold_student = load_student(workdir / "all-gold", bench.task)
    all_gold_accuracy = float(
        correct_items(
            bench.task.kind, test, all_gold_student.predict([t.text for t in test])
        ).mean()
    )
    return LoopBenchResult(
        task=task.name,
        seed_labels=seed_labels,
        review_budget=review_budget,
        rounds=results,
        llm_alone_accuracy=llm_alone[0] if llm_alone else None,
        llm_alone_tokens=llm_alone[1] if llm_alone else None,
        all_gold_accuracy=round(all_gold_accuracy, 4),
        all_gold_labels=len(train_examples),
        test_items=len(test),
    )


def stream_shares(before: dict, after: dict, items: int) -> dict:
    """Shares of a round's texts from the ledger's counts before and after it."""

    def delta(stage: str, name: str) -> int:
        return after[stage].get(name, 0) - before[stage].get(name, 0)

    to_llm = delta("annotate", "llm")
    escalated = (
        delta("teach", "review") + delta("teach", "llm_unsure") + delta("teach", "llm_disagrees")
    )
    people = delta("annotate", "review") + escalated
    return {
        "accepted": delta("annotate", "prediction") / items,
        "llm": (to_llm - escalated) / items,
        "people": people / items,
        "tokens": delta("teach", "llm_tokens"),
    }


def plot_loop(result: LoopBenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r.round for r in result.rounds]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    left.plot(rounds, [r.test_accuracy for r in result.rounds], "o-", label="final outputs")
    left.plot(
        rounds, [r.test_student_accuracy for r in result.rounds], "s--", label="student alone"
    )
    if result.llm_alone_accuracy is not None:
        left.axhline(result.llm_alone_accuracy, color="#e9c46a", label="LLM alone")
    left.axhline(result.all_gold_accuracy, color="#888", linestyle=":", label="student, all gold")
    for r in result.rounds:
        left.annotate(
            f"{r.gold_labels} gold",
            (r.round, r.test_student_accuracy),
            fontsize=7,
            xytext=(3, -10),
            textcoords="offset points",
        )
    left.set_xlabel("round")
    left.set_xticks(rounds)
    left.set_ylabel(f"accuracy on {result.test_items} held-out items")
    left.set_title(f"{result.task}: learning curve")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    bottom = [0.0] * len(rounds)
    for name, colour in (("accepted", "#2a9d8f"), ("llm", "#e9c46a"), ("people", "#e76f51")):
        values = [getattr(r, f"stream_{name}") for r in result.rounds]
        right.bar(rounds, values, bottom=bottom, color=colour, label=name)
        bottom = [b + v for b, v in zip(bottom, values)]
    right.set_xlabel("round")
    right.set_xticks(rounds)
    right.set_ylabel("share of the round's streamed texts")
    right.set_ylim(0, 1)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def result_dict(result: LoopBenchResult) -> dict:
    return asdict(result)
