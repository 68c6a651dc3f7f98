"""Worker metrics without Kafka: outcome counting, LLM figures read at scrape time, health,
JSON log configuration."""

from __future__ import annotations

import json
import logging.config
import time

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from loopline.processors.llm.client import ChatClient, Usage
from loopline.streams import observe
from loopline.streams.state import Outcome


class Teacher:
    """What the collector reads of an LLMTeacher: running usage and the client's breaker."""

    def __init__(self) -> None:
        self.usage = Usage(prompt_tokens=120, completion_tokens=8, cached_tokens=100, requests=3)
        self.client = ChatClient("http://127.0.0.1:9/v1", "m")


def samples(metrics: observe.WorkerMetrics) -> dict[tuple, float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_outcomes_are_counted_by_stage_outcome_and_reason_and_llm_errors_apart():
    metrics = observe.WorkerMetrics("t")
    metrics.count("annotate", [Outcome("x", 0, 1, "prediction"), Outcome("x", 0, 2, "llm")])
    metrics.count("teach", [Outcome("y", 0, 1, "review", ("llm_unavailable",))] * 2)
    got = samples(metrics)
    key = (("outcome", "review"), ("reason", "llm_unavailable"), ("stage", "teach"), ("task", "t"))
    assert got[("loopline_outcomes_total", key)] == 2
    assert got[("loopline_llm_errors_total", (("reason", "llm_unavailable"), ("task", "t")))] == 2


def test_llm_usage_breaker_and_model_version_are_read_when_scraped():
    metrics = observe.WorkerMetrics("t")
    version = ["v1"]
    metrics.registry.register(observe.ScrapeTimeCollector("t", lambda: version[0], Teacher()))
    version[0] = "v2"  # a hot swap shows at the next scrape
    got = samples(metrics)
    assert got[("loopline_model_info", (("task", "t"), ("version", "v2")))] == 1
    assert got[("loopline_llm_requests_total", (("task", "t"),))] == 3
    assert got[("loopline_llm_tokens_total", (("kind", "prompt"), ("task", "t")))] == 120
    assert got[("loopline_llm_breaker_state", (("state", "closed"), ("task", "t")))] == 1
    assert got[("loopline_llm_breaker_state", (("state", "open"), ("task", "t")))] == 0


def test_a_loop_that_stopped_ticking_is_not_live():
    metrics = observe.WorkerMetrics("t")
    metrics.ready = True
    assert metrics.health()[0] is True
    metrics.last_tick = time.monotonic() - observe.LIVE_WITHIN_S - 1
    live, body = metrics.health()
    assert (live, body["live"], body["ready"]) == (False, False, False)


def test_json_logs_are_one_object_per_line(capsys):
    logging.config.dictConfig(observe.logging_config("json", "info"))
    try:
        logging.getLogger("loopline").warning("hello %s", "there")
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    record = json.loads(line)
    assert (record["message"], record["level"], record["logger"]) == (
        "hello there", "WARNING", "loopline",
    )  # fmt: skip
    assert observe.logging_config("text", "info") is None
