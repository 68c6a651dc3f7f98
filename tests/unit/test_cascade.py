from __future__ import annotations

import numpy as np

from loopline.processors.cascade import (
    NEVER,
    AnnotatorRun,
    alone,
    answering_step,
    best_within_share,
    cascade_point,
    choose_thresholds,
    lowest_safe_threshold,
)
from loopline.processors.data import LabelledText
from loopline.schemas import Annotation, TaskConfig

TASK = TaskConfig(name="t", kind="textcat", labels={"a": "A", "b": "B"}, topics={"prefix": "t."})
GOLD = [LabelledText(text=f"x{i}", labels=[label]) for i, label in enumerate("aabb")]


def answer(label: str, confidence: float = 1.0) -> Annotation:
    return Annotation(labels=[label], confidence=confidence)


STUDENT = AnnotatorRun(
    answers=[answer("a", 0.99), answer("b", 0.4), answer("b", 0.95), answer("a", 0.6)],
    seconds=[0.001] * 4,
    tokens=[0] * 4,
)
LLM = AnnotatorRun(
    answers=[answer("a"), answer("a"), None, answer("b")],  # the third call failed
    seconds=[1.0] * 4,
    tokens=[100] * 4,
)


def test_cascade_takes_the_llm_answer_below_the_threshold_only():
    point = cascade_point(TASK, GOLD, STUDENT, LLM, threshold=0.9, price_per_1k_tokens=2.0)
    # Items 2 and 4 go to the LLM (both right), items 1 and 3 stay with the student (both right).
    assert point.quality == 1.0
    assert point.llm_share == 0.5
    assert point.tokens == 200 and point.cost == 0.4
    assert point.items_per_s == 4 / (0.004 + 2.0)


def test_threshold_zero_is_the_student_and_above_one_is_the_llm():
    student_only = cascade_point(TASK, GOLD, STUDENT, LLM, threshold=0.0, price_per_1k_tokens=0)
    llm_only = cascade_point(TASK, GOLD, STUDENT, LLM, threshold=1.01, price_per_1k_tokens=0)
    assert student_only.quality == alone("s", TASK, GOLD, STUDENT, 0.0, 0).quality == 0.5
    assert llm_only.llm_share == 1.0
    assert (
        llm_only.quality == alone("l", TASK, GOLD, LLM, 1.0, 0).quality == 0.75
    )  # failure is wrong


def test_best_within_share_picks_the_most_accurate_cheap_enough_point():
    points = [
        cascade_point(TASK, GOLD, STUDENT, LLM, threshold=t, price_per_1k_tokens=0)
        for t in (0.5, 0.9, 0.97)
    ]
    best = best_within_share(points, max_share=0.5)
    assert best is not None and best.threshold == 0.9
    assert best_within_share(points, max_share=0.1) is None


# students by cost ---------------------------------------------------------------------------


def test_the_first_step_sure_enough_answers():
    confidence = [np.array([0.95, 0.5, 0.5, 0.99]), np.array([0.2, 0.8, 0.3, 0.1]), np.ones(4)]
    assert answering_step(confidence, [0.9, 0.7]).tolist() == [0, 1, 2, 0]
    assert answering_step(confidence, [NEVER, NEVER]).tolist() == [2, 2, 2, 2]


def test_a_step_keeps_items_while_it_is_as_accurate_as_the_rest():
    confidence = np.array([0.99, 0.97, 0.95, 0.93, 0.91, 0.5])
    cheap = np.array([1, 1, 1, 0, 1, 0], dtype=bool)
    rest = np.ones(6, dtype=bool)
    # Keeping the three most confident items costs nothing; the fourth is wrong.
    assert lowest_safe_threshold(confidence, cheap, rest, 0.9, tolerance=0.0) == 0.95
    # Allowing one error in six (tolerance 1/6) keeps everything at or above the floor.
    assert lowest_safe_threshold(confidence, cheap, rest, 0.9, tolerance=0.17) == 0.91
    # Never below the floor, and NEVER when even the surest item is wrong.
    assert lowest_safe_threshold(confidence, cheap, rest, 0.96, tolerance=1.0) == 0.97
    assert lowest_safe_threshold(confidence, ~rest, rest, 0.0, tolerance=0.0) == NEVER


def test_tied_confidences_are_kept_or_passed_on_together():
    confidence = np.array([0.95, 0.95, 0.95])
    cheap = np.array([1, 1, 0], dtype=bool)
    rest = np.ones(3, dtype=bool)
    assert lowest_safe_threshold(confidence, cheap, rest, 0.9, tolerance=0.0) == NEVER
    assert lowest_safe_threshold(confidence, cheap, rest, 0.9, tolerance=0.34) == 0.95


def test_thresholds_are_chosen_from_the_last_step_back():
    confidence = [np.array([0.99, 0.92, 0.92]), np.array([0.99, 0.99, 0.5]), np.ones(3)]
    correct = [np.array([1, 0, 1], bool), np.array([1, 1, 0], bool), np.array([1, 1, 1], bool)]
    first, second = choose_thresholds(confidence, correct, floor=0.9, tolerance=0.0)
    # The middle step keeps its two sure items (both right); the first step is then judged
    # against that cascade and keeps only its 0.99 item.
    assert second == 0.99 and first == 0.99
    assert answering_step(confidence, [first, second]).tolist() == [0, 1, 2]
