"""Users and their API tokens (tables `user` and `api_token`)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import peewee as pw

from edgebed.controller.domain import ApiToken, User
from edgebed.controller.errors import Conflict
from edgebed.controller.store.conversions import api_token_from_row, user_from_row
from edgebed.controller.store.engine import Engine
from edgebed.storage import is_disk_full

# What update_user may change; the email is the primary key and never changes.
_USER_FIELDS = frozenset({"password", "ssh_key", "confirmed_email", "is_authorized", "is_admin"})


class UserRepository:
    """Accounts: passwords are stored as the hashes the caller gives (argon2), API tokens as
    their SHA-256 hashes. Every method is a coroutine run in the engine's thread pool."""

    def __init__(self, engine: Engine, models: SimpleNamespace) -> None:
        self._engine = engine
        self.m = models

    async def create_user(
        self, email: str, password_hash: str, *, ssh_key: str, admin: bool, authorized: bool, now: int
    ) -> User:
        """A new account, email not yet confirmed; Conflict when the email is taken."""

        def work() -> User:
            with self._engine.write():
                if self.m.User.get_or_none(self.m.User.email == email) is not None:
                    raise Conflict(f"an account with the email {email} already exists")
                row = self.m.User.create(
                    email=email,
                    password=password_hash,
                    ssh_key=ssh_key,
                    confirmed_email=False,
                    is_authorized=authorized,
                    is_admin=admin,
                    created_at=now,
                )
                return user_from_row(row)

        return await self._engine.run(work)

    async def get_user(self, email: str) -> User | None:
        def work() -> User | None:
            row = self.m.User.get_or_none(self.m.User.email == email)
            return None if row is None else user_from_row(row)

        return await self._engine.run(work)

    async def get_password_hash(self, email: str) -> tuple[User, str] | None:
        """(user, password hash), for checking a password; None for an unknown email."""

        def work() -> tuple[User, str] | None:
            row = self.m.User.get_or_none(self.m.User.email == email)
            return None if row is None else (user_from_row(row), row.password)

        return await self._engine.run(work)

    async def list_users(self) -> list[User]:
        """Every user, those waiting for authorization first, then oldest first."""

        def work() -> list[User]:
            query = self.m.User.select().order_by(
                self.m.User.is_authorized, self.m.User.created_at, self.m.User.email
            )
            return [user_from_row(row) for row in query]

        return await self._engine.run(work)

    async def update_user(self, email: str, **changes: Any) -> User | None:
        """Applies `changes` (password hash, ssh_key, confirmed_email, is_authorized, is_admin)
        in one write; the user as it is then, or None for an unknown email. ValueError for any
        other field."""
        unknown = set(changes) - _USER_FIELDS
        if unknown:
            raise ValueError(f"cannot change user fields {sorted(unknown)}")

        def work() -> User | None:
            with self._engine.write():
                self.m.User.update(**changes).where(self.m.User.email == email).execute()
                row = self.m.User.get_or_none(self.m.User.email == email)
                return None if row is None else user_from_row(row)

        return await self._engine.run(work)

    async def delete_user(self, email: str) -> None:
        """Removes the user and their API tokens, together; nothing for an unknown email."""

        def work() -> None:
            with self._engine.write():
                self.m.ApiToken.delete().where(self.m.ApiToken.owner == email).execute()
                self.m.User.delete().where(self.m.User.email == email).execute()

        await self._engine.run(work)

    # -- API tokens -----------------------------------------------------------------------

    async def add_api_token(self, owner: str, label: str, token_hash: str, now: int) -> int:
        """Stores a token's hash; its id."""

        def work() -> int:
            row = self.m.ApiToken.create(
                owner=owner, label=label, token_hash=token_hash, created_at=now
            )
            return int(row.id)

        return await self._engine.run(work)

    async def list_api_tokens(self, owner: str) -> list[ApiToken]:
        """The owner's tokens, oldest first, without their hashes."""

        def work() -> list[ApiToken]:
            query = (
                self.m.ApiToken.select()
                .where(self.m.ApiToken.owner == owner)
                .order_by(self.m.ApiToken.id)
            )
            return [api_token_from_row(r) for r in query]

        return await self._engine.run(work)

    async def delete_api_token(self, owner: str, token_id: int) -> bool:
        """False when the owner has no token with that id."""

        def work() -> bool:
            deleted = (
                self.m.ApiToken.delete()
                .where((self.m.ApiToken.owner == owner) & (self.m.ApiToken.id == token_id))
                .execute()
            )
            return deleted > 0

        return await self._engine.run(work)

    async def use_api_token(self, token_hash: str, now: int) -> tuple[str, str] | None:
        """(owner, stored hash) of the token with that hash, marking it used; None if unknown."""

        def work() -> tuple[str, str] | None:
            row = self.m.ApiToken.get_or_none(self.m.ApiToken.token_hash == token_hash)
            if row is None:
                return None
            # Once a minute is enough to show "last used" and spares a write per API call.
            if row.last_used_at is None or now - int(row.last_used_at) >= 60:
                try:
                    self.m.ApiToken.update(last_used_at=now).where(
                        self.m.ApiToken.id == row.id
                    ).execute()
                except pw.OperationalError as exc:
                    # Bookkeeping: on a full disk the call itself goes on (a read still works).
                    if not is_disk_full(exc):
                        raise
            return row.owner, row.token_hash

        return await self._engine.run(work)
