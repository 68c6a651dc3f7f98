"""What reviewers can do, independent of HTTP: take items, answer, release, see figures.

An answer is written in three steps so that a crash at any moment loses nothing a reviewer
was told about and never writes two different versions of anything:

1. its messages (the Answer; once the item is decided, the gold Correction and the human
   Prediction) are built and put in an outbox in Redis under the lease: a retry, or the
   sweep after a crash, finds and sends exactly the same bytes;
2. they are sent to Kafka, and the reviewer waits until Kafka has acknowledged all of them;
3. the answer is applied to the queue (lease dropped, item decided or back in the queue)
   and the response is kept, so that a retried request gets it again without writing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field

from loopline.schemas import (
    Answer,
    Correction,
    LeaseNotHeld,
    Prediction,
    ReviewError,
    RoutedItem,
    ServiceError,
    Span,
    TaskConfig,
)
from loopline.schemas.messages import AnswerDecision, ItemId
from loopline.streams.outputs import REVISION
from loopline.streams.review.agreement import (
    answer_key,
    decide,
    pairwise,
    parse_key,
    percent_agreement,
    suggestion_kept,
)
from loopline.streams.review.queue import (
    AppliedAnswer,
    HeldAnswer,
    Lease,
    Prepared,
    ReviewQueue,
    now_ms,
)
from loopline.streams.review.validation import CheckedAnswer, check_answer

log = logging.getLogger(__name__)

Role = Literal["reviewer", "admin"]


class SpanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: int = Field(ge=0)
    end: int = Field(ge=0)
    label: str = Field(max_length=200)


class AnswerRequest(BaseModel):
    """The body of `POST /api/v1/tasks/{task}/answers`."""

    model_config = ConfigDict(extra="forbid")

    lease_id: str = Field(max_length=100)
    id: ItemId
    decision: AnswerDecision
    labels: list[str] = Field(default_factory=list, max_length=1000)
    spans: list[SpanIn] = Field(default_factory=list, max_length=1000)


class KafkaUnavailable(ServiceError):
    """Kafka did not acknowledge a write in time: nothing was recorded as answered."""


class Forbidden(ReviewError):
    """The reviewer's role does not allow this."""


class KafkaWriter:
    """Sends records and waits for Kafka's acknowledgement of every one, within a deadline."""

    def __init__(self, producer: AIOKafkaProducer, timeout_s: float) -> None:
        self.producer = producer
        self.timeout_s = timeout_s

    async def write(self, records: Sequence[tuple[str, str, bytes]]) -> None:
        async def send_all() -> None:
            futures = [
                await self.producer.send(topic, value, key=key.encode("utf-8"))
                for topic, key, value in records
            ]
            await asyncio.gather(*futures)

        try:
            await asyncio.wait_for(send_all(), self.timeout_s)
        except (TimeoutError, KafkaError) as exc:
            reason = "no answer" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise KafkaUnavailable(
                f"Kafka did not acknowledge the answer within {self.timeout_s:.0f}s ({reason}); "
                "it is not recorded yet: retry the same request when Kafka is back"
            ) from None


@dataclass(frozen=True)
class Reviewer:
    name: str
    role: Role


class ReviewService:
    """Leases, answers and figures for one task."""

    def __init__(
        self,
        task: TaskConfig,
        queue: ReviewQueue,
        writer: KafkaWriter,
        *,
        on_answer: Callable[[str], None] | None = None,
    ) -> None:
        self.task = task
        self.queue = queue
        self.writer = writer
        self.on_answer = on_answer or (lambda decision: None)
        # A lease being answered is kept alive at least this long: a write either lands or
        # times out well within it.
        self.write_margin_s = writer.timeout_s + 30.0

    # leases -----------------------------------------------------------------------------

    async def next(self, reviewer: Reviewer, n: int) -> list[Lease]:
        lease_ids = [uuid.uuid4().hex for _ in range(n)]
        return await self.queue.lease(reviewer.name, n, self.task.review.lease_ttl_s, lease_ids)

    async def renew(self, reviewer: Reviewer, lease_id: str) -> int:
        return self._held(
            await self.queue.renew(lease_id, self._owner(reviewer), self.task.review.lease_ttl_s),
            lease_id,
        )

    async def release(self, reviewer: Reviewer, lease_id: str) -> None:
        self._held(await self.queue.release(lease_id, self._owner(reviewer)), lease_id)

    def _owner(self, reviewer: Reviewer) -> str:
        """Whose leases this reviewer may touch: their own, or any for an admin."""
        return "" if reviewer.role == "admin" else reviewer.name

    def _held(self, result: int, lease_id: str) -> int:
        if result == 0:
            raise LeaseNotHeld(
                f"lease {lease_id} is not held: it expired, was released or answered; "
                "take the next item"
            )
        if result == -1:
            raise Forbidden(f"lease {lease_id} belongs to another reviewer; only admins may")
        return result

    # answers ----------------------------------------------------------------------------

    async def answer(self, reviewer: Reviewer, request: AnswerRequest) -> str:
        """Write an answer and return what was written (the response's JSON); a retry
        returns the same without writing; a different answer under an answered lease is an
        edit (undo)."""
        lease_id = request.lease_id
        known = await self.queue.prepare(lease_id, reviewer.name, request.id, self.write_margin_s)
        if known.item is None:
            raise LeaseNotHeld(f"no item {request.id!r} in the review queue of {self.task.name}")
        checked = check_answer(
            self.task,
            known.item.item.text,
            request.decision,
            request.labels,
            [Span(**span.model_dump()) for span in request.spans],
        )
        key = answer_key(checked.decision, checked.labels, checked.spans)
        if known.done is not None:
            if known.done["reviewer"] != reviewer.name or known.done["id"] != request.id:
                raise LeaseNotHeld(f"lease {lease_id} was answered by someone else")
            if known.done["key"] == key:
                return known.done["response"]
            return await self._write(reviewer, lease_id, known.done["edit"] + 1, known, checked)
        if known.in_flight is not None:
            if (
                known.in_flight["done"]["key"] != key
                or known.in_flight["reviewer"] != reviewer.name
            ):
                raise LeaseNotHeld(
                    f"an earlier answer under lease {lease_id} is still being written; "
                    "retry that request unchanged"
                )
            return await self._finish(known.in_flight)
        if not known.granted_ms:
            raise LeaseNotHeld(
                f"lease {lease_id} for {request.id!r} is not held by {reviewer.name}: "
                "it expired, was released, or is for another item; take the next item"
            )
        return await self._write(reviewer, lease_id, 0, known, checked)

    async def import_answer(
        self, reviewer: str, item: RoutedItem, checked: CheckedAnswer
    ) -> str | None:
        """An answer given elsewhere (Prodigy JSONL): written like any other, once; None
        when this very answer was imported before."""
        key = answer_key(checked.decision, checked.labels, checked.spans)
        digest = hashlib.sha1(f"{reviewer}\x1f{item.id}\x1f{key}".encode()).hexdigest()[:20]
        lease_id = f"import:{digest}"
        if await self.queue.is_applied(f"{lease_id}:0"):
            return None
        known = await self.queue.prepare(lease_id, reviewer, item.id, 0)
        known = replace(known, item=item, granted_ms=0)
        return await self._write(Reviewer(reviewer, "reviewer"), lease_id, 0, known, checked)

    async def _write(
        self,
        reviewer: Reviewer,
        lease_id: str,
        edit: int,
        known: Prepared,
        checked: CheckedAnswer,
    ) -> str:
        payload = self._compose(reviewer, lease_id, edit, known, checked)
        earlier = await self.queue.begin_write(payload["write_id"], payload)
        return await self._finish(earlier or payload)

    async def _finish(self, payload: dict[str, Any]) -> str:
        """Send an outbox entry's records, then apply it: the response only after Kafka."""
        await self.writer.write(
            [
                (self.task.topic(role), key, value.encode("utf-8"))
                for role, key, value in payload["records"]
            ]
        )
        applied = AppliedAnswer(
            answer_id=payload["write_id"],
            item_id=payload["id"],
            held=HeldAnswer.parse(payload["reviewer"], payload["held"]),
            decided=payload["decided"] or None,
            lease_id=payload["lease_id"],
            done=payload["done"] if not payload["lease_id"].startswith("import:") else None,
            write_id=payload["write_id"],
        )
        await self.queue.apply_answers([applied])
        self.on_answer(payload["decision"])
        return payload["done"]["response"]

    async def flush_outbox(self, older_than_s: float) -> int:
        """Finish writes a crashed or failed attempt left in the outbox; how many."""
        finished = 0
        for write_id in await self.queue.writes_older_than(older_than_s):
            payload = await self.queue.stored_write(write_id)
            if payload is not None:
                await self._finish(payload)
                finished += 1
        return finished

    def _compose(
        self,
        reviewer: Reviewer,
        lease_id: str,
        edit: int,
        known: Prepared,
        checked: CheckedAnswer,
    ) -> dict[str, Any]:
        """The outbox entry of one answer: its messages, the projection update, the response."""
        item = known.item
        assert item is not None
        key = answer_key(checked.decision, checked.labels, checked.spans)
        now = now_ms()
        time = datetime.fromtimestamp(now / 1000, tz=UTC)
        mine = HeldAnswer(
            reviewer.name,
            key,
            checked.decision,
            suggestion_kept(key, item.suggestions),
            now,
        )
        votes = [a for a in known.answers if a.reviewer != reviewer.name]
        votes = sorted([*votes, mine], key=lambda a: (a.time_ms, a.reviewer))
        winner = decide([vote.key for vote in votes], self.task.review.overlap)
        if edit and winner == known.decided:
            winner = None  # an edit that leaves the decision as it was writes no new label
        granted_ms = known.granted_ms
        answer = Answer(
            id=item.id,
            task=self.task.name,
            reviewer=reviewer.name,
            lease_id=lease_id,
            edit=edit,
            decision=checked.decision,
            labels=list(checked.labels),
            spans=list(checked.spans),
            suggestions=item.suggestions,
            seconds=max(0.0, (now - granted_ms) / 1000) if granted_ms else 0.0,
            time=time,
        )
        records = [("answers", item.id, answer)]
        correction = None
        if winner is not None:
            correction, prediction = self._decided(item, votes, winner, time)
            records.append(("corrections", correction.key, correction))
            if prediction is not None:
                records.append(("predictions", item.id, prediction))
        encoded = [(role, k, m.model_dump_json()) for role, k, m in records]
        # the response is the messages as written, in JSON, without encoding them again
        correction_json = encoded[1][2] if correction is not None else "null"
        response = f'{{"answer":{encoded[0][2]},"correction":{correction_json}}}'
        return {
            "write_id": f"{lease_id}:{edit}",
            "lease_id": lease_id,
            "id": item.id,
            "reviewer": reviewer.name,
            "decision": checked.decision,
            "held": mine.compact(),
            "decided": winner or "",
            "records": encoded,
            "done": {
                "reviewer": reviewer.name,
                "id": item.id,
                "key": key,
                "edit": edit,
                "response": response,
            },
        }

    def _decided(
        self, item: RoutedItem, votes: Sequence[HeldAnswer], winner: str, time: datetime
    ) -> tuple[Correction, Prediction | None]:
        """The gold correction of a decided item and, unless ignored, the human prediction."""
        decision, labels, spans = parse_key(winner)
        majority = sorted(vote.reviewer for vote in votes if vote.key == winner)
        who = ",".join(majority)
        correction = Correction(
            id=item.id,
            task=self.task.name,
            text=item.item.text,
            labels=labels,
            spans=spans,
            decision=decision,
            source="human",
            reviewer=who,
            time=time,
        )
        if decision == "ignore":
            return correction, None
        prediction = Prediction(
            id=item.id,
            task=self.task.name,
            labels=labels,
            scores={label: 1.0 for label in labels},
            spans=spans,
            confidence=len(majority) / len(votes),
            source="human",
            model_version=f"human:{who}",
            revision=REVISION["human"],
            meta=item.item.meta,
        )
        return correction, prediction

    # figures ----------------------------------------------------------------------------

    async def stats(self) -> dict[str, Any]:
        counts = await self.queue.counts()
        by_item = await self.queue.answers_by_item(counts["multi"])
        reviewers: dict[str, dict[str, int]] = {}
        for field, value in counts["counts"].items():
            name, _, what = field.rpartition(":")
            if name != "*":
                reviewers.setdefault(name, {})[what] = value
        oldest = counts["oldest_ms"]
        return {
            "task": self.task.name,
            "overlap": self.task.review.overlap,
            "pending": counts["pending"],
            "leased": counts["leased"],
            "answered": counts["counts"].get("*:answers", 0),
            "decided": counts["decided"],
            "oldest_age_s": round((now_ms() - oldest) / 1000, 1) if oldest else None,
            "reviewers": {
                name: {
                    what: figures.get(what, 0)
                    for what in ("answers", "accept", "reject", "ignore", "kept")
                }
                for name, figures in sorted(reviewers.items())
            },
            "agreement": {
                "items": len(by_item),
                "percent_agreement": percent_agreement(by_item),
                "pairs": [pair.as_dict() for pair in pairwise(by_item)],
            },
        }


def held_from_answer(answer: Answer) -> HeldAnswer:
    """How the projection keeps an answer read back from the `answers` topic."""
    key = answer_key(answer.decision, answer.labels, answer.spans)
    return HeldAnswer(
        answer.reviewer,
        key,
        answer.decision,
        suggestion_kept(key, answer.suggestions),
        int(answer.time.timestamp() * 1000),
    )
