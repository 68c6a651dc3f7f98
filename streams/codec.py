"""Turning raw Kafka values into messages, and messages into bytes.

Topics carry bytes and loopline decodes them itself: a value Faust could not decode would be
lost in its decoder, while here every failure becomes an InputError whose code and message
end up in `deadletter` together with the original bytes.
"""

from __future__ import annotations

import hashlib
import json
import re

from pydantic import BaseModel, ValidationError

from loopline.schemas import DeadLetter, InputError, TextIn
from loopline.schemas.messages import ORIGINAL_PREFIX_BYTES

EXAMPLE = '{"id": "42", "text": "my card has not arrived"}'
MESSAGE_MAX_CHARS = 2000
# Only a value with such an escape can decode to a lone surrogate: the costly check is rare.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def decode_text(raw: bytes | None, max_chars: int) -> TextIn:
    """Parse one `texts` value, or raise InputError saying what is wrong and how to fix it."""
    try:
        item = TextIn.model_validate_json(raw)  # the common case, in one pass in Rust
    except ValidationError:
        item = _parse_explaining(raw)
    if not item.text.strip():
        raise InputError("empty_text", "`text` is empty or only whitespace; nothing to annotate")
    if len(item.text) > max_chars:
        raise InputError(
            "oversized_text",
            f"`text` has {len(item.text)} characters, more than max_text_chars={max_chars}; "
            "split the text or raise max_text_chars in the task config",
        )
    return item


def _parse_explaining(raw: bytes | None) -> TextIn:
    """A value the fast parse refused, step by step, so that the InputError says which step
    failed."""
    if raw is None:
        raise InputError("null_value", f"the message has no value; send JSON like {EXAMPLE}")
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            "undecodable",
            f"value is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
            "encode the JSON as UTF-8",
        ) from None
    try:
        data = json.loads(decoded)
    except json.JSONDecodeError as exc:
        raise InputError(
            "invalid_json",
            f"value is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            f"send one JSON object per message, like {EXAMPLE}",
        ) from None
    if not isinstance(data, dict):
        raise InputError(
            "schema_violation",
            f"value is a JSON {type(data).__name__}, not an object; send {EXAMPLE}",
        )
    if SURROGATE_ESCAPE.search(decoded) and _has_lone_surrogate(data):
        raise InputError(
            "undecodable",
            "value holds a lone UTF-16 surrogate escape (like \\ud800), which is no "
            "character and cannot be written out again; send valid Unicode",
        )
    try:
        return TextIn.model_validate(data)
    except ValidationError as exc:
        raise InputError("schema_violation", _summarise(exc)) from None


def _has_lone_surrogate(data: dict) -> bool:
    """Whether JSON escapes left a half of a surrogate pair in `data` (a pair is one char)."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _summarise(exc: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'value'}: {err['msg']}" for err in exc.errors()
    )
    return (
        f"value does not match the TextIn schema ({problems}); see schemas/json/TextIn.schema.json"
    )


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json().encode("utf-8")


def dead_letter(
    error: InputError,
    raw: bytes | None,
    *,
    task: str,
    stage: str,
    topic: str,
    partition: int,
    offset: int,
) -> DeadLetter:
    """A dead letter of bounded size, whatever the size of `raw` or of the error's message."""
    raw = raw or b""
    message = str(error)
    if len(message) > MESSAGE_MAX_CHARS:
        message = message[:MESSAGE_MAX_CHARS] + "..."
    return DeadLetter(
        task=task,
        stage=stage,
        error_type=error.code,
        message=message,
        original=raw[:ORIGINAL_PREFIX_BYTES],
        original_length=len(raw),
        original_sha256=hashlib.sha256(raw).hexdigest(),
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
    )


def text_from_line(line: str, *, plain: bool) -> TextIn:
    """One line of a producer's input file: a JSON object (`text`, optional `id`, `meta`;
    other keys such as gold labels are ignored) or, with `plain`, the text itself."""
    if plain:
        return TextIn(text=line.rstrip("\n"))
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(
            "invalid_json", f"not JSON ({exc.msg}); use --plain for raw text"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise InputError("schema_violation", 'expected a JSON object with a "text" string')
    fields = {key: data[key] for key in ("id", "meta") if key in data}
    try:
        return TextIn(text=data["text"], **fields)
    except ValidationError as exc:
        raise InputError("schema_violation", _summarise(exc)) from None
