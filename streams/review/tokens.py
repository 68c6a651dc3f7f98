"""Reviewers' bearer tokens: only a hash is stored, on a compacted Kafka topic.

Kafka, not Redis: tokens must survive a FLUSHALL and be shared by every service instance.
The record key is the reviewer's name, so adding a token again replaces the old one and
revoking writes a tombstone; every service follows the topic and forgets a revoked token
within a second. Tokens are 256 random bits, so a plain SHA-256 of them is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
from datetime import UTC, datetime
from typing import Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from pydantic import BaseModel, ConfigDict, ValidationError

from loopline.schemas import ConfigError
from loopline.streams.connections import aiokafka_options, kafka_options
from loopline.streams.settings import Settings
from loopline.streams.topics import admin_client, read_to_end

log = logging.getLogger(__name__)

Role = Literal["reviewer", "admin"]
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
TOKEN_PREFIX = "llr_"


class TokenRecord(BaseModel):
    """The value on the tokens topic (key: the reviewer's name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: Role
    sha256: str
    created_at: datetime


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ConfigError(
            f"reviewer name {name!r} is not allowed: use 1-64 letters, digits, '_', '.', '@' or '-'"
        )
    return name


class TokenStore:
    """Token hash -> (name, role), as of the records applied so far."""

    def __init__(self) -> None:
        self._by_hash: dict[str, TokenRecord] = {}
        self._by_name: dict[str, str] = {}

    def apply(self, name: str, value: bytes | None) -> None:
        if old := self._by_name.pop(name, None):
            self._by_hash.pop(old, None)
        if value is None:
            return
        try:
            record = TokenRecord.model_validate_json(value)
        except ValidationError:
            log.warning("ignoring a record for %r on the tokens topic that is not a token", name)
            return
        self._by_hash[record.sha256] = record
        self._by_name[name] = record.sha256

    def lookup(self, token: str) -> TokenRecord | None:
        return self._by_hash.get(token_hash(token))

    def roles(self) -> dict[str, Role]:
        """Reviewer name -> role, of the tokens in force."""
        return {name: self._by_hash[h].role for name, h in sorted(self._by_name.items())}


def ensure_tokens_topic(settings: Settings) -> None:
    """The compacted tokens topic: one partition, as many replicas as brokers allow (<= 3)."""
    admin = admin_client(settings)
    try:
        if settings.review_tokens_topic in admin.list_topics():
            return
        replicas = min(3, len(admin.describe_cluster()["brokers"]))
        topic = NewTopic(
            settings.review_tokens_topic, 1, replicas, topic_configs={"cleanup.policy": "compact"}
        )
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics([topic])
    finally:
        admin.close()


def _send(settings: Settings, name: str, value: bytes | None) -> None:
    producer = KafkaProducer(**kafka_options(settings), acks="all")
    try:
        producer.send(settings.review_tokens_topic, key=name.encode(), value=value).get(30)
    finally:
        producer.close()


def add_token(settings: Settings, name: str, role: Role) -> str:
    """A new token for `name` (replacing any earlier one); only its hash is written."""
    ensure_tokens_topic(settings)
    token = new_token()
    record = TokenRecord(
        name=check_name(name), role=role, sha256=token_hash(token), created_at=datetime.now(UTC)
    )
    _send(settings, name, record.model_dump_json().encode())
    return token


def current_tokens(settings: Settings) -> TokenStore:
    ensure_tokens_topic(settings)
    store = TokenStore()
    for record in read_to_end(settings, settings.review_tokens_topic):
        store.apply(record.key.decode(), record.value)
    return store


def revoke_token(settings: Settings, name: str) -> None:
    if name not in current_tokens(settings).roles():
        raise ConfigError(
            f"no token for reviewer {name!r}; `loopline review token list` shows them"
        )
    _send(settings, name, None)


class TokenFollower:
    """Keeps a TokenStore current with the tokens topic, from its start."""

    def __init__(self, settings: Settings, store: TokenStore) -> None:
        self.settings = settings
        self.store = store
        self.caught_up = asyncio.Event()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(**aiokafka_options(self.settings), enable_auto_commit=False)
        await consumer.start()
        try:
            partition = TopicPartition(self.settings.review_tokens_topic, 0)
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            end = (await consumer.end_offsets([partition]))[partition]
            while True:
                if await consumer.position(partition) >= end:
                    self.caught_up.set()
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        self.store.apply(record.key.decode(), record.value)
        finally:
            await consumer.stop()
