"""A running worker's /metrics and /healthz, scraped after a stream went through it."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loopline.processors.student import read_meta
from loopline.schemas import load_task
from loopline.streams.local.services import free_port

from .streaming import (
    OUTCOMES,
    good_values,
    produce_raw,
    service_env,
    start_worker,
    stop,
    texts,
    wait_for_outcomes,
    write_task,
)
from .test_stream import BAD_INPUTS

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[str, list]:
    """Samples by metric family name."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text)
    return {family.name: family.samples for family in families}


def total(samples: list, name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def wait_until(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what} after {timeout_s:.0f}s"
        time.sleep(0.5)
    return result


def test_a_worker_serves_health_and_prometheus_metrics(
    kafka_bootstrap, redis_url, banking_student, tmp_path, unique_prefix
):
    task_file = write_task(tmp_path, unique_prefix, max_text_chars=500)
    task = load_task(task_file)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = service_env(
        kafka_bootstrap, redis_url, tmp_path, LOOPLINE_METRICS_PORT=str(port),
        LOOPLINE_LOG_FORMAT="json",
    )  # fmt: skip
    log = tmp_path / "worker.log"
    worker = start_worker(task_file, banking_student, env, log)
    try:
        wait_until(lambda: _health(url).get("ready"), 120, "the worker never said it was ready")
        rows = texts(300)
        values = good_values(rows) + [(b"bad", v) for v in BAD_INPUTS.values()]
        produce_raw(kafka_bootstrap, task, values)
        ledger = wait_for_outcomes(redis_url, task, len(values), 120, [worker])
        # Offsets are committed every second: lag then drops to zero on every partition.
        samples = wait_until(
            lambda: (
                (m := scrape(url))
                and m.get("loopline_consumer_lag")
                and all(s.value == 0 for s in m["loopline_consumer_lag"])
                and m
            ),
            30,
            "consumer lag did not reach 0",
        )
    finally:
        stop(worker)

    outcomes = samples["loopline_outcomes"]
    for outcome in OUTCOMES:
        assert total(outcomes, "loopline_outcomes_total", stage="annotate", outcome=outcome) == (
            ledger.get(outcome, 0)
        )
    assert ledger["deadletter"] == len(BAD_INPUTS)
    assert total(samples["loopline_batch_seconds"], "loopline_batch_seconds_count") >= 1
    latency = samples["loopline_end_to_end_seconds"]
    assert total(latency, "loopline_end_to_end_seconds_count") == len(values)
    assert 0 < total(latency, "loopline_end_to_end_seconds_sum") / len(values) < 60
    lags = samples["loopline_consumer_lag"]
    texts_partitions = {
        s.labels["partition"] for s in lags if s.labels["topic"] == task.topic("texts")
    }
    assert texts_partitions == {str(p) for p in range(4)}
    [model] = samples["loopline_model_info"]
    assert model.labels["version"] == read_meta(banking_student).version
    assert "loopline_llm_requests" not in samples  # no LLM configured

    first_json_line = next(line for line in log.read_text().splitlines() if line.startswith("{"))
    assert {"time", "level", "logger", "message"} <= json.loads(first_json_line).keys()


def _health(url: str) -> dict:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).json()
    except httpx.HTTPError:
        return {}
