"""The LLM teacher's shared state on a real Redis: the answer cache, the daily budget, the rate.

The LLM here is the scripted loopback server (tests/fixtures/llm.py), so each test knows
exactly how many requests reached it.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from loopline.processors.llm import (
    ChatClient,
    Example,
    LLMTeacher,
    RateLimiter,
    ResponseCache,
    TokenBudget,
)
from loopline.schemas import BudgetExhausted, TaskConfig
from tests.fixtures.llm import FakeLLM, chat_reply

pytestmark = pytest.mark.integration

LABELS = {"PlayMusic": "Play a song now.", "GetWeather": "Ask about the weather."}


def task_name() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def teacher(fake: FakeLLM, name: str, **kwargs) -> LLMTeacher:
    task = TaskConfig(name=name, kind="textcat", labels=LABELS, topics={"prefix": "t."})
    return LLMTeacher(task, ChatClient(fake.base_url, "fake-model", retries=0), **kwargs)


def test_a_text_answered_by_one_worker_costs_another_nothing(
    redis_url: str, fake_llm: FakeLLM
) -> None:
    fake_llm.responder = lambda payload: chat_reply('{"label": "GetWeather"}')
    name = task_name()

    async def scenario():
        redis = Redis.from_url(redis_url)
        first = teacher(fake_llm, name, cache=ResponseCache(redis, name, ttl_s=600))
        second = teacher(fake_llm, name, cache=ResponseCache(redis, name, ttl_s=600))
        fresh = await first.answer_one("rain in Oslo?")
        again = await second.answer_one("rain in Oslo?")
        other = await second.answer_one("rain in Bergen?")
        keys = [key async for key in redis.scan_iter(f"loopline:{name}:llm:cache:*")]
        ttl = await redis.ttl(keys[0])
        second.use_examples([Example("sunny?", labels=("GetWeather",))])
        new_prompt = await second.answer_one("rain in Oslo?")
        await redis.aclose()
        return fresh, again, other, keys, ttl, new_prompt, second.usage

    fresh, again, other, keys, ttl, new_prompt, usage = asyncio.run(scenario())
    assert not fresh.cached and fresh.usage.total_tokens == 110
    assert again.cached and again.usage.total_tokens == 0
    assert again.annotation == fresh.annotation
    assert not other.cached and not new_prompt.cached  # other text, other examples: asked
    assert len(fake_llm.requests) == 3
    assert len(keys) == 2 and 0 < ttl <= 600
    assert all(
        key.decode().startswith(f"loopline:{name}:llm:cache:fake-model:textcat.v1:") for key in keys
    )
    assert usage.requests == 2


def test_the_daily_budget_is_shared_settled_and_then_refuses(
    redis_url: str, fake_llm: FakeLLM
) -> None:
    fake_llm.responder = lambda payload: chat_reply(
        '{"label": "PlayMusic"}', prompt_tokens=300, completion_tokens=20
    )
    name = task_name()

    async def scenario():
        redis = Redis.from_url(redis_url)
        budget = TokenBudget(redis, name, tokens_per_day=1000)
        workers = [teacher(fake_llm, name, budget=budget) for _ in range(2)]
        results = []
        for index in range(4):
            results.extend(await workers[index % 2].answer([f"play song {index}"]))
        spent = await budget.spent()
        ttl = await redis.ttl(budget.key())
        await redis.aclose()
        return results, spent, ttl

    results, spent, ttl = asyncio.run(scenario())
    answered = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, BudgetExhausted)]
    assert len(answered) == 3 and len(refused) == 1
    assert spent == 3 * 320  # the reservations were settled to what the server reported
    assert "budget" in str(refused[0]) and refused[0].code == "llm_budget_exhausted"
    assert len(fake_llm.requests) == 3  # the refused item never reached the LLM
    now = datetime.now(UTC)
    seconds_to_midnight = 86400 - (now.hour * 3600 + now.minute * 60 + now.second)
    assert 0 < ttl <= seconds_to_midnight + 3600


def test_concurrent_reservations_never_overspend(redis_url: str) -> None:
    name = task_name()

    async def scenario():
        redis = Redis.from_url(redis_url)
        budget = TokenBudget(redis, name, tokens_per_day=500)
        outcomes = await asyncio.gather(
            *(budget.reserve(100) for _ in range(12)), return_exceptions=True
        )
        spent = await budget.spent()
        await redis.aclose()
        return outcomes, spent

    outcomes, spent = asyncio.run(scenario())
    assert sum(not isinstance(o, Exception) for o in outcomes) == 5
    assert sum(isinstance(o, BudgetExhausted) for o in outcomes) == 7
    assert spent == 500


def test_the_rate_limit_makes_the_next_request_wait(redis_url: str) -> None:
    name = task_name()

    async def scenario():
        redis = Redis.from_url(redis_url)
        limiter = RateLimiter(redis, name, per_second=4.0)
        other_worker = RateLimiter(redis, name, per_second=4.0)
        first = await limiter.try_acquire()
        second = await other_worker.try_acquire()
        await asyncio.sleep(second)
        third = await limiter.try_acquire()
        await redis.aclose()
        return first, second, third

    first, second, third = asyncio.run(scenario())
    assert first == 0.0
    assert 0.0 < second <= 0.25
    assert third == 0.0
