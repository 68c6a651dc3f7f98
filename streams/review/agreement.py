"""Deciding an item from several reviewers' answers, and how much reviewers agree. Pure.

An answer is compared as a whole (decision, labels, spans): for NER two reviewers agree
when they mark the same spans with the same labels. With `review.overlap` = k an item is
decided once it has k answers and a strict majority; otherwise it goes to one more
reviewer. After 2k + 1 answers without a majority the most common answer (the earliest on a
tie) decides, so an item cannot circle forever.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from loopline.schemas import Span, Suggestion
from loopline.schemas.messages import AnswerDecision


def answer_key(decision: AnswerDecision, labels: Sequence[str], spans: Sequence[Span]) -> str:
    """A canonical string for an answer: equal strings mean the same answer."""
    return json.dumps(
        [
            decision,
            sorted(labels),
            sorted((span.start, span.end, span.label) for span in spans),
        ],
        separators=(",", ":"),
    )


def parse_key(key: str) -> tuple[AnswerDecision, list[str], list[Span]]:
    """The decision, labels and spans an answer key stands for."""
    decision, labels, spans = json.loads(key)
    return decision, labels, [Span(start=s, end=e, label=label) for s, e, label in spans]


def suggestion_kept(key: str, suggestions: Sequence[Suggestion]) -> bool:
    """Whether the answer is the suggestion the reviewer saw pre-selected (the latest)."""
    if not suggestions:
        return False
    shown = suggestions[-1].annotation
    return key == answer_key("accept", shown.labels, shown.spans)


def decide(keys_in_order: Sequence[str], overlap: int) -> str | None:
    """The deciding answer key among distinct reviewers' answers (oldest first), or None
    while the item needs another reviewer."""
    n = len(keys_in_order)
    if n < overlap or n == 0:
        return None
    counts = Counter(keys_in_order)
    top = max(counts.values())
    leader = next(key for key in keys_in_order if counts[key] == top)
    if 2 * top > n or n >= 2 * overlap + 1:
        return leader
    return None


@dataclass(frozen=True)
class PairAgreement:
    """Two reviewers over the items both answered."""

    a: str
    b: str
    items: int
    percent: float
    kappa: float | None

    def as_dict(self) -> dict[str, object]:
        return {
            "reviewers": [self.a, self.b],
            "items": self.items,
            "percent_agreement": self.percent,
            "cohen_kappa": self.kappa,
        }


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Cohen's kappa of two raters' categories; None when chance agreement is certain
    (both always gave one and the same answer), where kappa is undefined."""
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    first = Counter(a for a, _ in pairs)
    second = Counter(b for _, b in pairs)
    expected = sum(first[k] * second[k] for k in first) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def pairwise(answers: Mapping[str, Mapping[str, str]]) -> list[PairAgreement]:
    """Per pair of reviewers: items answered by both, percent agreement, Cohen's kappa.
    `answers` maps item id -> reviewer -> answer key."""
    by_pair: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for by_reviewer in answers.values():
        for a, b in itertools.combinations(sorted(by_reviewer), 2):
            by_pair.setdefault((a, b), []).append((by_reviewer[a], by_reviewer[b]))
    return [
        PairAgreement(
            a,
            b,
            len(pairs),
            sum(x == y for x, y in pairs) / len(pairs),
            cohen_kappa(pairs),
        )
        for (a, b), pairs in sorted(by_pair.items())
    ]


def percent_agreement(answers: Mapping[str, Mapping[str, str]]) -> float | None:
    """Share of agreeing reviewer pairs over all items with two or more answers."""
    agreeing = total = 0
    for by_reviewer in answers.values():
        for x, y in itertools.combinations(by_reviewer.values(), 2):
            agreeing += x == y
            total += 1
    return agreeing / total if total else None
