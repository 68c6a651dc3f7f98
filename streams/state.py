"""Outcome counters in Redis, exact even when Kafka redelivers.

After a crash, a worker re-processes the offsets it had not committed. Counting every
processed message would then count some twice; instead each partition's highest counted
offset is stored beside the counters and a Lua script, atomically, counts only offsets
above it. Redis holds nothing that cannot be rebuilt: the counts follow from the topics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# KEYS[1]: hash outcome -> count; KEYS[2]: hash "topic:partition" -> highest counted offset;
# KEYS[3]: hash minute (of the consumed message's timestamp) -> LLM tokens.
# ARGV: groups of six (topic:partition, first offset, last offset, comma-separated outcomes,
# LLM tokens, minute): a run of consecutive offsets with the same outcomes, runs of one
# partition in offset order. A run that cost tokens is one offset long (see `runs_of`).
_COUNT_NEW_OFFSETS = """
local counted_up_to, highest = {}, {}
local counted = 0
for i = 1, #ARGV, 6 do
  local tp, outcomes = ARGV[i], ARGV[i + 3]
  local first, last = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local tokens = tonumber(ARGV[i + 4])
  if counted_up_to[tp] == nil then
    counted_up_to[tp] = tonumber(redis.call('HGET', KEYS[2], tp) or '-1')
    highest[tp] = counted_up_to[tp]
  end
  local from = math.max(first, counted_up_to[tp] + 1)
  if last >= from then
    local new = last - from + 1
    for outcome in string.gmatch(outcomes, '[^,]+') do
      redis.call('HINCRBY', KEYS[1], outcome, new)
    end
    if tokens > 0 then
      redis.call('HINCRBY', KEYS[1], 'llm_tokens', tokens)
      redis.call('HINCRBY', KEYS[3], ARGV[i + 5], tokens)
    end
    counted = counted + new
    if last > highest[tp] then highest[tp] = last end
  end
end
for tp, high in pairs(highest) do
  redis.call('HSET', KEYS[2], tp, high)
end
return counted
"""
# Runs per script call when a backlog is written after an outage.
RUNS_PER_CALL = 5000


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


@dataclass(frozen=True)
class Run:
    """Consecutive offsets of one partition with the same outcomes: the ledger's unit. An
    offset that cost LLM tokens is a run of its own, with its tokens and minute."""

    partition: str  # topic:partition
    first: int
    last: int
    names: str  # outcome and tags, comma-separated
    tokens: int = 0
    minute: int = 0


def runs_of(outcomes: Iterable[Outcome], pending: Sequence[Run] = ()) -> list[Run]:
    """`pending` and `outcomes` as runs, by partition and offset; an offset seen twice (Kafka
    redelivered it) is kept once, so one script call never counts it twice. Pure."""
    runs = list(pending) + [
        Run(
            f"{o.topic}:{o.partition}",
            o.offset,
            o.offset,
            ",".join((o.outcome, *o.tags)),
            o.tokens,
            o.minute,
        )
        for o in outcomes
    ]
    merged: list[Run] = []
    for run in sorted(runs, key=lambda r: (r.partition, r.first)):
        previous = merged[-1] if merged and merged[-1].partition == run.partition else None
        if previous is not None and run.first <= previous.last:
            if run.last <= previous.last:
                continue
            run = Run(run.partition, previous.last + 1, run.last, run.names)
        if (
            previous is not None
            and run.first == previous.last + 1
            and run.names == previous.names
            and not run.tokens
            and not previous.tokens
        ):
            merged[-1] = Run(run.partition, previous.first, run.last, run.names)
        else:
            merged.append(run)
    return merged


class OutcomeLedger:
    """Counts per outcome for one stage of one task (e.g. `annotate` of `loopline.banking77.`).

    Redis is not needed to answer items, so an outage must not stop a worker: outcomes that
    cannot be written are kept in memory (as runs of offsets, a few bytes per run) and
    written, exactly once each, by the first `record` after Redis answers again; meanwhile
    Redis is tried at most every `retry_s`. Counts kept in memory are lost if the worker
    dies before Redis returns.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        namespace: str,
        stage: str,
        *,
        retry_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._counts_key = f"loopline:{namespace}{stage}:outcomes"
        self._offsets_key = f"loopline:{namespace}{stage}:offsets"
        self._tokens_key = f"loopline:{namespace}{stage}:tokens_by_minute"
        self._script = client.register_script(_COUNT_NEW_OFFSETS)
        self._retry_s = retry_s
        self._clock = clock
        self._pending: list[Run] = []
        self._retry_at = 0.0

    @property
    def pending(self) -> int:
        """Runs of outcomes waiting for Redis."""
        return len(self._pending)

    async def record(self, outcomes: Iterable[Outcome]) -> int:
        """Count the outcomes of offsets not counted before (and any kept from an outage);
        return how many were new, 0 while Redis cannot be reached."""
        runs = runs_of(outcomes, self._pending)
        if not runs:
            return 0
        if self._pending and self._clock() < self._retry_at:
            self._pending = runs
            return 0
        try:
            counted = await self._write(runs)
        except RedisError as exc:
            if not self._pending:
                log.warning(
                    "cannot write outcome counts to Redis (%s); keeping them in memory and "
                    "answering items as usual until Redis answers again",
                    exc,
                )
            self._pending, self._retry_at = runs, self._clock() + self._retry_s
            return 0
        if self._pending:
            log.warning("Redis answers again: wrote %d runs of outcome counts kept meanwhile",
                        len(self._pending))  # fmt: skip
        self._pending = []
        return counted

    async def _write(self, runs: list[Run]) -> int:
        counted = 0
        for start in range(0, len(runs), RUNS_PER_CALL):
            args: list[str | int] = []
            for run in runs[start : start + RUNS_PER_CALL]:
                args += [run.partition, run.first, run.last, run.names, run.tokens, run.minute]
            keys = [self._counts_key, self._offsets_key, self._tokens_key]
            counted += int(await self._script(keys=keys, args=args))
        return counted

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
