"""Labelled data: Prodigy-style JSONL in and out, and conversion to spaCy.

One line is one item. Text classification takes `{"text", "label"}` or `{"text", "accept":
[...]}` (`accept` wins when both are there); NER takes `{"text", "spans": [{"start", "end",
"label"}]}` with character offsets on token boundaries (`end` exclusive). Lines whose
`answer` is `reject` or `ignore` are skipped, as Prodigy means them. Silver data written by
the LLM teacher carries `"_source": "llm"` and may carry a `"weight"`; everything else is
human (gold) with weight 1.

Every problem stops the read with a `DataError` naming `file:line` and what to fix: a
model trained on silently dropped or half-read data is worse than no model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

import spacy
from pydantic import BaseModel, ConfigDict, Field
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example

from loopline.schemas import DataError, Span, TaskConfig

SOURCE_KEY = "_source"
"""The JSONL key that marks silver lines (`"llm"`); absent means human."""
SPANS_KEY = "sc"
"""Where entity spans live on a spaCy Doc (`doc.spans[SPANS_KEY]`), as spancat expects."""
SKIPPED_ANSWERS = frozenset({"reject", "ignore"})
ANSWERS = SKIPPED_ANSWERS | {"accept"}


class LabelledText(BaseModel):
    """One labelled item: the unit of training and evaluation data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str
    labels: list[str] = Field(default_factory=list)
    spans: list[Span] = Field(default_factory=list)
    source: Literal["human", "llm"] = "human"
    weight: float = Field(default=1.0, gt=0.0)


class _Problem(Exception):
    """What is wrong with one record; `read_examples` adds the file and line."""


# reading ------------------------------------------------------------------------------------


def read_examples(path: str | Path, task: TaskConfig) -> list[LabelledText]:
    """Read a Prodigy-style JSONL file for `task`; raise DataError on the first bad line."""
    path = Path(path)
    try:
        raw_lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; pass the path of a JSONL data file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory; pass the path of a JSONL data file") from None
    examples: list[LabelledText] = []
    for line_number, raw in enumerate(raw_lines, start=1):
        try:
            example = parse_line(raw, task)
        except _Problem as problem:
            raise DataError(f"{path}:{line_number}: {problem}") from None
        if example is not None:
            examples.append(example)
    if not examples:
        raise DataError(f"{path}: no usable examples; the file is empty or every line is skipped")
    return examples


def parse_line(raw: bytes, task: TaskConfig) -> LabelledText | None:
    """One JSONL line as a LabelledText; None for blank lines and rejected/ignored answers."""
    if not raw.strip():
        return None
    try:
        line = raw.decode("utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as exc:
        raise _Problem(
            f"not valid UTF-8 ({exc.reason} at byte {exc.start}); save as UTF-8"
        ) from None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise _Problem(f"not valid JSON ({exc.msg} at column {exc.colno}); fix the line") from None
    return parse_record(record, task)


def parse_record(record: Any, task: TaskConfig) -> LabelledText | None:
    """Validate one decoded record against the task; None if its answer says to skip it."""
    if not isinstance(record, dict):
        raise _Problem(f"expected a JSON object, got {type(record).__name__}")
    answer = record.get("answer", "accept")
    if answer not in ANSWERS:
        raise _Problem(f'"answer" is {answer!r}; use "accept", "reject" or "ignore"')
    if answer in SKIPPED_ANSWERS:
        return None
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _Problem('missing or empty "text": each line needs the text to annotate')
    if task.kind == "ner":
        labels, spans = [], _parse_spans(record, text, task)
    else:
        labels, spans = _parse_labels(record, task), []
    return LabelledText(
        text=text,
        labels=labels,
        spans=spans,
        source=_parse_source(record),
        weight=_parse_weight(record),
    )


def _parse_labels(record: dict, task: TaskConfig) -> list[str]:
    if "accept" in record:
        labels = record["accept"]
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise _Problem('"accept" must be a list of label names')
    elif "label" in record:
        if not isinstance(record["label"], str):
            raise _Problem('"label" must be a label name (a string)')
        labels = [record["label"]]
    else:
        raise _Problem('no label: add "label": "<name>" (or "accept": ["<name>", ...])')
    for label in labels:
        _check_label(label, task)
    if task.kind == "textcat" and len(labels) != 1:
        raise _Problem(
            f"{len(labels)} labels in an exclusive textcat task; give exactly one "
            "(or set kind: textcat_multilabel in the task file)"
        )
    return list(dict.fromkeys(labels))


def _parse_spans(record: dict, text: str, task: TaskConfig) -> list[Span]:
    raw_spans = record.get("spans")
    if not isinstance(raw_spans, list):
        raise _Problem('no "spans" list: add "spans": [] when the text has no entities')
    token_starts, token_ends = _token_boundaries(text)
    spans = [
        _parse_span(raw, i, text, task, token_starts, token_ends) for i, raw in enumerate(raw_spans)
    ]
    spans.sort(key=lambda span: (span.start, span.end))
    for before, after in zip(spans, spans[1:]):
        if after.start < before.end:
            raise _Problem(
                f"spans {_show(before, text)} and {_show(after, text)} overlap; "
                "NER spans must not overlap: keep one"
            )
    return spans


def _parse_span(
    raw: Any, index: int, text: str, task: TaskConfig, starts: set[int], ends: set[int]
) -> Span:
    where = f"spans[{index}]"
    if not isinstance(raw, dict):
        raise _Problem(f'{where} must be an object with "start", "end" and "label"')
    start, end, label = raw.get("start"), raw.get("end"), raw.get("label")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)):
        raise _Problem(f'{where} needs integer "start" and "end" character offsets')
    if not isinstance(label, str):
        raise _Problem(f'{where} needs a "label" (a string)')
    _check_label(label, task, where=f"{where}: ")
    if not 0 <= start < end <= len(text):
        raise _Problem(
            f"{where} [{start}, {end}) is outside the text (length {len(text)}) or empty; "
            "offsets count characters, end exclusive"
        )
    if start not in starts or end not in ends:
        raise _Problem(
            f"{where} {text[start:end]!r} [{start}, {end}) does not start and end on token "
            "boundaries; move the offsets to whole words"
        )
    return Span(start=start, end=end, label=label)


def _check_label(label: str, task: TaskConfig, where: str = "") -> None:
    if label not in task.labels:
        known = ", ".join(list(task.labels)[:8])
        more = f" (and {len(task.labels) - 8} more)" if len(task.labels) > 8 else ""
        raise _Problem(
            f"{where}unknown label {label!r}; task {task.name!r} has {known}{more}: "
            "fix the label or add it to the task file"
        )


def _parse_source(record: dict) -> Literal["human", "llm"]:
    source = record.get(SOURCE_KEY, "human")
    if source not in ("human", "llm"):
        raise _Problem(f'"{SOURCE_KEY}" is {source!r}; use "human" or "llm"')
    return source


def _parse_weight(record: dict) -> float:
    weight = record.get("weight", 1.0)
    ok = isinstance(weight, (int, float)) and not isinstance(weight, bool)
    if not ok or not math.isfinite(weight) or weight <= 0:
        raise _Problem(f'"weight" is {weight!r}; use a positive number (1 is a gold item)')
    return float(weight)


def _show(span: Span, text: str) -> str:
    return f"{text[span.start : span.end]!r} [{span.start}, {span.end})"


@cache
def tokenizer_pipeline() -> Language:
    """The tokenizer every student uses; spans are checked against the same tokens."""
    return spacy.blank("en")


def _token_boundaries(text: str) -> tuple[set[int], set[int]]:
    doc = tokenizer_pipeline().make_doc(text)
    return {t.idx for t in doc}, {t.idx + len(t) for t in doc}


# writing ------------------------------------------------------------------------------------


def to_record(example: LabelledText) -> dict[str, Any]:
    """The Prodigy-style record for an example, readable back for any task kind."""
    record: dict[str, Any] = {
        "text": example.text,
        "accept": example.labels,
        "spans": [{"start": s.start, "end": s.end, "label": s.label} for s in example.spans],
        "answer": "accept",
    }
    if example.source != "human":
        record[SOURCE_KEY] = example.source
    if example.weight != 1.0:
        record["weight"] = example.weight
    return record


def write_examples(path: str | Path, examples: Iterable[LabelledText]) -> int:
    """Write examples as JSONL (UTF-8, one object a line); returns how many were written."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as file:
        for example in examples:
            file.write(json.dumps(to_record(example), ensure_ascii=False) + "\n")
            count += 1
    return count


# spaCy --------------------------------------------------------------------------------------


def to_spacy_examples(
    nlp: Language, examples: Sequence[LabelledText], task: TaskConfig
) -> list[Example]:
    """spaCy training Examples: `cats` for textcat, `spans[SPANS_KEY]` + `ents` for NER."""
    return [Example(nlp.make_doc(eg.text), _reference_doc(nlp, eg, task)) for eg in examples]


def to_docbin(examples: Iterable[LabelledText], task: TaskConfig) -> DocBin:
    """Gold docs for `spacy train` (cats, or entities in both `ents` and `spans["sc"]`)."""
    nlp = tokenizer_pipeline()
    return DocBin(docs=(_reference_doc(nlp, eg, task) for eg in examples))


def _reference_doc(nlp: Language, example: LabelledText, task: TaskConfig) -> Doc:
    doc = nlp.make_doc(example.text)
    if task.kind == "ner":
        spans = [doc.char_span(s.start, s.end, label=s.label) for s in example.spans]
        if any(span is None for span in spans):
            raise DataError(
                f"an entity in {example.text[:60]!r} is not on token boundaries; "
                "fix the span offsets"
            )
        doc.spans[SPANS_KEY] = spans
        doc.ents = spans
    else:
        chosen = set(example.labels)
        doc.cats = {label: float(label in chosen) for label in task.labels}
    return doc
