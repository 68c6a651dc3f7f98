"""Outcome counters in Redis, exact even when Kafka redelivers.

After a crash, a worker re-processes the offsets it had not committed. Counting every
processed message would then count some twice; instead each partition's highest counted
offset is stored beside the counters and a Lua script, atomically, counts only offsets
above it. Redis holds nothing that cannot be rebuilt: the counts follow from the topics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import redis.asyncio as aioredis

# KEYS[1]: hash outcome -> count; KEYS[2]: hash "topic:partition" -> highest counted offset;
# KEYS[3]: hash minute (of the consumed message's timestamp) -> LLM tokens.
# ARGV: groups of (topic:partition, offset, comma-separated outcomes, tokens, minute), any order.
_COUNT_NEW_OFFSETS = """
local counted_up_to, highest = {}, {}
local counted = 0
for i = 1, #ARGV, 5 do
  local tp, offset, outcomes = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local tokens = tonumber(ARGV[i + 3])
  if counted_up_to[tp] == nil then
    counted_up_to[tp] = tonumber(redis.call('HGET', KEYS[2], tp) or '-1')
    highest[tp] = counted_up_to[tp]
  end
  if offset > counted_up_to[tp] then
    for outcome in string.gmatch(outcomes, '[^,]+') do
      redis.call('HINCRBY', KEYS[1], outcome, 1)
    end
    if tokens > 0 then
      redis.call('HINCRBY', KEYS[1], 'llm_tokens', tokens)
      redis.call('HINCRBY', KEYS[3], ARGV[i + 4], tokens)
    end
    counted = counted + 1
    if offset > highest[tp] then highest[tp] = offset end
  end
end
for tp, high in pairs(highest) do
  redis.call('HSET', KEYS[2], tp, high)
end
return counted
"""


@dataclass(frozen=True)
class Outcome:
    """What became of one consumed offset: its outcome, plus tags such as `audit`."""

    topic: str
    partition: int
    offset: int
    outcome: str
    tags: tuple[str, ...] = ()
    tokens: int = 0
    minute: int = 0


class OutcomeLedger:
    """Counts per outcome for one stage of one task (e.g. `annotate` of `loopline.banking77.`)."""

    def __init__(self, client: aioredis.Redis, namespace: str, stage: str) -> None:
        self._client = client
        self._counts_key = f"loopline:{namespace}{stage}:outcomes"
        self._offsets_key = f"loopline:{namespace}{stage}:offsets"
        self._tokens_key = f"loopline:{namespace}{stage}:tokens_by_minute"
        self._script = client.register_script(_COUNT_NEW_OFFSETS)

    async def record(self, outcomes: Iterable[Outcome]) -> int:
        """Count the outcomes of offsets not counted before; return how many were new."""
        args: list[str | int] = []
        for item in outcomes:
            names = ",".join((item.outcome, *item.tags))
            args += [f"{item.topic}:{item.partition}", item.offset, names, item.tokens, item.minute]
        if not args:
            return 0
        keys = [self._counts_key, self._offsets_key, self._tokens_key]
        return int(await self._script(keys=keys, args=args))

    async def counts(self) -> dict[str, int]:
        raw = await self._client.hgetall(self._counts_key)
        return {_text(k): int(v) for k, v in sorted(raw.items())}

    async def tokens_by_minute(self) -> dict[int, int]:
        """LLM tokens spent, by the minute (since the epoch) of the requests that cost them."""
        raw = await self._client.hgetall(self._tokens_key)
        return {int(k): int(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}

    async def reset(self) -> None:
        await self._client.delete(self._counts_key, self._offsets_key, self._tokens_key)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
