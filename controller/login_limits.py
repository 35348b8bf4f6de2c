"""Log-in rate limits kept in the database, so that every controller behind a load balancer
counts the same attempts: 5 failures allowed with one controller are 5 with three.

Two limits, each a sliding window of `window_seconds`: attempts per (email, address), and failed
attempts per address whatever the account (one address trying one password against many
accounts). What a limit is per is kept only as a SHA-256 keyed with the controller's secret key,
never the email or address in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import math

from edgebed.controller.store import Store

# Per account and address, per minute.
LOGIN_ATTEMPTS_PER_MINUTE = 5
# Failed logins per minute from one address, whatever the account (a lab behind one NAT shares it).
FAILED_LOGINS_PER_ADDRESS_PER_MINUTE = 20


class RateLimited(Exception):
    """Too many attempts: answered 429 by the web's error middleware, with Retry-After
    (`retry_after`, whole seconds, at least 1)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class LoginLimits:
    """The two log-in limits over `store.logins`. `secret_key` keys the buckets' hashes."""

    def __init__(
        self,
        store: Store,
        secret_key: bytes,
        *,
        per_account: int = LOGIN_ATTEMPTS_PER_MINUTE,
        per_address: int = FAILED_LOGINS_PER_ADDRESS_PER_MINUTE,
        window_seconds: float = 60.0,
    ) -> None:
        self._store = store
        self._key = hashlib.sha256(b"edgebed login limits\0" + secret_key).digest()
        self.per_account = per_account
        self.per_address = per_address
        self.window_seconds = window_seconds

    def _bucket(self, *parts: str) -> str:
        return hmac.new(self._key, "\0".join(parts).encode("utf-8"), hashlib.sha256).hexdigest()

    @staticmethod
    def _refuse(wait: float) -> RateLimited:
        retry_after = max(1, math.ceil(wait))
        return RateLimited(f"too many login attempts; wait {retry_after} seconds and try again", retry_after)

    async def before_attempt(self, email: str, address: str) -> None:
        """Called before checking a password: RateLimited when the address is at its limit of
        failures, or the (email, address) pair at its limit of attempts; otherwise the attempt is
        counted."""
        count, wait = await self._store.logins.count("address", self._bucket(address), self.window_seconds)
        if count >= self.per_address:
            raise self._refuse(wait)
        recorded, wait = await self._store.logins.attempt(
            "login", self._bucket(email.lower(), address), self.per_account, self.window_seconds
        )
        if not recorded:
            raise self._refuse(wait)

    async def failed(self, address: str) -> None:
        """Counts a failed attempt against the address (beyond its limit it is not recorded:
        the address is refused anyway)."""
        await self._store.logins.attempt("address", self._bucket(address), self.per_address, self.window_seconds)

    async def succeeded(self, email: str, address: str) -> None:
        """A successful log-in forgets the pair's attempts."""
        await self._store.logins.reset("login", self._bucket(email.lower(), address))
