"""Users, their API tokens and their login sessions (tables `user`, `api_token` and
`login_session`)."""

from __future__ import annotations

import secrets
from types import SimpleNamespace
from typing import Any

import peewee as pw

from edgebed.controller.domain import ApiToken, User
from edgebed.controller.errors import Conflict
from edgebed.controller.store.conversions import api_token_from_row, user_from_row
from edgebed.controller.store.engine import Engine
from edgebed.controller.store.records import Credentials
from edgebed.storage import is_disk_full

# What update_user may change; the email is the primary key and never changes, and the
# credential version changes only through end_sessions= and replace_password.
_USER_FIELDS = frozenset({"password", "ssh_key", "confirmed_email", "is_authorized", "is_admin"})


def new_credential_version() -> str:
    # Random rather than a counter: an account deleted and created again with the same email
    # must not land on a value an old cookie carries.
    return secrets.token_urlsafe(24)


class UserRepository:
    """Accounts: passwords are stored as the hashes the caller gives (argon2), API tokens and
    session ids as their SHA-256 hashes. Every method is a coroutine run in the engine's thread
    pool.

    Each user has a credential version (random text): a session is valid while its row exists,
    has not expired, and the version it was opened under is still the user's. A password change,
    a revocation or a demotion replaces the version and deletes the account's session rows in the
    same transaction; deleting the account deletes them with it."""

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
                    credential_version=new_credential_version(),
                )
                return user_from_row(row)

        return await self._engine.run(work)

    async def get_user(self, email: str) -> User | None:
        def work() -> User | None:
            row = self.m.User.get_or_none(self.m.User.email == email)
            return None if row is None else user_from_row(row)

        return await self._engine.run(work)

    async def get_credentials(self, email: str) -> Credentials | None:
        """The user with the password hash and credential version, for checking a password;
        None for an unknown email."""

        def work() -> Credentials | None:
            row = self.m.User.get_or_none(self.m.User.email == email)
            if row is None:
                return None
            return Credentials(user_from_row(row), row.password, row.credential_version)

        return await self._engine.run(work)

    async def list_users(self) -> list[User]:
        """Every user, those waiting for authorization first, then oldest first."""

        def work() -> list[User]:
            query = self.m.User.select().order_by(
                self.m.User.is_authorized, self.m.User.created_at, self.m.User.email
            )
            return [user_from_row(row) for row in query]

        return await self._engine.run(work)

    async def update_user(self, email: str, *, end_sessions: bool = False, **changes: Any) -> User | None:
        """Applies `changes` (password hash, ssh_key, confirmed_email, is_authorized, is_admin)
        in one write; with end_sessions, also replaces the credential version and deletes every
        login session of the account, in the same transaction. The user as it is then, or None
        for an unknown email. ValueError for any other field."""
        unknown = set(changes) - _USER_FIELDS
        if unknown:
            raise ValueError(f"cannot change user fields {sorted(unknown)}")
        if end_sessions:
            changes = {**changes, "credential_version": new_credential_version()}

        def work() -> User | None:
            with self._engine.write():
                if changes:
                    self.m.User.update(**changes).where(self.m.User.email == email).execute()
                row = self.m.User.get_or_none(self.m.User.email == email)
                if row is not None and end_sessions:
                    self.m.LoginSession.delete().where(self.m.LoginSession.owner == email).execute()
                return None if row is None else user_from_row(row)

        return await self._engine.run(work)

    async def replace_password(
        self,
        email: str,
        password_hash: str,
        *,
        expected_version: str,
        keep_api_tokens: bool,
        new_session: tuple[str, int, int] | None,
    ) -> tuple[str, int] | None:
        """A password change, in one transaction: the new hash, a new credential version, every
        login session of the account deleted, then `new_session` (id_hash, created_at,
        expires_at) opened when given, and the account's API tokens deleted unless
        keep_api_tokens. Returns (the new credential version, how many API tokens were
        deleted); None, with nothing changed, when the account is gone or its credential
        version is no longer `expected_version` (another change came first)."""

        def work() -> tuple[str, int] | None:
            with self._engine.write():
                row = self._engine.lock(self.m.User.select().where(self.m.User.email == email)).first()
                if row is None or row.credential_version != expected_version:
                    return None
                version = new_credential_version()
                self.m.User.update(password=password_hash, credential_version=version).where(
                    self.m.User.email == email
                ).execute()
                self.m.LoginSession.delete().where(self.m.LoginSession.owner == email).execute()
                if new_session is not None:
                    id_hash, created_at, expires_at = new_session
                    self.m.LoginSession.create(
                        id_hash=id_hash, owner=email, created_at=created_at, expires_at=expires_at
                    )
                if keep_api_tokens:
                    return version, 0
                return version, int(self.m.ApiToken.delete().where(self.m.ApiToken.owner == email).execute())

        return await self._engine.run(work)

    async def delete_user(self, email: str) -> None:
        """Removes the user with their API tokens and login sessions, together; nothing for an
        unknown email."""

        def work() -> None:
            with self._engine.write():
                self.m.LoginSession.delete().where(self.m.LoginSession.owner == email).execute()
                self.m.ApiToken.delete().where(self.m.ApiToken.owner == email).execute()
                self.m.User.delete().where(self.m.User.email == email).execute()

        await self._engine.run(work)

    # -- login sessions ---------------------------------------------------------------------

    async def open_session(
        self, email: str, id_hash: str, *, expected_version: str, now: int, expires_at: int
    ) -> bool:
        """Records a new login session (the SHA-256 of its id), if the account still has the
        credential version its password was checked under; False, with nothing written,
        otherwise. Also deletes every expired session of any account, so the table holds only
        live ones."""

        def work() -> bool:
            with self._engine.write():
                row = self._engine.lock(self.m.User.select().where(self.m.User.email == email)).first()
                if row is None or row.credential_version != expected_version:
                    return False
                self.m.LoginSession.delete().where(self.m.LoginSession.expires_at <= now).execute()
                self.m.LoginSession.create(
                    id_hash=id_hash, owner=email, created_at=now, expires_at=expires_at
                )
                return True

        return await self._engine.run(work)

    async def session_user(self, id_hash: str, now: int) -> tuple[User, str] | None:
        """(user, credential version) of the unexpired session with that id hash; None when
        there is none (never opened, logged out, ended, expired, or its account deleted). One
        query: this runs on every page request."""

        def work() -> tuple[User, str] | None:
            session, user = self.m.LoginSession, self.m.User
            row = (
                user.select(user)
                .join(session, on=(session.owner == user.email))
                .where((session.id_hash == id_hash) & (session.expires_at > now))
                .get_or_none()
            )
            return None if row is None else (user_from_row(row), row.credential_version)

        return await self._engine.run(work)

    async def end_session(self, id_hash: str) -> bool:
        """Deletes one login session; False when it did not exist."""

        def work() -> bool:
            deleted = self.m.LoginSession.delete().where(self.m.LoginSession.id_hash == id_hash).execute()
            return deleted > 0

        return await self._engine.run(work)

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
