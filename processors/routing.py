"""Where each annotated item goes next: a pure function of its annotation and the policy.

Kept free of I/O so that the policy can be tested, simulated on labelled data and
explained; the stream agents only execute its decisions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from loopline.schemas import Annotation
from loopline.schemas.task import RoutingConfig

Destination = Literal["accept", "llm", "review"]


@dataclass(frozen=True)
class Decision:
    """`destination` for the item; `audit` means: accepted, and also sampled for review."""

    destination: Destination
    reason: str
    detail: str
    priority: float = 0.0
    audit: bool = False


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
        audit = draw < policy.audit_rate
        return Decision("accept", "confident", f"confidence {confidence:.3f}", audit=audit)
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
    return Decision(
        "llm",
        "low_confidence",
        f"confidence {confidence:.3f} < {policy.accept_threshold}",
        priority,
    )
