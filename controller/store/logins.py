"""Log-in attempts the rate limits count (table `login_attempt`), shared by every controller on
the database, stamped with the database's clock (store/leases.py now_sql)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import peewee as pw

from edgebed.controller.store.engine import Engine
from edgebed.controller.store.leases import db_now

# One attempt in this many also deletes every row older than an hour, whatever its bucket, so a
# flood of made-up emails cannot grow the table without end.
_PURGE_ONE_IN = 100
_PURGE_AFTER_SECONDS = 3600.0


class LoginAttemptRepository:
    """Every method is a coroutine run in the engine's thread pool. A `bucket` is 64 hex
    characters (a SHA-256 of what the limit is per); `limiter` names the limit ("login",
    "address")."""

    def __init__(self, engine: Engine, models: SimpleNamespace) -> None:
        self._engine = engine
        self.m = models

    def _window(self, limiter: str, bucket: str, since: float) -> tuple[int, float | None]:
        A = self.m.LoginAttempt
        row = (
            A.select(pw.fn.COUNT(A.id), pw.fn.MIN(A.attempted_at))
            .where((A.limiter == limiter) & (A.bucket == bucket) & (A.attempted_at > since))
            .tuples()
            .first()
        )
        count, oldest = row if row else (0, None)
        return int(count or 0), (None if oldest is None else float(oldest))

    async def count(self, limiter: str, bucket: str, window_seconds: float) -> tuple[int, float]:
        """(attempts within the last `window_seconds`, seconds until the oldest of them leaves
        the window; 0 when none)."""

        def work() -> tuple[int, float]:
            now = db_now(self._engine)
            count, oldest = self._window(limiter, bucket, now - window_seconds)
            return count, (0.0 if oldest is None else max(0.0, oldest + window_seconds - now))

        return await self._engine.run(work)

    async def attempt(self, limiter: str, bucket: str, limit: int, window_seconds: float) -> tuple[bool, float]:
        """Records one attempt unless `limit` attempts are already within the window: (recorded,
        seconds until the oldest leaves the window). Attempts of one bucket are serialized (an
        advisory lock on PostgreSQL, the write lock on SQLite), so replicas racing on one
        account never let more than `limit` through."""

        def work() -> tuple[bool, float]:
            A = self.m.LoginAttempt
            with self._engine.write():
                self._engine.serialize(int(bucket[:15], 16))
                now = db_now(self._engine)
                A.delete().where(
                    (A.limiter == limiter) & (A.bucket == bucket) & (A.attempted_at <= now - window_seconds)
                ).execute()
                if random.randrange(_PURGE_ONE_IN) == 0:
                    A.delete().where(A.attempted_at < now - _PURGE_AFTER_SECONDS).execute()
                count, oldest = self._window(limiter, bucket, now - window_seconds)
                wait = 0.0 if oldest is None else max(0.0, oldest + window_seconds - now)
                if count >= limit:
                    return False, wait
                A.insert(limiter=limiter, bucket=bucket, attempted_at=now).execute()
                return True, wait

        return await self._engine.run(work)

    async def reset(self, limiter: str, bucket: str) -> None:
        """Forgets the bucket's attempts (a successful log-in)."""

        def work() -> None:
            A = self.m.LoginAttempt
            A.delete().where((A.limiter == limiter) & (A.bucket == bucket)).execute()

        await self._engine.run(work)
