"""The one interface every annotator implements: the student, the LLM teacher, a person.

Keeping them behind one protocol lets loopline swap, mix and compare them on the same
data (`loopline evaluate --annotator ...`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import BrokenExecutor
from typing import Protocol, runtime_checkable

from loopline.schemas import Annotation, LooplineError, StudentError
from loopline.schemas.messages import Source

log = logging.getLogger(__name__)
ERROR_MAX_CHARS = 1000


@runtime_checkable
class Processor(Protocol):
    """Annotates a batch of texts: one result per text, in order.

    A result is an Annotation, or the expected error that kept this one item from getting
    one (an LLM that timed out, say); the other items of the batch are not affected.
    """

    source: Source
    version: str

    async def annotate(self, texts: Sequence[str]) -> list[Annotation | LooplineError]: ...


async def annotate_isolating_failures(
    processor: Processor, texts: Sequence[str]
) -> list[Annotation | LooplineError]:
    """The processor's results for `texts`; when the batch call raises, each text alone, so
    that a text the processor cannot handle costs only its own result (a StudentError with
    the exception), never the rest of its batch. A processor that is gone (its child process
    died) fails every text alike: that is raised, not blamed on the texts."""
    try:
        return await processor.annotate(texts)
    except BrokenExecutor:
        raise
    except Exception as exc:
        log.warning(
            "a batch of %d texts failed (%s); annotating each alone",
            len(texts),
            f"{type(exc).__name__}: {exc}"[:ERROR_MAX_CHARS],
        )
        return [await _annotate_alone(processor, text) for text in texts]


async def _annotate_alone(processor: Processor, text: str) -> Annotation | LooplineError:
    try:
        [result] = await processor.annotate([text])
    except BrokenExecutor:
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"[:ERROR_MAX_CHARS]
        return StudentError(f"the student failed on this text alone: {reason}")
    return result
