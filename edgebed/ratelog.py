"""A log line that repeats at most once a minute: a full disk fails every write, and one line per
failed write would fill what is left of the disk with the same message."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    """Emits a message of a given `key` at most once per `interval` seconds; the next one that
    passes says how many were held back meanwhile. Thread-safe (the database threads log too).

        disk_full = RateLimitedLog(log, 60.0)
        disk_full.log(logging.ERROR, "disk-full", "the disk holding %s is full", path)
    """

    def __init__(
        self, logger: logging.Logger, interval: float = 60.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, key: str, message: str, *args: object) -> bool:
        """Logs `message % args` unless a message of `key` was logged less than `interval` seconds
        ago; True when it was logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._held[key] = self._held.get(key, 0) + 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            message += " (%d more like it since the last such line)"
            args += (held,)
        self._logger.log(level, message, *args)
        return True

    def clear(self, key: str) -> None:
        """Forgets `key`: the condition ended, and its next occurrence is logged at once."""
        with self._lock:
            self._last.pop(key, None)
            self._held.pop(key, None)
