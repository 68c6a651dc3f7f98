"""The trainer's pure parts: when a run is due, and which corrections may be trained on."""

from __future__ import annotations

import json

import pytest

from loopline.schemas import InputError, load_task
from loopline.streams.trainer.service import Attempt, check_correction, due
from tests.fixtures.models import EXAMPLES

LAST = Attempt(gold=100, data_hash="abc", at=1000.0)


def when(gold=100, now=1001.0, requested=False, data_hash=None):
    return due(
        gold,
        LAST,
        now,
        min_new_gold=50,
        interval_s=60,
        requested=requested,
        data_hash=data_hash,
    )


def test_a_run_is_due_on_request_on_enough_new_gold_or_on_the_interval_with_new_data():
    assert when() is None
    assert "asked for" in when(requested=True)
    assert when(gold=149) is None
    assert "50 new gold labels" in when(gold=150)
    assert when(now=1100.0, data_hash="abc") is None  # nothing changed
    assert "data changed" in when(now=1100.0, data_hash="def")
    assert when(now=1030.0, data_hash="def") is None  # too soon


def record(value: dict | bytes) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


CORRECTION = {
    "id": "a",
    "task": "snips",
    "text": "play some jazz",
    "labels": ["PlayMusic"],
    "reviewer": "ana",
    "time": "2026-01-01T00:00:00Z",
}


def test_corrections_that_do_not_fit_the_task_are_refused_with_the_reason():
    task = load_task(EXAMPLES / "snips")
    assert check_correction(record(CORRECTION), task).labels == ["PlayMusic"]
    cases = {
        "invalid_correction": {**CORRECTION, "labels": ["Dance"]},
        "wrong_task": {**CORRECTION, "task": "banking77"},
        "schema_violation": {**CORRECTION, "time": "yesterday"},
    }
    for code, value in cases.items():
        with pytest.raises(InputError) as caught:
            check_correction(record(value), task)
        assert caught.value.code == code
    with pytest.raises(InputError, match="not a Correction"):
        check_correction(record(b"not json"), task)
