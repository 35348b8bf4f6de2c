"""A sliding-window counter that slows down password guessing on the login form."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable


class RateLimited(Exception):
    """Too many attempts: answered 429 by the error middleware, with Retry-After."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class RateLimiter:
    """At most `limit` attempts per key within `window_seconds`.

    Kept in memory: one controller process serves the pages, and a restart forgetting the counts
    only gives an attacker one more window. The number of keys is bounded so that a flood of
    made-up emails cannot grow it without end.
    """

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 50_000,
    ) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self._clock = clock
        self._max_keys = max_keys
        self._attempts: dict[Hashable, deque[float]] = {}

    def check(self, key: Hashable) -> None:
        """Raises RateLimited when the key is at its limit, recording nothing."""
        now = self._clock()
        attempts = self._attempts.get(key)
        if attempts is None:
            return
        while attempts and attempts[0] <= now - self.window_seconds:
            attempts.popleft()
        if len(attempts) >= self.limit:
            self._refuse(attempts, now)

    def _refuse(self, attempts: deque[float], now: float) -> None:
        retry_after = max(1, int(attempts[0] + self.window_seconds - now + 0.999))
        raise RateLimited(
            f"too many login attempts; wait {retry_after} seconds and try again", retry_after
        )

    def attempt(self, key: Hashable) -> None:
        """Records one attempt; raises RateLimited when the key is over its limit."""
        now = self._clock()
        attempts = self._attempts.get(key)
        if attempts is None:
            if len(self._attempts) >= self._max_keys:
                self._forget_stale(now)
            attempts = self._attempts[key] = deque()
        while attempts and attempts[0] <= now - self.window_seconds:
            attempts.popleft()
        if len(attempts) >= self.limit:
            self._refuse(attempts, now)
        attempts.append(now)

    def reset(self, key: Hashable) -> None:
        self._attempts.pop(key, None)

    def _forget_stale(self, now: float) -> None:
        horizon = now - self.window_seconds
        for key in [k for k, v in self._attempts.items() if not v or v[-1] <= horizon]:
            del self._attempts[key]
        # Still full of live keys: drop the oldest half rather than refuse new visitors.
        if len(self._attempts) >= self._max_keys:
            oldest = sorted(self._attempts, key=lambda k: self._attempts[k][-1])
            for key in oldest[: len(oldest) // 2]:
                del self._attempts[key]
