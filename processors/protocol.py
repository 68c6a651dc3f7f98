"""The one interface every annotator implements: the student, the LLM teacher, a person.

Keeping them behind one protocol lets loopline swap, mix and compare them on the same
data (`loopline evaluate --annotator ...`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from loopline.schemas import Annotation, LooplineError
from loopline.schemas.messages import Source


@runtime_checkable
class Processor(Protocol):
    """Annotates a batch of texts: one result per text, in order.

    A result is an Annotation, or the expected error that kept this one item from getting
    one (an LLM that timed out, say); the other items of the batch are not affected.
    """

    source: Source
    version: str

    async def annotate(self, texts: Sequence[str]) -> list[Annotation | LooplineError]: ...
