"""Checking a reviewer's answer against the task before anything is written. Pure.

Every failure is an InvalidAnswer whose message says what to send instead; the API turns it
into a 422 and writes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from loopline.processors.data import tokenizer_pipeline
from loopline.schemas import InvalidAnswer, Span, TaskConfig
from loopline.schemas.messages import AnswerDecision


@dataclass(frozen=True)
class CheckedAnswer:
    """An answer that fits the task: labels deduplicated in order, spans sorted, no scores."""

    decision: AnswerDecision
    labels: tuple[str, ...] = ()
    spans: tuple[Span, ...] = ()


def token_offsets(text: str) -> list[tuple[int, int]]:
    """(start, end) of every token, from the tokenizer the students use: the UI snaps
    selections to these, and spans are checked against them."""
    return [(token.idx, token.idx + len(token)) for token in tokenizer_pipeline().make_doc(text)]


def check_answer(
    task: TaskConfig,
    text: str,
    decision: AnswerDecision,
    labels: Sequence[str] = (),
    spans: Sequence[Span] = (),
) -> CheckedAnswer:
    """The answer, normalised, or InvalidAnswer saying what is wrong."""
    if decision != "accept":
        if labels or spans:
            raise InvalidAnswer(
                f"a {decision} answer carries no labels or spans; send accept with the "
                "labels that fit, or leave labels and spans empty"
            )
        return CheckedAnswer(decision)
    if task.kind == "ner":
        if labels:
            raise InvalidAnswer(
                f"task {task.name!r} is NER: send spans, not labels (an empty list of spans "
                "means the text has no entities)"
            )
        return CheckedAnswer(decision, spans=_check_spans(task, text, spans))
    if spans:
        raise InvalidAnswer(f"task {task.name!r} classifies whole texts: send labels, not spans")
    return CheckedAnswer(decision, labels=_check_labels(task, labels))


def _check_labels(task: TaskConfig, labels: Sequence[str]) -> tuple[str, ...]:
    unique = tuple(dict.fromkeys(labels))
    for label in unique:
        _check_known(task, label)
    if task.kind == "textcat" and len(unique) != 1:
        raise InvalidAnswer(
            f"task {task.name!r} takes exactly one label per text, got {len(unique)}; pick "
            "one, or answer reject when none fits"
        )
    if not unique:
        raise InvalidAnswer("accept needs at least one label; answer reject when none fits")
    return unique


def _check_spans(task: TaskConfig, text: str, spans: Sequence[Span]) -> tuple[Span, ...]:
    offsets = token_offsets(text)
    starts = {start for start, _ in offsets}
    ends = {end for _, end in offsets}
    checked = []
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        _check_known(task, span.label)
        shown = f"[{span.start}, {span.end})"
        if not 0 <= span.start < span.end <= len(text):
            raise InvalidAnswer(
                f"span {shown} is empty or outside the text (length {len(text)}); offsets "
                "count characters, end exclusive"
            )
        if span.start not in starts or span.end not in ends:
            raise InvalidAnswer(
                f"span {shown} {text[span.start : span.end]!r} does not start and end on "
                "token boundaries; select whole words"
            )
        if checked and span.start < checked[-1].end:
            before = checked[-1]
            raise InvalidAnswer(
                f"spans [{before.start}, {before.end}) and {shown} overlap; keep one of them"
            )
        checked.append(Span(start=span.start, end=span.end, label=span.label))
    return tuple(checked)


def _check_known(task: TaskConfig, label: str) -> None:
    if label not in task.labels:
        raise InvalidAnswer(
            f"unknown label {label!r}: task {task.name!r} has {len(task.labels)} labels, "
            f"e.g. {', '.join(list(task.labels)[:5])}; pick one of them"
        )
