"""Limits shared by every worker through Redis: a daily token budget and a request rate.

Both are atomic Lua scripts, so workers never overspend between a check and an update.
The budget is reserved before a call (an estimate) and settled after it (the tokens the
server reported); it resets at midnight UTC. When it is spent, calls raise BudgetExhausted
and the caller routes the item to review: nothing is dropped. If Redis cannot be reached
the limits cannot be kept, so calls fail (LLMLimitsUnavailable: the item goes to review with
that reason) instead of spending blindly, until Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from redis.exceptions import RedisError

from loopline.schemas import BudgetExhausted, LLMLimitsUnavailable

log = logging.getLogger(__name__)

RESERVE = """
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if spent + amount > tonumber(ARGV[2]) then
  return {0, spent}
end
spent = redis.call('INCRBY', KEYS[1], amount)
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return {1, spent}
"""

TAKE_TOKEN = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or t
tokens = math.min(burst, tokens + math.max(0, t - ts) * rate)
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(t))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait_ms
"""


@dataclass(frozen=True)
class Reservation:
    key: str
    tokens: int
    expire_at: int


class TokenBudget:
    """Tokens per UTC day for one task, shared by all workers."""

    def __init__(
        self,
        redis: Redis,
        task: str,
        tokens_per_day: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.redis = redis
        self.task = task
        self.tokens_per_day = tokens_per_day
        self._clock = clock
        self._reserve = redis.register_script(RESERVE)

    def key(self, day: datetime | None = None) -> str:
        day = day or self._clock()
        return f"loopline:{self.task}:llm:budget:{day.strftime('%Y-%m-%d')}"

    async def reserve(self, tokens: int) -> Reservation:
        """Set aside `tokens` of today's budget, or raise BudgetExhausted."""
        now = self._clock()
        expire_at = _end_of_day(now) + 3600  # kept an hour past midnight, for inspection
        key = self.key(now)
        try:
            granted, spent = await self._reserve(
                keys=[key], args=[tokens, self.tokens_per_day, expire_at]
            )
        except RedisError as exc:
            raise LLMLimitsUnavailable(
                f"cannot check the shared token budget in Redis ({exc}): no LLM call is made "
                "without it; items go to review until Redis answers again"
            ) from exc
        if not granted:
            raise BudgetExhausted(
                f"the daily LLM token budget of task {self.task!r} is spent ({int(spent)} of "
                f"{self.tokens_per_day} tokens used today, UTC; this call needs ~{tokens}): "
                "items go to review until midnight UTC, or raise LOOPLINE_LLM_DAILY_TOKEN_BUDGET"
            )
        return Reservation(key=key, tokens=tokens, expire_at=expire_at)

    async def settle(self, reservation: Reservation, used_tokens: int) -> None:
        """Replace the estimate with the tokens the call really used (0 if it failed)."""
        difference = used_tokens - reservation.tokens
        if difference == 0:
            return
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incrby(reservation.key, difference)
                pipe.expireat(reservation.key, reservation.expire_at)
                await pipe.execute()
        except RedisError as exc:
            # The call was made and answered: keep its answer. The estimate stays reserved,
            # which errs on the side of spending less.
            log.warning("cannot settle a token reservation in Redis (%s); the estimate stays", exc)

    async def spent(self) -> int:
        return int(await self.redis.get(self.key()) or 0)


class RateLimiter:
    """At most `per_second` requests per second over all workers (a token bucket in Redis)."""

    def __init__(self, redis: Redis, task: str, per_second: float, burst: int = 1) -> None:
        self.redis = redis
        self.key = f"loopline:{task}:llm:rate"
        self.per_second = per_second
        self.burst = burst
        self._take = redis.register_script(TAKE_TOKEN)

    async def __call__(self) -> None:
        """Wait until a request may go."""
        while wait_s := await self.try_acquire():
            await asyncio.sleep(wait_s)

    async def try_acquire(self) -> float:
        """Take a request slot now (0.0), or say how many seconds until one is free."""
        try:
            wait_ms = await self._take(keys=[self.key], args=[self.per_second, self.burst])
        except RedisError as exc:
            raise LLMLimitsUnavailable(
                f"cannot check the shared LLM rate limit in Redis ({exc}): no LLM call is made "
                "without it; items go to review until Redis answers again"
            ) from exc
        return int(wait_ms) / 1000


def _end_of_day(now: datetime) -> int:
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return int(midnight.timestamp())
