"""Read an LLM's answer: find the JSON in it, check it against the task's labels.

Servers with constrained decoding always send clean JSON. Others may wrap it in code fences
or prose, or write Python-ish JSON (single quotes, trailing commas); within reason, that is
read. An answer that still holds no usable structure raises LLMBadAnswer with an excerpt.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from loopline.schemas import LLMBadAnswer
from loopline.schemas.task import TaskKind

EXCERPT_CHARS = 200
MAX_CANDIDATES = 20
MAX_LITERAL_CHARS = 20_000
FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*\n?(.*?)```", re.DOTALL)
TRAILING_COMMA = re.compile(r",\s*([}\]])")
_NOTHING = object()


@dataclass(frozen=True)
class Mention:
    """An entity as the LLM wrote it: its words and label, not yet placed in the text.
    `score` is the model's probability of it, when the server gave log-probabilities."""

    text: str
    label: str
    score: float | None = None


@dataclass(frozen=True)
class ParsedAnswer:
    """Labels (textcat) or mentions (NER) read from an answer; `rejected` counts entities
    dropped for an unknown label or a malformed entry."""

    labels: tuple[str, ...] = ()
    mentions: tuple[Mention, ...] = ()
    rejected: int = 0


def parse_answer(kind: TaskKind, labels: Sequence[str], raw: str) -> ParsedAnswer:
    """Read the answer to a `kind` prompt; raise LLMBadAnswer when it cannot be used."""
    if kind == "textcat":
        return ParsedAnswer(labels=(_parse_textcat(labels, raw),))
    if kind == "textcat_multilabel":
        return ParsedAnswer(labels=_parse_multilabel(labels, raw))
    return _parse_ner(labels, raw)


def extract_json(raw: str) -> Any:
    """The first JSON value in `raw`: the whole text, a fenced block, or a bracketed part."""
    text = raw.strip()
    if not text:
        raise LLMBadAnswer("the LLM answered with an empty text")
    for candidate in _candidates(text):
        value = _loads_lenient(candidate)
        if value is not _NOTHING:
            return value
    raise LLMBadAnswer(f"the LLM's answer holds no JSON: {excerpt(raw)!r}")


def match_label(value: object, labels: Sequence[str]) -> str | None:
    """The task label `value` names: exactly, or ignoring case, spaces and punctuation."""
    if not isinstance(value, str):
        return None
    if value in labels:
        return value
    matches = [label for label in labels if _squash(label) == _squash(value)]
    return matches[0] if len(matches) == 1 else None


def excerpt(raw: str) -> str:
    return raw if len(raw) <= EXCERPT_CHARS else raw[:EXCERPT_CHARS] + "..."


def _parse_textcat(labels: Sequence[str], raw: str) -> str:
    bare = match_label(raw.strip().strip("\"'`. \n"), labels)
    if bare is not None:
        return bare
    data = extract_json(raw)
    value = data
    if isinstance(data, dict):
        value = data.get("label", data.get("labels"))
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    label = match_label(value, labels)
    if label is None:
        raise LLMBadAnswer(
            f"the LLM's label {value!r} is not one of the task's labels ({', '.join(labels)}): "
            f"{excerpt(raw)!r}"
        )
    return label


def _parse_multilabel(labels: Sequence[str], raw: str) -> tuple[str, ...]:
    data = extract_json(raw)
    values = data.get("labels", data.get("label")) if isinstance(data, dict) else data
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        raise LLMBadAnswer(f"the LLM's answer has no list of labels: {excerpt(raw)!r}")
    chosen: list[str] = []
    for value in values:
        label = match_label(value, labels)
        if label is None:
            raise LLMBadAnswer(
                f"the LLM's label {value!r} is not one of the task's labels "
                f"({', '.join(labels)}): {excerpt(raw)!r}"
            )
        if label not in chosen:
            chosen.append(label)
    return tuple(chosen)


def _parse_ner(labels: Sequence[str], raw: str) -> ParsedAnswer:
    data = extract_json(raw)
    entities = data.get("entities") if isinstance(data, dict) else data
    if not isinstance(entities, list):
        raise LLMBadAnswer(f"the LLM's answer has no list of entities: {excerpt(raw)!r}")
    mentions: list[Mention] = []
    for entity in entities:
        label = match_label(entity.get("label"), labels) if isinstance(entity, dict) else None
        text = entity.get("text") if isinstance(entity, dict) else None
        if label is not None and isinstance(text, str) and text.strip():
            mentions.append(Mention(text=text, label=label))
    return ParsedAnswer(mentions=tuple(mentions), rejected=len(entities) - len(mentions))


def _candidates(text: str) -> Iterator[str]:
    yield text
    for fenced in FENCE.finditer(text):
        yield fenced.group(1).strip()
    starts = [i for i, char in enumerate(text) if char in "{["][:MAX_CANDIDATES]
    for start in starts:
        end = _matching_bracket(text, start)
        if end is not None:
            yield text[start : end + 1]


def _matching_bracket(text: str, start: int) -> int | None:
    """Index of the bracket closing `text[start]`, skipping brackets inside quoted strings."""
    depth, quote, escaped = 0, "", False
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index
    return None


def _loads_lenient(candidate: str) -> Any:
    for attempt in (candidate, TRAILING_COMMA.sub(r"\1", candidate)):
        try:
            return json.loads(attempt)
        except ValueError:
            pass
    if len(candidate) <= MAX_LITERAL_CHARS and candidate[:1] in "{[":
        try:
            return ast.literal_eval(candidate)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    return _NOTHING


def _squash(value: str) -> str:
    return re.sub(r"[\W_]+", "", value.casefold())
