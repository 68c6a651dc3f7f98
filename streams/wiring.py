"""Building runtime parts from Settings: the one place that maps `LOOPLINE_LLM_*` onto the
LLM teacher and its shared state in Redis. Commands and the worker all come through here."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from loopline.processors.llm.budget import RateLimiter, TokenBudget
from loopline.processors.llm.cache import ResponseCache
from loopline.processors.llm.examples import pick_examples
from loopline.processors.llm.prompts import Example
from loopline.processors.llm.teacher import LLMTeacher
from loopline.processors.registry import make
from loopline.schemas import ConfigError, Correction, TaskConfig
from loopline.streams.settings import Settings
from loopline.streams.topics import read_to_end

log = logging.getLogger(__name__)


def llm_arguments(settings: Settings) -> dict[str, Any]:
    """The LLM client's arguments, or a ConfigError saying how to configure an endpoint."""
    if not settings.llm_base_url:
        raise ConfigError(
            "no LLM endpoint: set LOOPLINE_LLM_BASE_URL (e.g. http://127.0.0.1:38080/v1, "
            "which `loopline infra up --llm` serves)"
        )
    return {
        "base_url": settings.llm_base_url,
        "model": settings.llm_model,
        "api_key": settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
        "timeout": settings.llm_timeout_s,
        "max_concurrency": settings.llm_max_concurrency,
        "retries": settings.llm_retries,
    }


def shared_llm_state(task: TaskConfig, settings: Settings, redis: Redis) -> dict[str, Any]:
    """The response cache, and the budget and rate limit when configured, all in Redis."""
    shared: dict[str, Any] = {"cache": ResponseCache(redis, task.name, settings.llm_cache_ttl_s)}
    if settings.llm_daily_token_budget:
        shared["budget"] = TokenBudget(redis, task.name, settings.llm_daily_token_budget)
    if settings.llm_rate_limit_per_s:
        shared["rate_limiter"] = RateLimiter(redis, task.name, settings.llm_rate_limit_per_s)
    return shared


def human_examples(settings: Settings, task: TaskConfig) -> list[Example]:
    """The few human corrections on the task's `corrections` topic the LLM sees as examples."""
    if task.llm.examples == 0:
        return []
    corrections = []
    for record in read_to_end(settings, task.topic("corrections")):
        try:
            corrections.append(Correction.model_validate_json(record.value or b""))
        except ValidationError as exc:
            log.warning(
                "skipping a message on %s that is not a Correction: %s",
                task.topic("corrections"),
                exc.errors()[0]["msg"],
            )
    return pick_examples(corrections, task.llm.examples)


def build_teacher(
    task: TaskConfig, settings: Settings, redis: Redis | None, examples: Sequence[Example] = ()
) -> LLMTeacher:
    shared = shared_llm_state(task, settings, redis) if redis is not None else {}
    return make(
        "loopline.LLMTeacher.v1", task=task, examples=examples, **llm_arguments(settings), **shared
    )
