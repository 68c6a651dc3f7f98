"""Helpers for review tests: review items on Kafka, a review service as a process, tokens."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
from kafka import KafkaProducer

from loopline.schemas import Annotation, RoutedItem, Span, Suggestion, TaskConfig, TextIn
from loopline.streams.codec import encode
from loopline.streams.local.services import free_port, port_is_free
from loopline.streams.review import server
from loopline.streams.settings import Settings
from loopline.streams.topics import ensure_topics
from loopline.streams.worker import stop_process
from tests.integration.streaming import EXAMPLES, kafka_at


def review_items(task: TaskConfig, n: int, example: str = "banking77") -> list[RoutedItem]:
    """n items as the annotate and teach agents route them: gold label in meta, a student
    suggestion (and, for every other item, an LLM one)."""
    rows = [
        json.loads(line)
        for line in (EXAMPLES / example / "test.jsonl").read_text().split("\n")
        if line
    ]
    labels = list(task.labels)
    items = []
    for i in range(n):
        row = rows[i % len(rows)]
        text = TextIn(id=f"item-{i}", text=row["text"], meta={"gold": row.get("label")})
        if task.kind == "ner":
            spans = [Span(**s, score=0.6) for s in row.get("spans", [])[:1]]
            student = Annotation(spans=spans, confidence=0.4)
            llm = Annotation(spans=[Span(**s) for s in row.get("spans", [])], confidence=0.7)
        else:
            wrong = labels[(i + 1) % len(labels)]
            student = Annotation(labels=[wrong], scores={wrong: 0.41}, confidence=0.41)
            first = row.get("label") or row.get("accept", [labels[0]])[0]
            llm = Annotation(labels=[first], scores={first: 0.8}, confidence=0.8)
        suggestions = [Suggestion(source="student", model_version="bow-1", annotation=student)]
        if i % 2 == 0:
            suggestions.append(Suggestion(source="llm", model_version="qwen/v1", annotation=llm))
        items.append(
            RoutedItem(
                id=text.id,
                task=task.name,
                item=text,
                route="review",
                suggestions=suggestions,
                reason="llm_disagrees" if i % 2 == 0 else "low_confidence_no_llm",
                detail="the student and the LLM disagree" if i % 2 == 0 else "student unsure",
                priority=round(1 - student.confidence, 3),
            )
        )
    return items


def send_review_items(bootstrap: str, task: TaskConfig, items: list[RoutedItem]) -> None:
    ensure_topics(kafka_at(bootstrap), task)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    for item in items:
        producer.send(task.topic("review"), key=item.id.encode(), value=encode(item))
    producer.flush()
    producer.close()


def add_token(env: dict, name: str, role: str = "reviewer") -> str:
    """A reviewer's token, made in-process (the CLI command is tested on its own)."""
    from loopline.streams.review.tokens import add_token as make_token

    return make_token(Settings(kafka_bootstrap=env["LOOPLINE_KAFKA_BOOTSTRAP"]), name, role)


class ServiceProcess:
    """`loopline review serve` in a process of its own, as a user runs it."""

    def __init__(self, task_file: Path, env: dict, log: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.task_file, self.env, self.log = task_file, env, log
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> ServiceProcess:
        assert port_is_free(self.port)
        self.process = server.spawn(self.task_file, self.port, self.log, self.env)
        server.wait_ready(self.url, self.process, self.log, timeout_s)
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process:
            stop_process(self.process, grace_s=20)


def records(bootstrap: str, task: TaskConfig, role: str) -> list:
    """(key, decoded JSON value) of every record on one of the task's topics."""
    from loopline.streams.topics import read_to_end

    return [
        (r.key.decode(), json.loads(r.value))
        for r in read_to_end(kafka_at(bootstrap), task.topic(role))
    ]


class Api:
    """A blocking client for tests: `status, body = api.get(path)`; paths under the task."""

    def __init__(self, url: str, token: str | None, task: str) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=30)
        self.prefix = f"/api/v1/tasks/{task}/"

    def get(self, rest: str, **params):
        response = self.http.get(self.prefix + rest, params=params)
        return response.status_code, _body(response)

    def post(self, rest: str, body=None, **kwargs):
        response = self.http.post(self.prefix + rest, json=body, **kwargs)
        return response.status_code, _body(response)

    def next(self, n: int = 1) -> list[dict]:
        status, body = self.get("queue/next", n=n)
        assert status == 200, body
        return body["items"]

    def answer(self, leased: dict, decision: str = "accept", labels=None, spans=None):
        body = {
            "lease_id": leased["lease_id"],
            "id": leased["item"]["id"],
            "decision": decision,
            "labels": labels if labels is not None else [],
            "spans": spans or [],
        }
        return self.post("answers", body)


def _body(response: httpx.Response):
    try:
        return response.json()
    except ValueError:
        return response.text


def gold_label(leased: dict) -> str:
    return leased["item"]["item"]["meta"]["gold"]


def pid_listening_on(port: int) -> int:
    """The process listening on a local TCP port (from Linux's /proc), e.g. the Kafka broker."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd) in inodes:
                return int(fd.parts[2])
        except OSError:
            continue
    raise LookupError(f"no process listens on port {port}")
