"""Every topic of a task, declared in one place; agents and commands take them from here.

Names come from the task config (`topics.prefix` + a fixed suffix). Values are raw bytes:
loopline encodes and decodes messages itself (see `codec`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import faust
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError, TopicAlreadyExistsError

from loopline.schemas import ConfigError, ServiceError, TaskConfig
from loopline.schemas.task import TOPIC_SUFFIXES
from loopline.streams.connections import kafka_options
from loopline.streams.settings import Settings

# Compacted topics keep the latest value per key: the source of truth for training data
# and for the current model.
COMPACTED = {"corrections", "models"}
# Kafka's default `message.max.bytes`, for topics whose limit has not been read.
DEFAULT_MAX_MESSAGE_BYTES = 1_048_588


@dataclass(frozen=True)
class TaskTopics:
    """The Faust topic objects of one task, by role."""

    texts: faust.TopicT
    predictions: faust.TopicT
    llm: faust.TopicT
    review: faust.TopicT
    answers: faust.TopicT
    corrections: faust.TopicT
    models: faust.TopicT
    deadletter: faust.TopicT
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    """The largest record every output topic accepts: a larger output becomes a dead letter."""


def declare(
    app: faust.App, task: TaskConfig, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> TaskTopics:
    """Declare the task's topics on a Faust app, as bytes in and bytes out."""
    return TaskTopics(
        max_message_bytes=max_message_bytes,
        **{
            role: app.topic(
                task.topic(role),
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                partitions=task.topics.partitions,
            )
            for role in TOPIC_SUFFIXES
        },
    )


def admin_client(settings: Settings, timeout_s: float = 30.0) -> KafkaAdminClient:
    """A Kafka admin client, or a ServiceError saying how to get a broker."""
    try:
        return KafkaAdminClient(
            **kafka_options(settings),
            client_id="loopline-admin",
            request_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaError as exc:
        raise ServiceError(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc}); start it with "
            "`loopline infra up` or set LOOPLINE_KAFKA_BOOTSTRAP"
        ) from None


def ensure_topics(settings: Settings, task: TaskConfig, *, timeout_s: float = 30.0) -> list[str]:
    """Create the task's topics that do not exist yet; return the names created. Existing ones
    must suit their role (partitions, cleanup policy), else a ConfigError says what to change.

    Done up front (by `worker` and `produce`) so that partition counts and compaction are
    what the task says, not whatever the broker's auto-creation would pick.
    """
    admin = admin_client(settings, timeout_s)
    try:
        existing = set(admin.list_topics())
        if task.topics.input and task.topics.input not in existing:
            raise ConfigError(
                f"the task's input topic {task.topics.input} (topics.input) does not exist: "
                "create it, or remove topics.input to use "
                f"{task.topics.prefix}{TOPIC_SUFFIXES['texts']}"
            )
        present = [task.topic(role) for role in TOPIC_SUFFIXES if task.topic(role) in existing]
        if problems := topic_problems(task, describe(admin, present)):
            raise ConfigError("existing topics do not suit the task:\n- " + "\n- ".join(problems))
        wanted = [
            NewTopic(
                name=task.topic(role),
                num_partitions=task.topics.partitions,
                replication_factor=task.topics.replication_factor,
                topic_configs={"cleanup.policy": "compact"} if role in COMPACTED else {},
            )
            for role in TOPIC_SUFFIXES
            if task.topic(role) not in existing
        ]
        if wanted:
            # Another worker may create them at the same moment.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(wanted, timeout_ms=int(timeout_s * 1000))
        return [topic.name for topic in wanted]
    finally:
        admin.close()


def max_message_bytes(settings: Settings, topics: list[str], *, timeout_s: float = 30.0) -> int:
    """The largest record batch every one of `topics` accepts (their `max.message.bytes`, which
    defaults to the broker's `message.max.bytes`): the most loopline may produce to them."""
    admin = admin_client(settings, timeout_s)
    try:
        configs = topic_configs(admin, topics)
    finally:
        admin.close()
    return min(int(configs[topic]["max.message.bytes"]) for topic in topics)


def topic_configs(admin: KafkaAdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    """Every config of each topic, defaults included: name -> {config: value}."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    described = admin.describe_configs(resources, config_filter="all")["topic"]
    return {name: {key: entry["value"] for key, entry in described[name].items()} for name in names}


@dataclass(frozen=True)
class TopicShape:
    """What loopline checks of a topic that already exists."""

    partitions: int
    cleanup_policy: str


def describe(admin: KafkaAdminClient, names: list[str]) -> dict[str, TopicShape]:
    if not names:
        return {}
    partitions = {topic["name"]: len(topic["partitions"]) for topic in admin.describe_topics(names)}
    configs = topic_configs(admin, names)
    return {name: TopicShape(partitions[name], configs[name]["cleanup.policy"]) for name in names}


def topic_problems(task: TaskConfig, existing: dict[str, TopicShape]) -> list[str]:
    """Why existing topics do not suit their roles, each with what to do. Pure.

    Compacted roles must be `compact` only (a `delete` policy would drop gold corrections and
    models with time); the others must not be compacted (compaction would drop texts and
    outputs that share a key). Fewer partitions than `topics.partitions` would idle workers.
    """
    problems = []
    for role in TOPIC_SUFFIXES:
        name = task.topic(role)
        if name not in existing:
            continue
        shape = existing[name]
        if shape.partitions < task.topics.partitions:
            problems.append(
                f"{name} has {shape.partitions} partition(s), the task asks for "
                f"{task.topics.partitions}: add partitions (kafka-topics.sh --alter --topic "
                f"{name} --partitions {task.topics.partitions}) or set topics.partitions: "
                f"{shape.partitions}"
            )
        policies = set(shape.cleanup_policy.split(","))
        if role in COMPACTED and policies != {"compact"}:
            problems.append(
                f"{name} has cleanup.policy={shape.cleanup_policy}, but {role} must be "
                f"compacted only: kafka-configs.sh --alter --entity-type topics --entity-name "
                f"{name} --add-config cleanup.policy=compact"
            )
        elif role not in COMPACTED and "delete" not in policies:
            problems.append(
                f"{name} has cleanup.policy={shape.cleanup_policy}; compaction would drop "
                f"{role} messages that share a key: set cleanup.policy=delete on it "
                f"(kafka-configs.sh --alter --entity-type topics --entity-name {name} "
                "--add-config cleanup.policy=delete)"
            )
    return problems


def read_to_end(settings: Settings, topic: str, *, timeout_s: float = 30.0) -> list[ConsumerRecord]:
    """Every record on `topic` up to its end at the time of the call (no consumer group)."""
    consumer = KafkaConsumer(**kafka_options(settings), enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return []
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        remaining = {tp: end for tp, end in consumer.end_offsets(partitions).items() if end > 0}
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise ServiceError(f"reading {topic} took longer than {timeout_s:.0f}s")
            for tp, batch in consumer.poll(timeout_ms=500).items():
                records += batch
                if batch and batch[-1].offset + 1 >= remaining.get(tp, 0):
                    remaining.pop(tp, None)
        return records
    finally:
        consumer.close()


def partition_ids(settings: Settings, topic: str) -> list[int]:
    """The partition numbers of `topic` (none if it does not exist)."""
    consumer = KafkaConsumer(**kafka_options(settings), enable_auto_commit=False)
    try:
        return sorted(consumer.partitions_for_topic(topic) or ())
    finally:
        consumer.close()


def wait_for_assignment(
    settings: Settings, group: str, topic: str, members: int = 1, timeout_s: float = 120.0
) -> list[list[int]]:
    """The partitions of `topic` each member of `group` holds, once `members` members hold
    some: from then on the group's workers are consuming."""
    admin = KafkaAdminClient(**kafka_options(settings))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            state, held = _describe_group(admin, group, topic)
            if state == "Stable" and len(held) == members and all(held):
                return held
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"consumer group {group} did not settle with {members} member(s) in "
                    f"{timeout_s:.0f}s (state {state}); see the worker log"
                )
            time.sleep(0.5)
    finally:
        admin.close()


def _describe_group(admin: KafkaAdminClient, group: str, topic: str) -> tuple[str, list[list[int]]]:
    """The group's state and each member's partitions of `topic`; state "unknown" while a
    fresh broker has no group coordinator yet."""
    try:
        description = admin.describe_groups([group])[group]
    except KafkaError as exc:
        if not exc.retriable:
            raise
        return "unknown", []
    held = [_partitions_of(member, topic) for member in description["members"]]
    return description["group_state"], held


def _partitions_of(member: dict, topic: str) -> list[int]:
    assignment = member["member_assignment"]
    if not isinstance(assignment, dict):  # a rebalance has not assigned anything yet
        return []
    return [
        partition
        for entry in assignment["assigned_partitions"]
        if entry["topic"] == topic
        for partition in entry["partitions"]
    ]
