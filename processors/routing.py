"""Where each annotated item goes next: a pure function of its annotation and the policy.

Kept free of I/O so that the policy can be tested, simulated on labelled data and
explained; the stream agents only execute its decisions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from loopline.schemas import Annotation, LooplineError
from loopline.schemas.task import RoutingConfig

Destination = Literal["accept", "llm", "review"]


@dataclass(frozen=True)
class Decision:
    """`destination` for the item. An accepted item with a `review_reason` also goes to
    review (an audit sample, or an LLM answer people should check)."""

    destination: Destination
    reason: str
    detail: str
    priority: float = 0.0
    review_reason: str | None = None


def audit_draw(item_id: str) -> float:
    """A number in [0, 1) fixed by the item id, so a re-processed item is sampled the same way."""
    digest = hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def route(
    annotation: Annotation, policy: RoutingConfig, *, llm_available: bool, draw: float
) -> Decision:
    """Accept confident items; send unsure ones to the LLM where it helps, else to people."""
    confidence = annotation.confidence
    priority = 1.0 - confidence
    if confidence >= policy.accept_threshold:
        audit = "audit" if draw < policy.audit_rate else None
        return Decision("accept", "confident", f"confidence {confidence:.3f}", review_reason=audit)
    if not llm_available:
        return Decision(
            "review",
            "low_confidence_no_llm",
            f"confidence {confidence:.3f} < {policy.accept_threshold} and no LLM is configured",
            priority,
        )
    if confidence < policy.llm_min_confidence:
        return Decision(
            "review",
            "below_llm_band",
            f"confidence {confidence:.3f} < llm_min_confidence {policy.llm_min_confidence}: "
            "the LLM is not measurably better than the student here",
            priority,
        )
    if not policy.sends_to_llm(confidence):
        bands = ", ".join(f"[{low:.2f}, {high:.2f})" for low, high in policy.llm_bands or ())
        return Decision(
            "review",
            "llm_not_better",
            f"confidence {confidence:.3f} is outside the LLM's bands ({bands or 'none'}): "
            "on gold labels the LLM was not measurably better than the student here",
            priority,
        )
    return Decision(
        "llm",
        "low_confidence",
        f"confidence {confidence:.3f} < {policy.accept_threshold}",
        priority,
    )


def same_answer(first: Annotation, second: Annotation) -> bool:
    """Whether two annotators agree: the same label set, or the same labelled spans."""
    return set(first.labels) == set(second.labels) and {
        (span.start, span.end, span.label) for span in first.spans
    } == {(span.start, span.end, span.label) for span in second.spans}


def after_llm(
    student: Annotation | None, llm: Annotation | LooplineError, *, min_confidence: float
) -> Decision:
    """Publish the LLM's answer; ask people too when it failed, is unsure, or disagrees.

    Disagreement is the strongest signal: where student and LLM agree they are usually
    both right, so those items need no one's time.
    """
    if isinstance(llm, LooplineError):
        code = getattr(llm, "code", "llm_error")
        return Decision("review", code, f"the LLM gave no answer: {llm}", priority=1.0)
    if llm.confidence < min_confidence:
        return Decision(
            "accept",
            "llm_answer",
            f"LLM confidence {llm.confidence:.3f}",
            priority=1.0 - llm.confidence,
            review_reason="llm_unsure",
        )
    if student is not None and not same_answer(student, llm):
        return Decision(
            "accept",
            "llm_answer",
            "the student and the LLM disagree",
            priority=1.0,
            review_reason="llm_disagrees",
        )
    return Decision("accept", "llm_answer", f"LLM confidence {llm.confidence:.3f}")
