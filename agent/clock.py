"""Clocks for the executor's timeouts, injectable so that tests need no long sleeps."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds, only ever compared with each other."""


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()


class FastClock:
    """A clock that runs `speed` times faster than real time: with speed 1000 a 120 s timeout
    expires after 0.12 s. A simulated testbed with time_scale 0.01 runs its timeouts on a
    FastClock(100), so that simulated hardware and timeouts stay in proportion."""

    def __init__(self, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._origin = time.monotonic()

    def monotonic(self) -> float:
        return self._origin + (time.monotonic() - self._origin) * self.speed
