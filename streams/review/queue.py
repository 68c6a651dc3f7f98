"""The review queue in Redis: pending items, leases, answers, decisions. Rebuildable.

Redis holds a projection of three topics (`review`, `answers`, `corrections`) plus the
leases, which exist nowhere else. Every change is a Lua script, so each is atomic: two
service instances on one Redis can never lease one item twice. The projection remembers,
per topic partition, the next offset to apply (in the same script as the change), and a
`generation` marker: after FLUSHALL (or on a new Redis) the marker is gone, `next` answers
"rebuilding", and the ingest reads the topics again from the start before it serves again.

Keys live under `loopline:<topic prefix>review:` (one Redis, not a cluster: the scripts
build keys from that namespace).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from loopline.schemas import RoutedItem, Suggestion

# Scores order the pending set: higher priority first, then older. Priorities in [0, 1]
# are kept to 1/1000; a millisecond timestamp fits below 2**42 until the year 2109, and the
# whole score stays an exact integer in a double.
_PRIORITY_STEPS = 1000
_TIME_SPAN = 2**42


def queue_score(priority: float, routed_ms: int) -> int:
    """Lower scores are served first: by priority (higher first), then age (older first)."""
    step = round(min(max(priority, 0.0), 1.0) * _PRIORITY_STEPS)
    return (_PRIORITY_STEPS - step) * _TIME_SPAN + routed_ms


def merge_routed(copies: Sequence[RoutedItem]) -> RoutedItem:
    """One entry for an id routed more than once (annotate, then teach): every distinct
    suggestion in the order first seen, the highest priority, the latest reason, every
    reason's words."""
    latest = copies[-1]
    suggestions: dict[tuple[str, str], Suggestion] = {}
    for copy in copies:
        for suggestion in copy.suggestions:
            suggestions[(suggestion.source, suggestion.model_version)] = suggestion
    details = dict.fromkeys(copy.detail for copy in copies if copy.detail)
    return latest.model_copy(
        update={
            "suggestions": list(suggestions.values()),
            "priority": max(copy.priority for copy in copies),
            "detail": "; ".join(details),
        }
    )


# Shared by the scripts: key names, and returning an item to the queue.
_PRELUDE = """
local ns = ARGV[1]
local function k(name) return ns .. name end
local function requeue(id)
  if redis.call('HEXISTS', k('decided'), id) == 1 then return end
  if redis.call('HEXISTS', k('held'), id) == 1 then return end
  local score = redis.call('HGET', k('score'), id)
  if score then redis.call('ZADD', k('pending'), score, id) end
end
local function drop_lease(lease)
  local id = redis.call('HGET', k('lease:' .. lease), 'id')
  redis.call('DEL', k('lease:' .. lease))
  redis.call('ZREM', k('leases'), lease)
  if id and redis.call('HGET', k('held'), id) == lease then
    redis.call('HDEL', k('held'), id)
  end
  return id
end
local function reclaim_expired(now)
  local expired = redis.call('ZRANGEBYSCORE', k('leases'), '-inf', now, 'LIMIT', 0, 200)
  for _, lease in ipairs(expired) do
    local id = drop_lease(lease)
    -- an answer half-written under it is finished by the outbox sweep, not answered again
    if id and redis.call('EXISTS', k('write:' .. lease .. ':0')) == 0 then requeue(id) end
  end
end
-- 1 when the lease is held (by `reviewer`, unless it is ''), 0 when not held, -1 someone else's
local function held_by(lease, reviewer, now)
  local expires = tonumber(redis.call('ZSCORE', k('leases'), lease) or '0')
  if expires <= now then return 0 end
  if reviewer ~= '' and redis.call('HGET', k('lease:' .. lease), 'reviewer') ~= reviewer then
    return -1
  end
  return 1
end
local function mark_decided(id, key)
  redis.call('HSET', k('decided'), id, key)
  redis.call('ZREM', k('pending'), id)
  redis.call('ZREM', k('since'), id)
end
"""

# ARGV: ns, reviewer, now_ms, ttl_ms, n, lease ids... -> {} when not ready, else
# {'ok', {lease, id, expires_ms, {routed json...}}...}
_LEASE = (
    _PRELUDE
    + """
if redis.call('HGET', k('gen'), 'ready') ~= '1' then return {'rebuilding'} end
local reviewer, now, ttl, n = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
reclaim_expired(now)
local out = {'ok'}
local rank, scanned = 0, 0
while #out - 1 < n and scanned < 2000 do
  local ids = redis.call('ZRANGE', k('pending'), rank, rank + 49)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    scanned = scanned + 1
    if #out - 1 < n and redis.call('HEXISTS', k('answers:' .. id), reviewer) == 0 then
      local lease = ARGV[5 + #out]
      redis.call('ZREM', k('pending'), id)
      redis.call('ZADD', k('leases'), now + ttl, lease)
      redis.call('HSET', k('lease:' .. lease), 'id', id, 'reviewer', reviewer, 'granted', now)
      redis.call('HSET', k('held'), id, lease)
      table.insert(out, {lease, id, now + ttl, redis.call('LRANGE', k('routed:' .. id), 0, -1)})
    else
      rank = rank + 1
    end
  end
end
return out
"""
)

# ARGV: ns, lease, reviewer ('' for anyone), now_ms, ttl_ms -> new expiry, 0 unknown, -1 not yours
_RENEW = (
    _PRELUDE
    + """
local lease, now = ARGV[2], tonumber(ARGV[4])
local held = held_by(lease, ARGV[3], now)
if held ~= 1 then return held end
redis.call('ZADD', k('leases'), now + tonumber(ARGV[5]), lease)
return now + tonumber(ARGV[5])
"""
)

# ARGV: ns, lease, reviewer ('' for anyone), now_ms -> 1 released, 0 unknown, -1 not yours
_RELEASE = (
    _PRELUDE
    + """
local lease = ARGV[2]
local held = held_by(lease, ARGV[3], tonumber(ARGV[4]))
if held ~= 1 then return held end
local id = drop_lease(lease)
if id then requeue(id) end
return 1
"""
)

# Everything answering needs, in one round trip. ARGV: ns, lease, reviewer, id, now_ms,
# min_ttl_ms -> {routed json list, done json or '', outbox entry or '', granted ms (0 if the
# lease is not held by the reviewer for the item; it then lasts at least min_ttl more),
# {reviewer, answer...}, decided key or ''}
_PREPARE = (
    _PRELUDE
    + """
local lease, reviewer, id, now = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local done = redis.call('GET', k('done:' .. lease))
local in_flight = redis.call('GET', k('write:' .. lease .. ':0'))
local granted = 0
local expires = tonumber(redis.call('ZSCORE', k('leases'), lease) or '0')
if expires > now then
  local held = redis.call('HMGET', k('lease:' .. lease), 'id', 'reviewer', 'granted')
  if held[1] == id and held[2] == reviewer then
    granted = tonumber(held[3])
    if expires < now + tonumber(ARGV[6]) then
      redis.call('ZADD', k('leases'), now + tonumber(ARGV[6]), lease)
    end
  end
end
return {
  redis.call('LRANGE', k('routed:' .. id), 0, -1),
  done or '',
  in_flight or '',
  granted,
  redis.call('HGETALL', k('answers:' .. id)),
  redis.call('HGET', k('decided'), id) or '',
}
"""
)

# ARGV: ns, write_id, now_ms, payload -> false when stored now, or the payload an earlier
# attempt stored under write_id (a retry sends exactly the same bytes)
_BEGIN_WRITE = (
    _PRELUDE
    + """
local stored = redis.call('GET', k('write:' .. ARGV[2]))
if stored then return stored end
redis.call('SET', k('write:' .. ARGV[2]), ARGV[4])
redis.call('ZADD', k('outbox'), ARGV[3], ARGV[2])
return false
"""
)

# Apply answers to the projection, each once (by answer id): record it, drop its lease, mark
# the item decided or return it to the queue. ARGV: ns, generation, tp ('' outside the
# ingest: no generation or offset check), then per answer: answer_id, id, reviewer, compact
# json, decided key ('' if not decided), lease ('' if none), done json ('' if none), write
# id ('' if none), offset
_APPLY_ANSWERS = (
    _PRELUDE
    + """
local tp = ARGV[3]
local next_offset = 0
if tp ~= '' then
  if redis.call('HGET', k('gen'), 'generation') ~= ARGV[2] then return -1 end
  next_offset = tonumber(redis.call('HGET', k('offsets'), tp) or '0')
end
for i = 4, #ARGV, 9 do
  local answer_id, id, reviewer, compact = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local decided, lease, done, write_id = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local offset = tonumber(ARGV[i + 8])
  -- the ingest leaves an answer whose write is still in the outbox to that write
  local mine = tp == '' or redis.call('EXISTS', k('write:' .. answer_id)) == 0
  if (tp == '' or offset >= next_offset) and mine then
    if redis.call('SADD', k('applied'), answer_id) == 1 then
      local new = cjson.decode(compact)
      local old = redis.call('HGET', k('answers:' .. id), reviewer)
      if old then
        old = cjson.decode(old)
        redis.call('HINCRBY', k('counts'), reviewer .. ':' .. old.decision, -1)
        redis.call('HINCRBY', k('counts'), reviewer .. ':kept', -old.kept)
      else
        redis.call('HINCRBY', k('counts'), reviewer .. ':answers', 1)
        redis.call('HINCRBY', k('counts'), '*:answers', 1)
        redis.call('SADD', k('reviewers'), reviewer)
      end
      redis.call('HINCRBY', k('counts'), reviewer .. ':' .. new.decision, 1)
      redis.call('HINCRBY', k('counts'), reviewer .. ':kept', new.kept)
      redis.call('HSET', k('answers:' .. id), reviewer, compact)
      if redis.call('HLEN', k('answers:' .. id)) >= 2 then redis.call('SADD', k('multi'), id) end
    end
    if lease ~= '' then drop_lease(lease) end
    if decided ~= '' then mark_decided(id, decided) else requeue(id) end
    if done ~= '' then redis.call('SET', k('done:' .. lease), done, 'EX', 86400) end
    if write_id ~= '' then
      redis.call('DEL', k('write:' .. write_id))
      redis.call('ZREM', k('outbox'), write_id)
    end
  end
  if tp ~= '' and offset >= next_offset then next_offset = offset + 1 end
end
if tp ~= '' then redis.call('HSET', k('offsets'), tp, next_offset) end
return 1
"""
)

# ARGV: ns, generation, tp, then (offset, id, routed json, score, routed_ms) * n
_APPLY_REVIEW = (
    _PRELUDE
    + """
if redis.call('HGET', k('gen'), 'generation') ~= ARGV[2] then return -1 end
local tp = ARGV[3]
local next_offset = tonumber(redis.call('HGET', k('offsets'), tp) or '0')
local applied = 0
for i = 4, #ARGV, 5 do
  local offset, id = tonumber(ARGV[i]), ARGV[i + 1]
  if offset >= next_offset then
    next_offset = offset + 1
    if redis.call('HEXISTS', k('decided'), id) == 0 then
      redis.call('RPUSH', k('routed:' .. id), ARGV[i + 2])
      local score = tonumber(ARGV[i + 3])
      local old = tonumber(redis.call('HGET', k('score'), id) or ARGV[i + 3])
      if old < score then score = old end
      redis.call('HSET', k('score'), id, score)
      redis.call('ZADD', k('since'), 'NX', ARGV[i + 4], id)
      if redis.call('ZSCORE', k('pending'), id) then
        redis.call('ZADD', k('pending'), score, id)
      else
        requeue(id)
      end
      applied = applied + 1
    end
  end
end
redis.call('HSET', k('offsets'), tp, next_offset)
return applied
"""
)

# ARGV: ns, generation, tp, then (offset, id, decided key) * n
_APPLY_DECIDED = (
    _PRELUDE
    + """
if redis.call('HGET', k('gen'), 'generation') ~= ARGV[2] then return -1 end
local tp = ARGV[3]
local next_offset = tonumber(redis.call('HGET', k('offsets'), tp) or '0')
for i = 4, #ARGV, 3 do
  if tonumber(ARGV[i]) >= next_offset then
    next_offset = tonumber(ARGV[i]) + 1
    mark_decided(ARGV[i + 1], ARGV[i + 2])
  end
end
redis.call('HSET', k('offsets'), tp, next_offset)
return 1
"""
)

# ARGV: ns, new generation -> the current generation (a new one, not ready, if none)
_GENERATION = (
    _PRELUDE
    + """
if redis.call('HSETNX', k('gen'), 'generation', ARGV[2]) == 1 then
  redis.call('HSET', k('gen'), 'ready', '0')
end
return redis.call('HGET', k('gen'), 'generation')
"""
)


@dataclass(frozen=True)
class Lease:
    lease_id: str
    item: RoutedItem
    expires_ms: int


@dataclass(frozen=True)
class HeldAnswer:
    """One reviewer's answer as the projection keeps it (for majorities and agreement)."""

    reviewer: str
    key: str
    decision: str
    kept: bool
    time_ms: int

    def compact(self) -> str:
        return json.dumps(
            {"key": self.key, "decision": self.decision, "kept": int(self.kept), "t": self.time_ms}
        )

    @classmethod
    def parse(cls, reviewer: str, raw: str) -> HeldAnswer:
        data = json.loads(raw)
        return cls(reviewer, data["key"], data["decision"], bool(data["kept"]), data["t"])


@dataclass(frozen=True)
class AppliedAnswer:
    """An answer to record: from the API (with its lease, response and outbox entry) or
    from the `answers` topic (with its offset)."""

    answer_id: str
    item_id: str
    held: HeldAnswer
    decided: str | None = None
    lease_id: str = ""
    done: dict[str, Any] | None = None
    write_id: str = ""
    offset: int = -1


@dataclass(frozen=True)
class Prepared:
    item: RoutedItem | None
    done: dict[str, Any] | None
    in_flight: dict[str, Any] | None
    granted_ms: int
    answers: list[HeldAnswer]
    decided: str | None


class Rebuilding(Exception):
    """The projection is being rebuilt from the topics; nothing can be leased yet."""


def now_ms() -> int:
    return int(time.time() * 1000)


class ReviewQueue:
    """The review queue of one task in Redis."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.client = client
        self.ns = f"loopline:{namespace}review:"
        register = client.register_script
        self._lease = register(_LEASE)
        self._renew = register(_RENEW)
        self._release = register(_RELEASE)
        self._prepare = register(_PREPARE)
        self._begin = register(_BEGIN_WRITE)
        self._apply_answers = register(_APPLY_ANSWERS)
        self._apply_review = register(_APPLY_REVIEW)
        self._apply_decided = register(_APPLY_DECIDED)
        self._generation = register(_GENERATION)

    def key(self, name: str) -> str:
        return self.ns + name

    async def _run(self, script: Any, *args: Any) -> Any:
        return await script(keys=[], args=[self.ns, *args])

    # leases -----------------------------------------------------------------------------

    async def lease(self, reviewer: str, n: int, ttl_s: float, lease_ids: list[str]) -> list[Lease]:
        """Up to n pending items for `reviewer` (none they answered before), each leased."""
        result = await self._run(self._lease, reviewer, now_ms(), int(ttl_s * 1000), n, *lease_ids)
        if _text(result[0]) == "rebuilding":
            raise Rebuilding
        return [
            Lease(
                _text(lease),
                merge_routed([RoutedItem.model_validate_json(raw) for raw in routed]),
                int(expires),
            )
            for lease, _id, expires, routed in result[1:]
        ]

    async def renew(self, lease_id: str, reviewer: str, ttl_s: float) -> int:
        """The new expiry (ms), 0 if the lease is not held, -1 if it is someone else's."""
        return int(await self._run(self._renew, lease_id, reviewer, now_ms(), int(ttl_s * 1000)))

    async def release(self, lease_id: str, reviewer: str) -> int:
        """1 released (the item is pending again), 0 not held, -1 someone else's."""
        return int(await self._run(self._release, lease_id, reviewer, now_ms()))

    async def prepare(self, lease_id: str, reviewer: str, item_id: str, min_s: float) -> Prepared:
        """What answering `item_id` under `lease_id` needs to know, in one round trip; a
        lease the reviewer holds then lasts at least `min_s` more."""
        routed, done, in_flight, granted, answers, decided = await self._run(
            self._prepare, lease_id, reviewer, item_id, now_ms(), int(min_s * 1000)
        )
        held = [
            HeldAnswer.parse(_text(name), _text(raw))
            for name, raw in zip(answers[::2], answers[1::2])
        ]
        return Prepared(
            item=merge_routed([RoutedItem.model_validate_json(r) for r in routed])
            if routed
            else None,
            done=json.loads(done) if done else None,
            in_flight=json.loads(in_flight) if in_flight else None,
            granted_ms=int(granted),
            answers=sorted(held, key=lambda a: (a.time_ms, a.reviewer)),
            decided=_text(decided) or None,
        )

    async def leased_item(self, item_id: str) -> RoutedItem | None:
        routed = await self.client.lrange(self.key(f"routed:{item_id}"), 0, -1)
        return merge_routed([RoutedItem.model_validate_json(r) for r in routed]) if routed else None

    # answers ----------------------------------------------------------------------------

    async def begin_write(self, write_id: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Put a write in the outbox; None, or the one an earlier attempt put there."""
        stored = await self._run(self._begin, write_id, now_ms(), json.dumps(payload))
        return json.loads(stored) if stored else None

    async def stored_write(self, write_id: str) -> dict[str, Any] | None:
        raw = await self.client.get(self.key(f"write:{write_id}"))
        return json.loads(raw) if raw else None

    async def writes_older_than(self, age_s: float) -> list[str]:
        """Outbox entries a crashed or failed attempt left behind."""
        cutoff = now_ms() - int(age_s * 1000)
        return [_text(w) for w in await self.client.zrangebyscore(self.key("outbox"), 0, cutoff)]

    async def apply_answers(
        self, answers: Sequence[AppliedAnswer], position: tuple[str, str] | None = None
    ) -> bool:
        """Apply answers in order; `position` (generation, topic:partition) makes it the
        ingest's, guarded by offsets. False when the generation changed (Redis flushed)."""
        generation, tp = position or ("", "")
        args: list[Any] = []
        for a in answers:
            args += [
                a.answer_id,
                a.item_id,
                a.held.reviewer,
                a.held.compact(),
                a.decided or "",
                a.lease_id,
                json.dumps(a.done) if a.done else "",
                a.write_id,
                a.offset,
            ]
        return int(await self._run(self._apply_answers, generation, tp, *args)) >= 0

    async def is_applied(self, answer_id: str) -> bool:
        return bool(await self.client.sismember(self.key("applied"), answer_id))

    # the projection (ingest) ------------------------------------------------------------

    async def generation(self, candidate: str) -> str:
        """The current generation; `candidate` becomes it (not ready) when Redis has none."""
        return _text(await self._run(self._generation, candidate))

    async def current_generation(self) -> str | None:
        value = await self.client.hget(self.key("gen"), "generation")
        return _text(value) if value is not None else None

    async def mark_ready(self, generation: str) -> None:
        if await self.current_generation() == generation:
            await self.client.hset(self.key("gen"), "ready", "1")

    async def is_ready(self) -> bool:
        return _text(await self.client.hget(self.key("gen"), "ready") or b"0") == "1"

    async def offsets(self) -> dict[str, int]:
        raw = await self.client.hgetall(self.key("offsets"))
        return {_text(tp): int(offset) for tp, offset in raw.items()}

    async def apply_review(
        self, generation: str, tp: str, records: Sequence[tuple[int, RoutedItem, bytes, int]]
    ) -> bool:
        """Add routed items (offset, item, raw value, timestamp ms); False when the
        generation changed under us (Redis was flushed)."""
        args: list[Any] = []
        for offset, item, raw, routed_ms in records:
            args += [offset, item.id, raw, queue_score(item.priority, routed_ms), routed_ms]
        return int(await self._run(self._apply_review, generation, tp, *args)) >= 0

    async def apply_decided(
        self, generation: str, tp: str, records: Sequence[tuple[int, str, str]]
    ) -> bool:
        """Mark items decided (offset, id, answer key) from gold corrections."""
        args = [value for record in records for value in record]
        return int(await self._run(self._apply_decided, generation, tp, *args)) >= 0

    # figures ----------------------------------------------------------------------------

    async def counts(self) -> dict[str, Any]:
        now = now_ms()
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zcard(self.key("pending"))
            pipe.zcount(self.key("leases"), now + 1, "+inf")
            pipe.hlen(self.key("decided"))
            pipe.hgetall(self.key("counts"))
            pipe.zrange(self.key("since"), 0, 0, withscores=True)
            pipe.smembers(self.key("multi"))
            pending, leased, decided, counts, oldest, multi = await pipe.execute()
        return {
            "pending": pending,
            "leased": leased,
            "decided": decided,
            "counts": {_text(k): int(v) for k, v in counts.items()},
            "oldest_ms": int(oldest[0][1]) if oldest else None,
            "multi": [_text(m) for m in multi],
        }

    async def answers_by_item(self, item_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """item -> reviewer -> answer key, for agreement."""
        async with self.client.pipeline(transaction=False) as pipe:
            for item_id in item_ids:
                pipe.hgetall(self.key(f"answers:{item_id}"))
            rows = await pipe.execute()
        return {
            item_id: {_text(r): json.loads(v)["key"] for r, v in row.items()}
            for item_id, row in zip(item_ids, rows)
        }

    async def pending_items(self, limit: int | None = None) -> list[RoutedItem]:
        """Pending items in serving order (for export)."""
        ids = await self.client.zrange(self.key("pending"), 0, -1 if limit is None else limit - 1)
        items = []
        for item_id in ids:
            item = await self.leased_item(_text(item_id))
            if item is not None:
                items.append(item)
        return items


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
