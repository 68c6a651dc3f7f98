"""A shared cache of LLM answers in Redis: a text seen before costs no request and no tokens.

Keys are ``loopline:<task>:llm:cache:<model>:<prompt version>:<prompt fingerprint>:<text hash>``,
so an answer is reused only for the same model, prompt wording, labels and examples. The
cache is rebuildable state: when Redis fails, calls go on uncached (with a warning).
"""

from __future__ import annotations

import hashlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
DEFAULT_TTL_S = 7 * 24 * 3600


class ResponseCache:
    def __init__(self, redis: Redis, task: str, ttl_s: int = DEFAULT_TTL_S) -> None:
        self.redis = redis
        self.prefix = f"loopline:{task}:llm:cache"
        self.ttl_s = ttl_s

    def key(self, model: str, prompt_version: str, fingerprint: str, text: str) -> str:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
        return f"{self.prefix}:{model}:{prompt_version}:{fingerprint}:{digest}"

    async def get(self, key: str) -> str | None:
        try:
            value = await self.redis.get(key)
        except RedisError as exc:
            log.warning("LLM cache lookup failed, calling the LLM instead: %s", exc)
            return None
        return value.decode("utf-8") if isinstance(value, bytes) else value

    async def set(self, key: str, value: str) -> None:
        try:
            await self.redis.set(key, value, ex=self.ttl_s)
        except RedisError as exc:
            log.warning("LLM cache write failed, the answer is not cached: %s", exc)
