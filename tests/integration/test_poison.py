"""No poison message: whatever the broker accepts ends as one outcome and the worker moves on.

Messages of 0.9 and 1 MB, valid and not, sit inside batches of valid ones; one valid item's
output is too large for the output topic; one text makes spaCy itself raise.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from loopline.schemas import DeadLetter, RoutedItem, TextIn, load_task
from loopline.streams.codec import encode
from loopline.streams.topics import ensure_topics, max_message_bytes

from .streaming import (
    OUTPUT_ROLES,
    kafka_at,
    outputs_by_id,
    produce_raw,
    read_topic,
    service_env,
    start_worker,
    stop,
    texts,
    wait_for_outcomes,
    write_task,
)

pytestmark = pytest.mark.integration

# A dead letter keeps a bounded prefix of the original: far below any topic's limit.
DEAD_LETTER_MAX_BYTES = 100_000


def with_meta(item_id: str, size: int) -> bytes:
    """A valid TextIn of exactly `size` bytes, nearly all of it `meta`."""
    empty = encode(TextIn(id=item_id, text="my card has not arrived", meta={"blob": ""}))
    blob = "m" * (size - len(empty))
    return encode(TextIn(id=item_id, text="my card has not arrived", meta={"blob": blob}))


def at_limit(item_id: str, limit: int) -> bytes:
    """A valid TextIn whose record just fits the topic: any output that copies its meta won't."""
    key, size = item_id.encode(), limit - 1000
    while DefaultRecordBatchBuilder.estimate_size_in_bytes(key, with_meta(item_id, size), []) < (
        limit - 16
    ):
        size += 8
    return with_meta(item_id, size)


def good(rows: list[dict]) -> list[tuple[bytes, bytes]]:
    return [(row["id"].encode(), encode(TextIn(**row))) for row in rows]


def dead_letters(bootstrap: str, topic: str) -> list[tuple[bytes, DeadLetter]]:
    raw = read_topic(
        kafka_at(bootstrap), topic, from_beginning=True, max_messages=None, timeout_s=3
    )
    return [(value, DeadLetter.model_validate_json(value)) for value in raw]


def test_large_and_broken_messages_each_end_as_one_outcome(
    kafka_bootstrap, redis_url, banking_student, tmp_path, unique_prefix
):
    task_file = write_task(tmp_path, unique_prefix)
    task = load_task(task_file)
    ensure_topics(kafka_at(kafka_bootstrap), task)
    limit = max_message_bytes(kafka_at(kafka_bootstrap), [task.topic("texts")])
    rows = texts(500)
    poison = {
        "big-text": (encode(TextIn(id="big-text", text="word " * 180_000)), "oversized_text"),
        "not-utf8": (b"\xff" * 1_000_000, "undecodable"),
        "meta-0.9mb": (with_meta("meta-0.9mb", 900_000), None),
        "meta-1mb": (with_meta("meta-1mb", 1_000_000), None),
        "meta-at-limit": (at_limit("meta-at-limit", limit), "output_too_large"),
        "bad-schema": (json.dumps({"txt": "x" * 999_980}).encode(), "schema_violation"),
    }
    values = []
    for i, (name, (value, _)) in enumerate(poison.items()):
        values += good(rows[i * 80 : (i + 1) * 80]) + [(name.encode(), value)]
    values += good(rows[len(poison) * 80 :])
    produce_raw(kafka_bootstrap, task, values)

    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    worker = start_worker(task_file, banking_student, env, tmp_path / "worker.log")
    try:
        outcome_counts = wait_for_outcomes(redis_url, task, len(values), 180, [worker])
    finally:
        stop(worker)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]

    answered = {row["id"] for row in rows} | {n for n, (_, err) in poison.items() if not err}
    by_id = outputs_by_id(kafka_bootstrap, task, OUTPUT_ROLES)
    assert set(by_id) == answered
    assert all(len(outputs) == 1 for outputs in by_id.values())
    for name in ("meta-0.9mb", "meta-1mb"):
        [(_, value)] = by_id[name]
        kept = json.loads(value)
        meta = kept["meta"] if "meta" in kept else kept["item"]["meta"]
        assert meta == json.loads(poison[name][0])["meta"], f"{name}: meta not passed through"

    letters = dead_letters(kafka_bootstrap, task.topic("deadletter"))
    expected = {n: err for n, (_, err) in poison.items() if err}
    assert sorted(letter.error_type for _, letter in letters) == sorted(expected.values())
    by_error = {letter.error_type: (wire, letter) for wire, letter in letters}
    for name, error in expected.items():
        wire, letter = by_error[error]
        original = poison[name][0]
        assert len(wire) < DEAD_LETTER_MAX_BYTES, f"{error}: dead letter of {len(wire)} bytes"
        assert letter.original_length == len(original)
        assert letter.original_sha256 == hashlib.sha256(original).hexdigest()
        assert 0 < len(letter.original) < len(original) and original.startswith(letter.original)
        assert letter.source_topic == task.topic("texts") and letter.stage == "annotate"
    too_large = by_error["output_too_large"][1]
    assert str(limit) in too_large.message and "meta" in too_large.message

    assert sum(outcome_counts.values()) - outcome_counts.get("audit", 0) == len(values)
    assert outcome_counts["deadletter"] == len(expected)


def test_a_text_the_student_fails_on_goes_to_review_alone(
    kafka_bootstrap, redis_url, banking_student, tmp_path, unique_prefix
):
    # spaCy refuses texts over nlp.max_length (1,000,000 characters) with a ValueError.
    task_file = write_task(tmp_path, unique_prefix, max_text_chars=2_000_000)
    task = load_task(task_file)
    rows = texts(120)
    too_long = TextIn(id="too-long-for-spacy", text="a " * 500_001)
    values = good(rows[:60]) + [(b"too-long-for-spacy", encode(too_long))] + good(rows[60:])
    produce_raw(kafka_bootstrap, task, values)

    env = service_env(kafka_bootstrap, redis_url, tmp_path)
    worker = start_worker(task_file, banking_student, env, tmp_path / "worker.log")
    try:
        wait_for_outcomes(redis_url, task, len(values), 120, [worker])
    finally:
        stop(worker)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]

    by_id = outputs_by_id(kafka_bootstrap, task, OUTPUT_ROLES)
    assert set(by_id) == {row["id"] for row in rows} | {too_long.id}
    [(role, value)] = by_id.pop(too_long.id)
    failed = RoutedItem.model_validate_json(value)
    assert role == "review" and failed.reason == "student_error" and not failed.suggestions
    assert "E088" in failed.detail and failed.item.text == too_long.text
    for item_id, [(_, value)] in by_id.items():
        assert json.loads(value).get("reason") != "student_error", f"{item_id} failed with it"
