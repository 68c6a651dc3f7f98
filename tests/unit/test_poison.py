"""No poison message, without services: dead letters of bounded size, outputs too large for
their topic, and a student that raises on one text of a batch."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from concurrent.futures import BrokenExecutor
from types import SimpleNamespace

import pytest

from loopline.processors.protocol import annotate_isolating_failures
from loopline.processors.routing import Decision
from loopline.schemas import Annotation, DeadLetter, InputError, StudentError, TextIn
from loopline.schemas.messages import ORIGINAL_PREFIX_BYTES
from loopline.streams.agents.annotate import decide, suggestions_of
from loopline.streams.codec import dead_letter, encode
from loopline.streams.outputs import outputs_for, settle
from tests.unit.test_annotate_outputs import TASK, answer

LIMIT = 1_048_588


def consumed(value: bytes, offset: int = 7) -> SimpleNamespace:
    """What settle reads of a consumed Kafka message."""
    return SimpleNamespace(topic="t.texts", partition=2, offset=offset, value=value, timestamp=0)


@pytest.mark.parametrize("size", [0, 10, ORIGINAL_PREFIX_BYTES, 1_000_000, 5_000_000])
def test_a_dead_letter_fits_whatever_the_size_of_the_original(size):
    raw = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    error = InputError("invalid_json", "not JSON " + "!" * 100_000)
    letter = dead_letter(error, raw, task="t", stage="annotate", topic="t.texts", partition=0,
                         offset=5)  # fmt: skip
    wire = encode(letter)
    assert len(wire) < 50_000
    again = DeadLetter.model_validate_json(wire)
    assert raw.startswith(again.original) and len(again.original) == min(
        size, ORIGINAL_PREFIX_BYTES
    )
    assert again.original_length == size and again.truncated == (size > ORIGINAL_PREFIX_BYTES)
    assert again.original_sha256 == hashlib.sha256(raw).hexdigest()


def test_an_output_larger_than_the_topic_accepts_becomes_a_dead_letter():
    item = TextIn(id="big", text="hello", meta={"blob": "m" * 2000})
    raw = encode(item)
    decision = decide(answer(0.95), item, TASK.routing, llm_available=False)
    outputs = outputs_for(item, suggestions_of(answer(0.95), "v1", TASK), decision, TASK)
    kept, entry = settle(consumed(raw), outputs, decision, task="demo", stage="annotate",
                         max_message_bytes=LIMIT)  # fmt: skip
    assert kept == outputs and entry.outcome == "prediction"

    [letter], entry = settle(consumed(raw), outputs, decision, task="demo", stage="annotate",
                             max_message_bytes=1500)  # fmt: skip
    assert letter.role == "deadletter" and entry.outcome == "deadletter"
    assert letter.key == "t.texts:2:7" and letter.message.error_type == "output_too_large"
    assert "1500" in letter.message.message and "meta" in letter.message.message
    assert letter.message.original == raw and letter.record_bytes < 1500 * 3


class Flaky:
    """A processor that raises on some texts, or, when `gone`, on every call."""

    source = "student"
    version = "v1"

    def __init__(self, poison: str = "", gone: bool = False) -> None:
        self.poison, self.gone, self.calls = poison, gone, 0

    async def annotate(self, texts: Sequence[str]) -> list[Annotation]:
        self.calls += 1
        if self.gone:
            raise BrokenExecutor("the child process died")
        if self.poison in texts:
            raise ValueError(f"cannot handle {self.poison!r}")
        return [answer(0.9) for _ in texts]


def test_one_text_the_student_raises_on_costs_only_its_own_result():
    student = Flaky(poison="bad")
    results = asyncio.run(annotate_isolating_failures(student, ["a", "bad", "c"]))
    assert results[0] == results[2] == answer(0.9)
    assert isinstance(results[1], StudentError) and "ValueError" in str(results[1])
    assert decide(results[1], TextIn(text="bad"), TASK.routing, llm_available=True) == Decision(
        "review", "student_error", str(results[1]), priority=1.0
    )
    assert asyncio.run(annotate_isolating_failures(student, ["a", "b"])) == [answer(0.9)] * 2


def test_a_student_that_is_gone_is_not_blamed_on_the_texts():
    with pytest.raises(BrokenExecutor):
        asyncio.run(annotate_isolating_failures(Flaky(gone=True), ["a", "b"]))
