"""A circuit breaker: stop calling an LLM that keeps failing, probe it again after a pause.

A pure state machine with an injectable clock, so tests drive time by hand:

    closed --N consecutive failures, or a trip--> open --cool-down elapsed--> half-open
    half-open --probe succeeds--> closed;  half-open --probe fails--> open (a new cool-down)

A trip opens it at once: a server that refuses or resets connections is gone, and waiting
for N failures would only make more items wait.

While open, and while a half-open probe is in flight, calls are refused at once: a worker
then routes its items to review instead of queueing behind a dead server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._state: State = "closed"

    @property
    def state(self) -> State:
        if self._state == "open" and self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return self._state

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when calls may go)."""
        if self._state != "open":
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a call go now? In half-open state only one probe at a time is let through."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._state = "half_open"
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._probing = False
        self._state = "closed"

    def record_abandoned(self) -> None:
        """A call ended with neither answer nor failure (cancelled): free the probe slot."""
        self._probing = False

    def record_failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.failure_threshold:
            self.trip()

    def trip(self) -> None:
        """Open now, whatever the count of failures."""
        self._state = "open"
        self._opened_at = self._clock()
        self._probing = False
