from __future__ import annotations

from loopline.processors.cascade import AnnotatorRun, alone, best_within_share, cascade_point
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
