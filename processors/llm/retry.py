"""When to try an LLM call again: exponential backoff with full jitter, and `Retry-After`.

Pure functions (the random source and the clock are arguments) so the policy is unit-tested.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Backoff:
    """Delay before retry `attempt` (0 = the first retry): uniform in [0, min(cap, base*2^n)].

    Full jitter spreads the retries of many workers that failed together, so they do not
    hit a recovering server in lock-step.
    """

    base_s: float = 0.5
    cap_s: float = 20.0
    max_retry_after_s: float = 120.0

    def delay(
        self, attempt: int, retry_after_s: float | None = None, rng: random.Random | None = None
    ) -> float:
        ceiling = min(self.cap_s, self.base_s * 2**attempt)
        jittered = (rng or random).uniform(0.0, ceiling)
        if retry_after_s is None:
            return jittered
        return max(retry_after_s, jittered)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def is_retryable_status(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500
