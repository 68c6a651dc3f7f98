"""The model registry: the compacted `models` topic of a task, and its transitions.

Each version has a key of its own (the version id) holding its latest ModelEvent: status
candidate, production, rejected or retired, the figures, the reason, the lineage. The key
`production` holds a copy of the current production version's event, with `history` (the
production versions before it, latest last): workers follow that one key, and `rollback`
steps back through the history. Compaction keeps the latest value of every key, so the
topic is the registry's whole state, and reading it from the start rebuilds it.

Transitions are pure functions returning the (key, event) records to write, version records
before the pointer, so that whoever reads the pointer finds the version's record too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from kafka import KafkaProducer
from pydantic import ValidationError

from loopline.schemas import ConfigError, ModelEvent, TaskConfig
from loopline.streams.codec import encode
from loopline.streams.connections import kafka_options
from loopline.streams.settings import Settings
from loopline.streams.topics import ensure_topics, read_to_end

log = logging.getLogger(__name__)

PRODUCTION_KEY = "production"

Record = tuple[str, ModelEvent]


@dataclass
class RegistryState:
    """Every version's latest event, and the production pointer."""

    versions: dict[str, ModelEvent] = field(default_factory=dict)
    production: ModelEvent | None = None

    def apply(self, key: str, event: ModelEvent) -> None:
        if key == PRODUCTION_KEY:
            self.production = event
        else:
            self.versions[key] = event

    def status(self, version: str) -> str:
        """The pointer decides which version is in production; its own record the rest."""
        if self.production is not None and self.production.version == version:
            return "production"
        status = self.versions[version].status
        return "retired" if status == "production" else status

    def get(self, version: str) -> ModelEvent:
        if version not in self.versions:
            known = ", ".join(list(self.versions)[-5:]) or "none yet"
            raise ConfigError(
                f"no model version {version!r} in the registry; latest: {known} "
                "(see `loopline models list`)"
            )
        return self.versions[version]

    def latest(self) -> ModelEvent | None:
        """The most recently created version, whatever its status."""
        return max(self.versions.values(), key=lambda e: e.created_at, default=None)


def registration(event: ModelEvent) -> list[Record]:
    return [(event.version, event)]


def promotion(state: RegistryState, event: ModelEvent, reason: str) -> list[Record]:
    """Make `event`'s version production; the one it replaces is retired."""
    current = state.production
    promoted = event.model_copy(update={"status": "production", "reason": reason, "history": []})
    records: list[Record] = []
    history: list[str] = []
    if current is not None and current.version != event.version:
        history = [*current.history, current.version]
        retired = state.versions.get(current.version, current).model_copy(
            update={"status": "retired", "reason": f"replaced by {event.version}", "history": []}
        )
        records.append((current.version, retired))
    records.append((event.version, promoted))
    records.append((PRODUCTION_KEY, promoted.model_copy(update={"history": history})))
    return records


def rejection(event: ModelEvent, reason: str) -> list[Record]:
    return [(event.version, event.model_copy(update={"status": "rejected", "reason": reason}))]


def rollback(state: RegistryState) -> list[Record]:
    """Make the previous production version current again; the current one is retired."""
    current = state.production
    if current is None or not current.history:
        raise ConfigError("no earlier production version to roll back to (see `models list`)")
    previous = state.get(current.history[-1])
    restored = previous.model_copy(
        update={"status": "production", "reason": f"rolled back from {current.version}"}
    )
    retired = state.versions.get(current.version, current).model_copy(
        update={"status": "retired", "reason": f"rolled back to {previous.version}", "history": []}
    )
    return [
        (current.version, retired),
        (previous.version, restored.model_copy(update={"history": []})),
        (PRODUCTION_KEY, restored.model_copy(update={"history": current.history[:-1]})),
    ]


# Kafka --------------------------------------------------------------------------------------


def decode_event(topic: str, value: bytes | None) -> ModelEvent | None:
    try:
        return ModelEvent.model_validate_json(value or b"")
    except ValidationError as exc:
        log.warning("skipping a message on %s that is not a ModelEvent: %s", topic, exc)
        return None


def state_of(records: Iterable[tuple[bytes | None, bytes | None]], topic: str) -> RegistryState:
    state = RegistryState()
    for key, value in records:
        event = decode_event(topic, value)
        if key is not None and event is not None:
            state.apply(key.decode("utf-8"), event)
    return state


def read_registry(settings: Settings, task: TaskConfig) -> RegistryState:
    """The registry as the `models` topic holds it now."""
    topic = task.topic("models")
    return state_of(((r.key, r.value) for r in read_to_end(settings, topic)), topic)


def publish(settings: Settings, task: TaskConfig, records: list[Record]) -> None:
    """Write `records` in order and wait until Kafka has them all."""
    ensure_topics(settings, task)
    producer = KafkaProducer(**kafka_options(settings), acks="all")
    try:
        for key, event in records:
            producer.send(task.topic("models"), key=key.encode("utf-8"), value=encode(event))
        producer.flush()
    finally:
        producer.close()
