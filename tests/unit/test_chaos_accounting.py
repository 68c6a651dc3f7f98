"""The chaos benchmark's accounting, without services: what counts as a duplicate, when a
fault has recovered, throughput in a window, where faults fall."""

from __future__ import annotations

import json
import random

from loopline.streams.bench.chaos import Accounting, plan_faults, recovery_seconds, throughput


def value(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_a_redelivered_output_is_a_duplicate_and_an_llm_revision_is_not():
    accounting = Accounting()
    student = value(id="a", revision=0, labels=["x"])
    accounting.add("predictions", b"a", student)
    accounting.add("predictions", b"a", student)  # redelivered: same bytes
    accounting.add("predictions", b"a", value(id="a", revision=1, labels=["y"]))
    accounting.add("review", b"b", value(id="b", suggestions=[{"source": "student"}]))
    accounting.add(
        "review", b"b", value(id="b", suggestions=[{"source": "student"}, {"source": "llm"}])
    )
    assert accounting.duplicates == 1
    assert accounting.differing == []
    assert accounting.ids == {"a", "b"}


def test_a_repeated_output_with_other_bytes_is_reported():
    accounting = Accounting()
    accounting.add("predictions", b"a", value(id="a", revision=0, labels=["x"]))
    accounting.add("predictions", b"a", value(id="a", revision=0, labels=["z"]))
    assert accounting.differing == [("predictions", "a", 0)]


def test_recovery_is_when_the_last_item_sent_before_the_kill_was_answered():
    sent = {"a": 1000, "b": 2000, "c": 9000}
    assert recovery_seconds(5000, sent, {"a": 1500, "b": 8000, "c": 9100}) == 3.0
    assert recovery_seconds(5000, sent, {"a": 1500}) is None  # b never answered
    assert recovery_seconds(500, sent, {}) == 0.0  # nothing was in flight


def test_throughput_counts_first_answers_in_the_window():
    assert throughput([1000, 1500, 2500, 4000], 1000, 3000) == 1.5
    assert throughput([1000], 3000, 3000) == 0.0


def test_each_kind_is_killed_the_given_times_in_order_within_the_stream():
    faults = plan_faults(["worker", "kafka", "redis"], 2, 100.0, random.Random(1))
    assert sorted(f.service for f in faults) == sorted(["worker", "kafka", "redis"] * 2)
    moments = [f.at_s for f in faults]
    assert moments == sorted(moments) and moments[0] >= 10 and moments[-1] <= 80
