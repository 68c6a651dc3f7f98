"""One trainer per task: a lease in Redis, renewed while the trainer lives.

The holder renews it every loop; if it dies, the lease expires after its time and another
trainer takes over. Renewing and releasing check the holder in one Lua script, so a trainer
that lost its lease (paused past the expiry, say) can never extend or drop a rival's.
"""

from __future__ import annotations

import redis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    def __init__(self, client: redis.Redis, key: str, holder: str, ttl_s: float) -> None:
        self.client = client
        self.key = key
        self.holder = holder
        self.ttl_ms = int(ttl_s * 1000)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def hold(self) -> bool:
        """Renew the lease if held, else try to take it; True while this holder has it."""
        if self._renew(keys=[self.key], args=[self.holder, self.ttl_ms]):
            return True
        return bool(self.client.set(self.key, self.holder, nx=True, px=self.ttl_ms))

    def holder_now(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if value is not None else None

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.holder])
