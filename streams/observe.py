"""What a running worker tells operators: Prometheus metrics, /healthz, JSON logs.

The metrics server runs in a thread of its own, apart from the worker's event loop: a loop
that is blocked cannot tick, and /healthz then says the worker is not live, which a server
inside the loop could never report. Counters are updated by the agents' batches (a wrapper
around each stage's `handle`); gauges that only matter when scraped (LLM usage, the model
version) are read at scrape time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from wsgiref.simple_server import WSGIRequestHandler, make_server

import faust
from mode.utils.logging import level_number
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer

from loopline.streams.intake import BatchIntake
from loopline.streams.outputs import Record, timestamp_s
from loopline.streams.state import Outcome

log = logging.getLogger("loopline")

TICK_S = 1.0
# The loop is called stuck when it has not ticked for this long (a batch of the student runs
# in a child process, so nothing in the loop should take seconds).
LIVE_WITHIN_S = 30.0
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BREAKER_STATES = ("closed", "half_open", "open")
# Review reasons that mean the LLM gave no answer for an item.
LLM_ERROR_REASONS = ("llm_unavailable", "llm_bad_answer", "llm_budget_exhausted")

BatchHandler = Callable[[Sequence[Record]], Awaitable[Sequence[Outcome]]]


class WorkerMetrics:
    """The metrics of one worker process, in a registry of its own."""

    def __init__(self, task: str, registry: CollectorRegistry | None = None) -> None:
        self.task = task
        self.registry = registry or CollectorRegistry()
        self.started = time.monotonic()
        self.last_tick = time.monotonic()
        self.ready = False
        self.outcomes = Counter(
            "loopline_outcomes",
            "Consumed messages by stage and outcome (prediction, llm, review, deadletter); "
            "`reason` is the review reason, when there is one.",
            ["task", "stage", "outcome", "reason"],
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "loopline_batch_seconds",
            "Time to handle one batch, from decoding to Kafka's acknowledgement of its outputs.",
            ["task", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_items = Histogram(
            "loopline_batch_items",
            "Messages per batch.",
            ["task", "stage"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.end_to_end_seconds = Histogram(
            "loopline_end_to_end_seconds",
            "From the input message's Kafka timestamp to its outputs being acknowledged.",
            ["task", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.llm_errors = Counter(
            "loopline_llm_errors",
            "Items the LLM gave no answer for (after retries), by reason.",
            ["task", "reason"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "loopline_consumer_lag",
            "Messages not yet committed by this worker, per assigned partition.",
            ["task", "topic", "partition"],
            registry=self.registry,
        )

    def observed(self, stage: str, handle: BatchHandler) -> BatchHandler:
        """`handle`, timing each batch and counting the outcomes it returns."""

        async def timed(messages: Sequence[Record]) -> Sequence[Outcome]:
            started = time.perf_counter()
            outcomes = await handle(messages)
            self.observe_batch(stage, messages, outcomes, time.perf_counter() - started)
            return outcomes

        return timed

    def observe_batch(
        self, stage: str, messages: Sequence[Record], outcomes: Sequence[Outcome], seconds: float
    ) -> None:
        """A handled batch: its duration, size, each message's latency and outcome."""
        done_s = time.time()
        self.batch_seconds.labels(self.task, stage).observe(seconds)
        self.batch_items.labels(self.task, stage).observe(len(messages))
        latency = self.end_to_end_seconds.labels(self.task, stage)
        for message in messages:
            latency.observe(max(0.0, done_s - timestamp_s(message)))
        self.count(stage, outcomes)

    def count(self, stage: str, outcomes: Iterable[Outcome]) -> None:
        for outcome in outcomes:
            reason = outcome.tags[0] if outcome.tags else ""
            self.outcomes.labels(self.task, stage, outcome.outcome, reason).inc()
            if reason in LLM_ERROR_REASONS:
                self.llm_errors.labels(self.task, reason).inc()

    def tick(self, app: faust.App, intake: BatchIntake) -> None:
        """Called by a timer in the worker's loop: it is live, and here is the lag (of the
        Faust agents' consumer and of annotate's intake)."""
        self.last_tick = time.monotonic()
        self.ready = not app.rebalancing
        committed = app.monitor.tp_committed_offsets
        lags = {}
        for tp in app.consumer.assignment():
            end = app.consumer.highwater(tp)
            if end is not None:
                lags[tp] = end - committed.get(tp, 0)
        lags.update(intake.lag())
        self.lag.clear()
        for tp, lag in lags.items():
            self.lag.labels(self.task, tp.topic, str(tp.partition)).set(max(lag, 0))

    def health(self) -> tuple[bool, dict]:
        """(healthy, body) for /healthz: live (the loop ticks), ready (consuming)."""
        since_tick = time.monotonic() - self.last_tick
        live = since_tick < LIVE_WITHIN_S
        ready = live and self.ready
        body = {"live": live, "ready": ready, "seconds_since_tick": round(since_tick, 3)}
        return live, body


class ScrapeTimeCollector:
    """Figures read when Prometheus scrapes: the model's version, the LLM's usage and breaker
    (the teacher keeps running totals, so nothing needs updating on the hot path)."""

    def __init__(
        self, task: str, model_version: Callable[[], str], teacher: object | None = None
    ) -> None:
        self.task = task
        self.model_version = model_version
        self.teacher = teacher

    def collect(self) -> Iterable:
        info = InfoMetricFamily("loopline_model", "The student model answering now.")
        info.add_metric([], {"task": self.task, "version": self.model_version()})
        yield info
        if self.teacher is None:
            return
        usage = self.teacher.usage
        requests = CounterMetricFamily(
            "loopline_llm_requests",
            "Calls made to the LLM (failed ones included).",
            labels=["task"],
        )
        requests.add_metric([self.task], usage.requests)
        yield requests
        tokens = CounterMetricFamily(
            "loopline_llm_tokens", "Tokens the LLM calls cost, by kind.", labels=["task", "kind"]
        )
        tokens.add_metric([self.task, "prompt"], usage.prompt_tokens)
        tokens.add_metric([self.task, "completion"], usage.completion_tokens)
        tokens.add_metric([self.task, "cached"], usage.cached_tokens)
        yield tokens
        breaker = GaugeMetricFamily(
            "loopline_llm_breaker_state",
            "The LLM client's circuit breaker: 1 for its current state.",
            labels=["task", "state"],
        )
        current = self.teacher.client.breaker.state
        for state in BREAKER_STATES:
            breaker.add_metric([self.task, state], 1.0 if state == current else 0.0)
        yield breaker


def wsgi_app(metrics: WorkerMetrics) -> Callable:
    """/metrics in Prometheus' text format, /healthz as JSON (503 when not live)."""
    prometheus = make_wsgi_app(metrics.registry)

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return prometheus(environ, start_response)
        if path == "/healthz":
            live, body = metrics.health()
            status = "200 OK" if live else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Scrapes every few seconds would flood the worker's log."""


def serve(metrics: WorkerMetrics, host: str, port: int) -> ThreadingWSGIServer:
    """Start the metrics server in a daemon thread; its port is `server.server_port`."""
    server = make_server(host, port, wsgi_app(metrics), ThreadingWSGIServer, _Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.warning("metrics at http://%s:%d/metrics, health at /healthz", host, server.server_port)
    return server


def register(
    app: faust.App, intake: BatchIntake, metrics: WorkerMetrics, host: str, port: int
) -> None:
    """Serve the metrics once the worker starts (its logging is set up by then), and tick."""

    @app.task
    async def start_server() -> None:
        serve(metrics, host, port)

    @app.timer(interval=TICK_S)
    async def tick() -> None:
        metrics.tick(app, intake)


def logging_config(log_format: str, loglevel: str) -> dict | None:
    """A `logging.config.dictConfig` for JSON lines (None: the default text logs)."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            }
        },
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["json"], "level": level_number(loglevel)},
    }
