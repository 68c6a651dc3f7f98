"""Every Kafka and Redis client loopline opens is configured here, from Settings.

One place for addresses and for whatever else a cluster asks of its clients (TLS, SASL): a
client configured anywhere else would miss it. Faust, aiokafka and kafka-python each take
the same facts under different names, hence one function per library.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis

from loopline.streams.settings import Settings


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient."""
    return {"bootstrap_servers": settings.kafka_bootstrap.split(",")}


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka's AIOKafkaProducer and AIOKafkaConsumer."""
    return {"bootstrap_servers": settings.kafka_bootstrap.split(",")}


def faust_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `faust.App` that say how to reach the brokers."""
    return {"broker": ";".join(f"kafka://{host}" for host in settings.kafka_bootstrap.split(","))}


def redis_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """An asyncio Redis client (`options` go to `redis.asyncio.from_url`); connections are
    made lazily, on first use."""
    return aioredis.from_url(settings.redis_url, **options)


def redis_sync_client(settings: Settings, **options: Any) -> redis.Redis:
    """A blocking Redis client, for processes without an event loop (the trainer, commands)."""
    return redis.Redis.from_url(settings.redis_url, **options)
