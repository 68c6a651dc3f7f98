"""Versioned prompt templates, one per task kind, and the JSON Schema of each answer.

A prompt is a fixed prefix (instructions, the labels with their descriptions, a few
human-labelled examples as earlier turns) followed by the item's text. The prefix is
byte-identical for every item, so servers with prompt caching (llama.cpp, OpenAI) compute
it once. Changing the wording means a new version (`textcat.v2`), never editing `v1`:
cached answers and recorded annotations name the version that produced them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loopline.schemas import ConfigError, Correction, Span, TaskConfig
from loopline.schemas.task import TaskKind

Message = dict[str, str]


@dataclass(frozen=True)
class Example:
    """A human-labelled text shown to the LLM: `labels` for textcat, `spans` for NER."""

    text: str
    labels: tuple[str, ...] = ()
    spans: tuple[Span, ...] = ()

    @classmethod
    def from_correction(cls, correction: Correction) -> Example:
        """A person's answer from the corrections topic, as an example for the LLM."""
        return cls(correction.text, tuple(correction.labels), tuple(correction.spans))


@dataclass(frozen=True)
class Prompt:
    """A ready prompt for one task: the fixed prefix, the answer schema, and the version."""

    version: str
    kind: TaskKind
    labels: tuple[str, ...]
    prefix: tuple[Message, ...]
    schema: dict[str, Any]

    def messages(self, text: str) -> list[Message]:
        """The whole conversation for one item: the shared prefix, then its text last."""
        return [*self.prefix, _user_turn(text)]

    def max_tokens(self, text: str) -> int:
        """Room for a full answer and no more: a model stuck in a loop stops early.

        Entities copy words of the text plus ~12 tokens of JSON each, so an NER answer
        stays under about one token per character of the text.
        """
        if self.kind == "ner":
            return min(NER_MAX_TOKENS, NER_BASE_TOKENS + len(text))
        return MAX_TOKENS[self.kind]

    @property
    def fingerprint(self) -> str:
        """A short hash of everything but the item: answers under another prefix differ."""
        blob = json.dumps([self.prefix, self.schema], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


INSTRUCTIONS: dict[TaskKind, str] = {
    "textcat": (
        "Choose the one label that fits the text best."
        '\nAnswer with JSON only, exactly in this form: {"label": "<label>"}'
    ),
    "textcat_multilabel": (
        "Choose every label that applies to the text; an empty list when none applies."
        '\nAnswer with JSON only, exactly in this form: {"labels": ["<label>", ...]}'
    ),
    "ner": (
        "Find every mention of the entity types below. Copy each mention's words exactly as "
        "they are written in the text. List the mentions in the order they appear, a "
        "repeated entity once for each time it appears; an empty list when there is none."
        "\nAnswer with JSON only, exactly in this form: "
        '{"entities": [{"text": "<words from the text>", "label": "<label>"}, ...]}'
    ),
}
HEADINGS: dict[TaskKind, str] = {
    "textcat": "Labels",
    "textcat_multilabel": "Labels",
    "ner": "Entity types",
}
MAX_TOKENS: dict[TaskKind, int] = {"textcat": 48, "textcat_multilabel": 160}
NER_BASE_TOKENS = 32
NER_MAX_TOKENS = 1024
PROMPT_VERSIONS: dict[TaskKind, str] = {
    "textcat": "textcat.v1",
    "textcat_multilabel": "textcat_multilabel.v1",
    "ner": "ner.v1",
}


def build_prompt(task: TaskConfig, examples: Sequence[Example] = ()) -> Prompt:
    """The current prompt version for `task`, with `examples` as few-shot turns."""
    labels = tuple(task.label_names)
    for example in examples:
        _check_example(task.kind, example, labels)
    system = (
        f"You annotate texts for the task {task.name!r}. {INSTRUCTIONS[task.kind]}\n\n"
        f"{HEADINGS[task.kind]}:\n"
        + "\n".join(f"- {label}: {description}" for label, description in task.labels.items())
    )
    prefix: list[Message] = [{"role": "system", "content": system}]
    for example in examples:
        prefix.append(_user_turn(example.text))
        prefix.append({"role": "assistant", "content": example_answer(task.kind, example)})
    return Prompt(
        version=PROMPT_VERSIONS[task.kind],
        kind=task.kind,
        labels=labels,
        prefix=tuple(prefix),
        schema=answer_schema(task.kind, labels),
    )


def answer_schema(kind: TaskKind, labels: Sequence[str]) -> dict[str, Any]:
    """The JSON Schema the answer must follow; servers with constrained decoding enforce it."""
    label = {"type": "string", "enum": list(labels)}
    if kind == "textcat":
        properties: dict[str, Any] = {"label": label}
    elif kind == "textcat_multilabel":
        properties = {"labels": {"type": "array", "items": label, "maxItems": len(labels)}}
    else:
        entity = {
            "type": "object",
            "properties": {"text": {"type": "string", "minLength": 1}, "label": label},
            "required": ["text", "label"],
            "additionalProperties": False,
        }
        properties = {"entities": {"type": "array", "items": entity}}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def example_answer(kind: TaskKind, example: Example) -> str:
    """The answer an example should get, written exactly as the model is asked to write it."""
    if kind == "textcat":
        answer: dict[str, Any] = {"label": example.labels[0]}
    elif kind == "textcat_multilabel":
        answer = {"labels": list(example.labels)}
    else:
        answer = {
            "entities": [
                {"text": example.text[span.start : span.end], "label": span.label}
                for span in sorted(example.spans, key=lambda s: s.start)
            ]
        }
    return json.dumps(answer, ensure_ascii=False)


def _user_turn(text: str) -> Message:
    return {"role": "user", "content": f"Text: {text}"}


def _check_example(kind: TaskKind, example: Example, labels: Sequence[str]) -> None:
    if kind == "textcat" and len(example.labels) != 1:
        raise ConfigError(
            f"few-shot example {example.text[:60]!r} has {len(example.labels)} labels: an "
            "exclusive textcat example needs exactly one"
        )
    used = set(example.labels) | {span.label for span in example.spans}
    unknown = used - set(labels)
    if unknown:
        raise ConfigError(
            f"few-shot example {example.text[:60]!r} uses labels {sorted(unknown)} that the "
            f"task does not have ({', '.join(labels)}): fix or drop the example"
        )
    if any(span.end > len(example.text) or span.start >= span.end for span in example.spans):
        raise ConfigError(f"few-shot example {example.text[:60]!r} has a span outside its text")
