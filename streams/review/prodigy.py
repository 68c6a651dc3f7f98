"""Prodigy-style JSONL for teams that label elsewhere: pending items out, answers in. Pure.

Out: one line per pending item with `text`, `options` and the pre-selected `accept` labels
(classification) or the suggested `spans` (NER), and `meta` (id, reason, every suggestion).
In: Prodigy answers (`answer`: accept | reject | ignore, with `accept`/`label` or `spans`);
the item id comes from `meta.id` (as exported), `id`, or the text itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from loopline.schemas import Annotation, InvalidAnswer, RoutedItem, Span, TaskConfig, TextIn
from loopline.streams.review.validation import CheckedAnswer, check_answer


def export_record(item: RoutedItem, task: TaskConfig) -> dict[str, Any]:
    shown = item.suggestions[-1].annotation if item.suggestions else None
    record: dict[str, Any] = {"text": item.item.text}
    if task.kind == "ner":
        record["spans"] = [
            {"start": s.start, "end": s.end, "label": s.label}
            for s in (shown.spans if shown else [])
        ]
    else:
        record["options"] = [{"id": label, "text": label} for label in task.labels]
        record["accept"] = list(shown.labels) if shown else []
    record["meta"] = {
        "id": item.id,
        "reason": item.reason,
        "detail": item.detail,
        "priority": item.priority,
        **{s.source: _summary(s.annotation) for s in item.suggestions},
        **item.item.meta,
    }
    return record


def _summary(annotation: Annotation) -> str:
    said = ", ".join(annotation.labels) or f"{len(annotation.spans)} spans"
    return f"{said} ({annotation.confidence:.2f})"


@dataclass(frozen=True)
class ImportedAnswer:
    item: TextIn
    reviewer: str | None
    answer: CheckedAnswer


def import_record(record: Any, task: TaskConfig) -> ImportedAnswer:
    """One Prodigy answer line, checked against the task, or InvalidAnswer saying why not."""
    if not isinstance(record, dict):
        raise InvalidAnswer("not a JSON object; each line must be one Prodigy task")
    text, decision = record.get("text"), record.get("answer")
    if not isinstance(text, str) or not text:
        raise InvalidAnswer('no "text"')
    if decision not in ("accept", "reject", "ignore"):
        raise InvalidAnswer(f'"answer" is {decision!r}; use accept, reject or ignore')
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    item_id = meta.get("id", record.get("id", ""))
    try:
        item = TextIn(id=str(item_id), text=text)
    except ValidationError as exc:
        raise InvalidAnswer(f"bad id {item_id!r}: {exc.errors()[0]['msg']}") from None
    labels: list[str] = []
    spans: list[Span] = []
    if decision == "accept":
        if task.kind == "ner":
            spans = _spans(record.get("spans", []))
        elif isinstance(record.get("accept"), list):
            labels = [str(label) for label in record["accept"]]
        elif isinstance(record.get("label"), str):
            labels = [record["label"]]
    reviewer = record.get("_annotator_id")
    return ImportedAnswer(
        item,
        reviewer if isinstance(reviewer, str) and reviewer else None,
        check_answer(task, text, decision, labels, spans),
    )


def _spans(raw: Any) -> list[Span]:
    if not isinstance(raw, list):
        raise InvalidAnswer('"spans" must be a list of {"start", "end", "label"}')
    try:
        return [
            Span(start=s["start"], end=s["end"], label=s["label"])
            for s in raw
            if isinstance(s, dict)
        ]
    except (KeyError, ValidationError) as exc:
        raise InvalidAnswer(f'a span needs integer "start", "end" and a "label" ({exc})') from None
