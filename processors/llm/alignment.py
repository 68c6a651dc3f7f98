"""Place the entities an LLM wrote as words back onto character offsets of the text.

The policy, in order:

1. Matching: a mention matches where its words occur in the text as whole words (not
   inside a longer word), runs of whitespace matching any whitespace; exact case first,
   any case when the exact words are absent.
2. Repeats: mentions are taken in the order the LLM listed them (the prompt asks for text
   order, a repeated entity once per occurrence). Each claims the first occurrence of its
   words at or after the previous mention's end that no earlier mention with the same words
   claimed; when there is none after, the first such occurrence from the start. An entity
   the LLM listed once labels one occurrence only: occurrences it did not list stay
   unlabelled rather than guessed.
3. Overlaps: when placed mentions overlap, the longest wins (then the earliest); the
   others are dropped.
4. Mentions whose words are not in the text are dropped. Every drop is counted by reason.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from loopline.processors.llm.parsing import Mention
from loopline.schemas import Span


@dataclass(frozen=True)
class Alignment:
    """Spans placed in the text, sorted by start, and how many mentions were dropped, by reason."""

    spans: tuple[Span, ...]
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


def align_mentions(text: str, mentions: Sequence[Mention]) -> Alignment:
    placed: list[Span] = []
    dropped: Counter[str] = Counter()
    claimed: set[tuple[int, int]] = set()
    cursor = 0
    for mention in mentions:
        found = _place(text, mention.text, cursor, claimed)
        if found is None:
            dropped["not_found"] += 1
            continue
        claimed.add(found)
        cursor = found[1]
        placed.append(Span(start=found[0], end=found[1], label=mention.label, score=mention.score))
    kept = _longest_without_overlap(placed)
    dropped["overlap"] += len(placed) - len(kept)
    return Alignment(spans=tuple(sorted(kept, key=lambda s: (s.start, s.end))), dropped=+dropped)


def _place(
    text: str, words: str, cursor: int, claimed: set[tuple[int, int]]
) -> tuple[int, int] | None:
    """The first unclaimed occurrence of `words` at or after `cursor`, else from the start."""
    pattern = _words_pattern(words)
    if pattern is None:
        return None
    for flags in (0, re.IGNORECASE):
        occurrences = [m.span() for m in re.finditer(pattern, text, flags)]
        free = [span for span in occurrences if span not in claimed]
        after = [span for span in free if span[0] >= cursor]
        if after or free:
            return (after or free)[0]
    return None


def _words_pattern(words: str) -> str | None:
    tokens = words.split()
    if not tokens:
        return None
    before = r"(?<!\w)" if re.match(r"\w", tokens[0]) else ""
    after = r"(?!\w)" if re.search(r"\w$", tokens[-1]) else ""
    return before + r"\s+".join(re.escape(token) for token in tokens) + after


def _longest_without_overlap(spans: list[Span]) -> list[Span]:
    kept: list[Span] = []
    for span in sorted(spans, key=lambda s: (-(s.end - s.start), s.start)):
        if all(span.end <= other.start or span.start >= other.end for other in kept):
            kept.append(span)
    return kept
