"""Choosing the few human corrections an LLM prompt shows as examples.

Pure, so the choice is testable and stable: the same corrections always give the same
examples, in the same order, which keeps the prompt prefix (and the server's prefix cache,
and the response cache) unchanged between worker restarts.
"""

from __future__ import annotations

from collections.abc import Sequence

from loopline.processors.llm.prompts import Example
from loopline.schemas import Correction


def pick_examples(corrections: Sequence[Correction], limit: int) -> list[Example]:
    """Up to `limit` accepted human corrections, covering as many labels as possible.

    The latest correction of a key wins (as on the compacted topic, where gold and silver
    have keys of their own); silver (LLM) ones are never shown, so the LLM does not learn
    from itself. Labels take turns, each giving its
    oldest example first.
    """
    latest: dict[str, Correction] = {}
    for correction in corrections:
        latest[correction.key] = correction
    accepted = sorted(
        (c for c in latest.values() if c.source == "human" and c.decision == "accept"),
        key=lambda c: (c.time, c.id),
    )
    by_label: dict[str, list[Correction]] = {}
    for correction in accepted:
        by_label.setdefault(_main_label(correction), []).append(correction)
    picked: list[Correction] = []
    while len(picked) < limit and any(by_label.values()):
        for queue in by_label.values():
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    return [Example.from_correction(c) for c in picked]


def _main_label(correction: Correction) -> str:
    if correction.labels:
        return correction.labels[0]
    return correction.spans[0].label if correction.spans else ""
