from __future__ import annotations

import base64
import json

import pytest

from loopline.schemas import DeadLetter, InputError, content_id
from loopline.streams.codec import dead_letter, decode_text, encode, text_from_line


def test_valid_message_decodes_and_derives_missing_id():
    item = decode_text(b'{"text": "where is my card?", "meta": {"ticket": 7}}', 100)
    assert item.text == "where is my card?"
    assert item.id == content_id("where is my card?")
    assert item.meta == {"ticket": 7}


def test_explicit_id_is_kept():
    assert decode_text(b'{"id": "t-1", "text": "hi"}', 100).id == "t-1"


@pytest.mark.parametrize(
    ("raw", "code", "hint"),
    [
        (None, "null_value", "no value"),
        (b"\xff\xfe{}", "undecodable", "UTF-8"),
        (b"{not json", "invalid_json", "not JSON"),
        (b'["a list"]', "schema_violation", "not an object"),
        (b'{"txt": "typo"}', "schema_violation", "text"),
        (b'{"text": 42}', "schema_violation", "text"),
        (b'{"text": "ok", "extra": 1}', "schema_violation", "extra"),
        (b'{"id": "1", "text": "a\\ud800"}', "undecodable", "lone UTF-16 surrogate"),
        (b'{"text": "ok", "meta": {"\\udfff": 1}}', "undecodable", "valid Unicode"),
        (b'{"text": ""}', "empty_text", "empty"),
        (b'{"text": "  \\n\\t "}', "empty_text", "whitespace"),
        (json.dumps({"text": "x" * 101}).encode(), "oversized_text", "max_text_chars=100"),
    ],
)
def test_bad_input_gets_a_code_and_an_actionable_message(raw, code, hint):
    with pytest.raises(InputError) as caught:
        decode_text(raw, 100)
    assert caught.value.code == code
    assert hint in str(caught.value)


def test_dead_letter_keeps_original_bytes_through_json():
    raw = b"\xff\x00 not text"
    error = InputError("undecodable", "value is not valid UTF-8")
    letter = dead_letter(
        error, raw, task="t", stage="decode", topic="p.texts", partition=3, offset=99
    )
    assert letter.key == "p.texts:3:99"
    wire = encode(letter)
    again = DeadLetter.model_validate_json(wire)
    assert again.original == raw
    assert base64.urlsafe_b64decode(json.loads(wire)["original"]) == raw


def test_encoding_is_deterministic():
    item = decode_text(b'{"text": "same"}', 100)
    assert encode(item) == encode(decode_text(b'{"text": "same"}', 100))


def test_producer_lines():
    assert text_from_line("plain words\n", plain=True).text == "plain words"
    item = text_from_line('{"text": "hi", "label": "greet", "id": "9"}', plain=False)
    assert (item.id, item.text) == ("9", "hi")  # gold labels in the file are not sent
    with pytest.raises(InputError, match="--plain"):
        text_from_line("just words", plain=False)
    with pytest.raises(InputError, match='"text"'):
        text_from_line('{"body": "x"}', plain=False)
