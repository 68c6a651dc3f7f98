"""Every Kafka and Redis client loopline opens is configured here, from Settings.

One place for addresses and for whatever else a cluster asks of its clients (TLS, SASL): a
client configured anywhere else would miss it. Faust, aiokafka and kafka-python each take
the same facts under different names, hence one function per library.
"""

from __future__ import annotations

import ssl
from typing import Any

import faust
import redis
import redis.asyncio as aioredis
from aiokafka.helpers import create_ssl_context

from loopline.schemas import ConfigError
from loopline.streams.settings import Settings


def check_kafka_security(settings: Settings) -> None:
    """A ConfigError naming the missing setting, before any client tries and fails vaguely."""
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL_"):
        missing = [
            name
            for name, value in (
                ("LOOPLINE_KAFKA_SASL_MECHANISM", settings.kafka_sasl_mechanism),
                ("LOOPLINE_KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
                ("LOOPLINE_KAFKA_SASL_PASSWORD", settings.kafka_sasl_password),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                f"LOOPLINE_KAFKA_SECURITY_PROTOCOL={protocol} needs {', '.join(missing)}"
            )
    elif settings.kafka_sasl_mechanism:
        raise ConfigError(
            "LOOPLINE_KAFKA_SASL_MECHANISM is set but LOOPLINE_KAFKA_SECURITY_PROTOCOL is "
            f"{protocol}: set it to SASL_SSL (or SASL_PLAINTEXT)"
        )
    for name in ("cafile", "certfile", "keyfile"):
        path = getattr(settings, f"kafka_ssl_{name}")
        if path is not None and not path.is_file():
            raise ConfigError(f"LOOPLINE_KAFKA_SSL_{name.upper()}={path}: no such file")
    if (settings.kafka_ssl_certfile is None) != (settings.kafka_ssl_keyfile is None):
        raise ConfigError(
            "a client certificate needs both LOOPLINE_KAFKA_SSL_CERTFILE and "
            "LOOPLINE_KAFKA_SSL_KEYFILE"
        )


def uses_tls(settings: Settings) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def _bootstrap(settings: Settings) -> list[str]:
    return settings.kafka_bootstrap.split(",")


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for aiokafka and Faust, or None without TLS."""
    if not uses_tls(settings):
        return None
    check_kafka_security(settings)
    context = create_ssl_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
        keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        password=_secret(settings.kafka_ssl_key_password),
    )
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def _common(settings: Settings) -> dict[str, Any]:
    """What kafka-python and aiokafka name alike: brokers, protocol, SASL."""
    check_kafka_security(settings)
    options: dict[str, Any] = {
        "bootstrap_servers": _bootstrap(settings),
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_sasl_mechanism:
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": _secret(settings.kafka_sasl_password),
        }
    return options


def kafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient."""
    options = _common(settings)
    if uses_tls(settings):
        options |= {
            "ssl_cafile": _path(settings.kafka_ssl_cafile),
            "ssl_certfile": _path(settings.kafka_ssl_certfile),
            "ssl_keyfile": _path(settings.kafka_ssl_keyfile),
            "ssl_password": _secret(settings.kafka_ssl_key_password),
            "ssl_check_hostname": settings.kafka_ssl_check_hostname,
        }
    return options


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka's AIOKafkaProducer and AIOKafkaConsumer."""
    options = _common(settings)
    if context := ssl_context(settings):
        options["ssl_context"] = context
    return options


def faust_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `faust.App` that say how to reach the brokers."""
    options: dict[str, Any] = {
        "broker": ";".join(f"kafka://{host}" for host in _bootstrap(settings))
    }
    context = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        options["broker_credentials"] = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=_secret(settings.kafka_sasl_password),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,  # SASL_SSL with a context, SASL_PLAINTEXT without
        )
    elif context is not None:
        options["broker_credentials"] = faust.SSLCredentials(context)
    return options


def _path(value: Any) -> str | None:
    return str(value) if value is not None else None


def redis_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """An asyncio Redis client (`options` go to `redis.asyncio.from_url`); connections are
    made lazily, on first use."""
    return aioredis.from_url(settings.redis_url, **options)


def redis_sync_client(settings: Settings, **options: Any) -> redis.Redis:
    """A blocking Redis client, for processes without an event loop (the trainer, commands)."""
    return redis.Redis.from_url(settings.redis_url, **options)
