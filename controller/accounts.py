"""Accounts: sign-up, log-in and login sessions, email confirmation, API tokens and the admin's
user management.

Rights are checked by the shared Authz (controller/authz.py). Deleting an account first ends its
reservations through the `end_reservations` callable given at construction (Reservations.end_all
in controller/app.py): a required argument, so a composition cannot forget it.

Login sessions live in the database (store.users): a session is a random id, given to the
browser inside its encrypted cookie and stored as its SHA-256, plus the account's credential
version at log-in. A session ends when its row goes (logging out; every session of an account
on a password change, a revocation, a demotion or a deletion) or when the credential version
moves on, and after SESSION_SECONDS whatever happens.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from edgebed.controller import validation
from edgebed.controller.authz import WAITING_FOR_APPROVAL, Authz, refuse_self
from edgebed.controller.domain import ApiToken, User
from edgebed.controller.errors import AuthenticationFailed, Conflict, InvalidInput, NotAuthorized, NotFound
from edgebed.controller.store import Store
from edgebed.controller.store.records import Credentials

log = logging.getLogger(__name__)

__all__ = [
    "SESSION_SECONDS",
    "WAITING_FOR_APPROVAL",
    "Accounts",
    "EndReservations",
    "PasswordChange",
    "SessionGrant",
    "SignUp",
    "hash_api_token",
]

CONFIRMATION_SECONDS = 3 * 86400
UNCONFIRMED_EMAIL = (
    "your email address is not confirmed yet: follow the link in the confirmation mail, "
    "or ask an administrator to confirm it"
)
API_TOKEN_PREFIX = "edgebed_"
# A login session's whole life, from log-in, however active it is; the cookie lasts as long.
SESSION_SECONDS = 7 * 24 * 3600
# Longest session id or credential version a cookie may carry (ours are 43 and 32 characters).
_MAX_SESSION_FIELD = 128


def hash_api_token(secret: str) -> str:
    # API tokens are 256 random bits, so a plain SHA-256 is as strong as a slow hash here and
    # lets each API call find its token by an index lookup.
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _hash_session_id(session_id: str) -> str:
    # 256 random bits, as API tokens: a plain SHA-256 keeps a stolen database from giving
    # live sessions away, and lets each request find its session by an index lookup.
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


# Ends every reservation of the account with this email (destroying what was deployed);
# awaited before the account is deleted.
EndReservations = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class SessionGrant:
    """A login session just opened, for the session cookie: the account, the session id (256
    random bits; the database keeps only its SHA-256) and the credential version it was opened
    under. `expires_at` is epoch seconds."""

    user: User
    session_id: str = field(repr=False)
    credential_version: str = field(repr=False)
    expires_at: int


@dataclass(frozen=True)
class PasswordChange:
    """What a password change did: every login session of the account ended, then `session`
    opened in their place when one was asked for; `api_tokens_revoked` tokens deleted (0 when
    they were kept)."""

    session: SessionGrant | None
    api_tokens_revoked: int


@dataclass(frozen=True)
class SignUp:
    """What a sign-up did. `created` False: the email already had an account, which is left as
    it was; the page must answer as for a new one and tell only the address's owner, by mail.
    `email` is the address as normalized."""

    email: str
    created: bool


class Accounts:
    def __init__(
        self,
        store: Store,
        authz: Authz,
        secret_key: bytes,
        *,
        end_reservations: EndReservations,
        clock: Callable[[], float],
        hasher: PasswordHasher | None = None,
        require_confirmed_email: bool = False,
    ) -> None:
        self._store = store
        # [accounts] require_confirmed_email: log-in and API tokens refused until the address is
        # confirmed (by its link, or by an administrator).
        self.require_confirmed_email = require_confirmed_email
        self._authz = authz
        self._end_reservations = end_reservations
        self._secret_key = secret_key
        self._clock = clock
        self._hasher = hasher or PasswordHasher()
        # Verified against when the email is unknown, so a failed log-in takes the same time
        # whether or not the account exists.
        self._dummy_hash: str | None = None

    def _now(self) -> int:
        return int(self._clock())

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def _verify(self, password_hash: str, password: str) -> bool:
        def verify() -> bool:
            try:
                return self._hasher.verify(password_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(verify)

    # -- accounts ----------------------------------------------------------------------------

    async def sign_up(self, email: str, password: str, ssh_key: str = "") -> SignUp:
        """A new account waiting for approval; InvalidInput for a malformed email, password or
        SSH key. An email that already has an account gives SignUp(created=False) rather than
        Conflict, after the same work (validation, an argon2 hash of the password, one write
        transaction), so neither the answer nor its time tells whether the account exists."""
        email = validation.email(email)
        password = validation.password(password)
        ssh_key = validation.ssh_keys(ssh_key)
        password_hash = await self._hash(password)
        try:
            await self._store.users.create_user(
                email, password_hash, ssh_key=ssh_key, admin=False, authorized=False, now=self._now()
            )
        except Conflict:
            log.info("sign-up with the email of the existing account %s; nothing changed", email)
            return SignUp(email=email, created=False)
        log.info("new account %s is waiting for approval", email)
        return SignUp(email=email, created=True)

    async def create_user(
        self, email: str, password: str, *, admin: bool = False, authorized: bool = False, ssh_key: str = ""
    ) -> User:
        email = validation.email(email)
        password = validation.password(password)
        ssh_key = validation.ssh_keys(ssh_key)
        user = await self._store.users.create_user(
            email, await self._hash(password), ssh_key=ssh_key, admin=admin, authorized=authorized, now=self._now()
        )
        log.info("account %s created (admin=%s, authorized=%s)", email, admin, authorized)
        return user

    async def add_user(
        self, actor: User, email: str, password: str, *, admin: bool = False, authorized: bool = False
    ) -> User:
        """create_user on behalf of an administrator (the admin pages and API); the command line
        and the demo, which run on the controller's host, call create_user directly."""
        creator = await self._authz.require_admin(actor)
        user = await self.create_user(email, password, admin=admin, authorized=authorized)
        log.info("%s created account %s", creator.email, user.email)
        return user

    async def _check_password(self, email: str, password: str) -> Credentials:
        """The account's credentials if `password` is its password and the account is
        authorized; AuthenticationFailed (the same message, after the same work, whether or not
        the email has an account) or NotAuthorized."""
        try:
            email = validation.email(email)
        except InvalidInput:
            raise AuthenticationFailed("wrong email or password") from None
        if not isinstance(password, str) or len(password) > validation.MAX_PASSWORD_LENGTH:
            raise AuthenticationFailed("wrong email or password")
        found = await self._store.users.get_credentials(email)
        if found is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self._hash(secrets.token_urlsafe(16))
            await self._verify(self._dummy_hash, password)
            raise AuthenticationFailed("wrong email or password")
        if not await self._verify(found.password_hash, password):
            raise AuthenticationFailed("wrong email or password")
        if self._hasher.check_needs_rehash(found.password_hash):
            # The same password under new parameters: the credential version stays.
            await self._store.users.update_user(email, password=await self._hash(password))
        if not found.user.is_authorized:
            raise NotAuthorized(WAITING_FOR_APPROVAL)
        self._refuse_unconfirmed(found.user)
        return found

    async def authenticate(self, email: str, password: str) -> User:
        """The user whose email and password these are; AuthenticationFailed or NotAuthorized
        (awaiting approval). Opens no session (log_in does)."""
        return (await self._check_password(email, password)).user

    async def log_in(self, email: str, password: str) -> SessionGrant:
        """Checks the password as authenticate() does, then opens a login session, recorded in
        the database, that lasts SESSION_SECONDS at most. AuthenticationFailed as well when the
        password changed between the check and the opening."""
        credentials = await self._check_password(email, password)
        session_id = secrets.token_urlsafe(32)
        now = self._now()
        opened = await self._store.users.open_session(
            credentials.user.email,
            _hash_session_id(session_id),
            expected_version=credentials.credential_version,
            now=now,
            expires_at=now + SESSION_SECONDS,
        )
        if not opened:
            raise AuthenticationFailed("the account changed while you logged in; log in again")
        return SessionGrant(
            user=credentials.user,
            session_id=session_id,
            credential_version=credentials.credential_version,
            expires_at=now + SESSION_SECONDS,
        )

    async def session_user(self, email: object, session_id: object, credential_version: object) -> User | None:
        """The user of a login session, from what the session cookie carries; None when the
        session was never opened, was ended (logged out, password changed, account revoked,
        demoted or deleted), has expired, or its account is not authorized. The values come
        from a cookie: anything that is not a short string is simply no session."""
        fields = (email, session_id, credential_version)
        if not all(isinstance(v, str) and 0 < len(v) <= _MAX_SESSION_FIELD for v in fields):
            return None
        assert isinstance(session_id, str) and isinstance(credential_version, str)
        found = await self._store.users.session_user(_hash_session_id(session_id), self._now())
        if found is None:
            return None
        user, current_version = found
        if user.email != email or not current_version:
            return None
        if not hmac.compare_digest(current_version.encode(), credential_version.encode("utf-8", "replace")):
            return None
        return user if user.is_authorized else None

    async def end_session(self, session_id: object) -> None:
        """Ends one login session (logging out); nothing when there is no such session."""
        if isinstance(session_id, str) and 0 < len(session_id) <= _MAX_SESSION_FIELD:
            await self._store.users.end_session(_hash_session_id(session_id))

    def _refuse_unconfirmed(self, user: User) -> None:
        # Administrators are exempt: they confirm the others, and turning the setting on must
        # not lock out the accounts that could confirm anyone.
        if self.require_confirmed_email and not user.confirmed_email and not user.is_admin:
            raise NotAuthorized(UNCONFIRMED_EMAIL)

    async def get_user(self, email: str) -> User:
        try:
            email = validation.email(email)
        except InvalidInput:
            raise NotFound("no such user") from None
        user = await self._store.users.get_user(email)
        if user is None:
            raise NotFound(f"no user with the email {email}")
        return user

    async def change_password(
        self, email: str, old: str, new: str, *, keep_api_tokens: bool = False, open_session: bool = False
    ) -> PasswordChange:
        """Replaces the password once `old` is checked. In the same transaction every login
        session of the account ends (with open_session, a new one is opened in their place, for
        the browser that asked) and the account's API tokens are revoked unless keep_api_tokens.
        AuthenticationFailed for a wrong `old`; InvalidInput for a bad `new`; Conflict when the
        password changed meanwhile."""
        found = await self._store.users.get_credentials(validation.email(email))
        if found is None:
            raise NotFound("no such user")
        if not isinstance(old, str) or not await self._verify(found.password_hash, old):
            raise AuthenticationFailed("the current password is wrong")
        new = validation.password(new)
        new_hash = await self._hash(new)
        now = self._now()
        session_id = secrets.token_urlsafe(32) if open_session else None
        replaced = await self._store.users.replace_password(
            found.user.email,
            new_hash,
            expected_version=found.credential_version,
            keep_api_tokens=keep_api_tokens,
            new_session=None if session_id is None else (_hash_session_id(session_id), now, now + SESSION_SECONDS),
        )
        if replaced is None:
            raise Conflict("the password was changed meanwhile; log in again and retry")
        version, revoked = replaced
        log.info(
            "%s changed their password: sessions ended, %s",
            found.user.email,
            "API tokens kept" if keep_api_tokens else f"{revoked} API token(s) revoked",
        )
        grant = None
        if session_id is not None:
            grant = SessionGrant(found.user, session_id, version, now + SESSION_SECONDS)
        return PasswordChange(session=grant, api_tokens_revoked=revoked)

    async def set_ssh_key(self, email: str, ssh_key: str) -> User:
        user = await self._store.users.update_user(validation.email(email), ssh_key=validation.ssh_keys(ssh_key))
        if user is None:
            raise NotFound("no such user")
        return user

    # -- email confirmation: a signed token, no table -----------------------------------

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._secret_key, b"confirm|" + payload.encode("utf-8"), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode("ascii").rstrip("=")

    async def confirmation_token(self, email: str) -> str:
        user = await self.get_user(email)
        expires = self._now() + CONFIRMATION_SECONDS
        payload = f"{user.email}|{expires}"
        encoded = base64.urlsafe_b64encode(payload.encode("utf-8")).decode("ascii").rstrip("=")
        return f"{encoded}.{self._sign(payload)}"

    async def confirm_email(self, token: str) -> User:
        bad = InvalidInput("this confirmation link is invalid or has expired")
        if not isinstance(token, str) or len(token) > 1024 or "." not in token:
            raise bad
        encoded, _, signature = token.partition(".")
        try:
            payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
        except (binascii.Error, ValueError):
            raise bad from None
        if not hmac.compare_digest(self._sign(payload), signature):
            raise bad
        email, _, expires = payload.rpartition("|")
        if not expires.isdigit() or int(expires) < self._now():
            raise bad
        user = await self._store.users.update_user(email, confirmed_email=True)
        if user is None:
            raise bad
        return user

    # -- API tokens ------------------------------------------------------------------------

    async def create_api_token(self, email: str, label: str = "") -> str:
        user = await self.get_user(email)
        if not isinstance(label, str) or len(label) > 100:
            raise InvalidInput("the token label must be at most 100 characters")
        secret = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
        await self._store.users.add_api_token(user.email, label.strip(), hash_api_token(secret), self._now())
        return secret

    async def list_api_tokens(self, email: str) -> list[ApiToken]:
        return await self._store.users.list_api_tokens(validation.email(email))

    async def revoke_api_token(self, email: str, token_id: int) -> None:
        if not await self._store.users.delete_api_token(validation.email(email), int(token_id)):
            raise NotFound("no such API token")

    async def user_for_api_token(self, secret: str) -> User:
        if not isinstance(secret, str) or not secret.startswith(API_TOKEN_PREFIX) or len(secret) > 200:
            raise AuthenticationFailed("unknown API token")
        token_hash = hash_api_token(secret)
        found = await self._store.users.use_api_token(token_hash, self._now())
        if found is None or not hmac.compare_digest(found[1], token_hash):
            raise AuthenticationFailed("unknown API token")
        user = await self._store.users.get_user(found[0])
        if user is None:
            raise AuthenticationFailed("unknown API token")
        if not user.is_authorized:
            raise NotAuthorized(WAITING_FOR_APPROVAL)
        self._refuse_unconfirmed(user)
        return user

    # -- administration ---------------------------------------------------------------------

    async def list_users(self, actor: User) -> list[User]:
        await self._authz.require_admin(actor)
        return await self._store.users.list_users()

    async def set_authorized(self, actor: User, email: str, authorized: bool) -> User:
        return await self.update_flags(actor, email, authorized=authorized)

    async def set_admin(self, actor: User, email: str, admin_flag: bool) -> User:
        return await self.update_flags(actor, email, admin=admin_flag)

    async def update_flags(
        self,
        actor: User,
        email: str,
        *,
        authorized: bool | None = None,
        admin: bool | None = None,
        confirmed_email: bool | None = None,
    ) -> User:
        """Authorizes/revokes, promotes/demotes and confirms (or unconfirms) the email address
        in one write: every check passes first, so a refused change never leaves another one
        applied. An administrator confirms an address they know to be right (no mail server,
        or a lost mail)."""
        creator = await self._authz.require_admin(actor)
        target = await self.get_user(email)
        changes: dict[str, bool] = {}
        if authorized is not None:
            if not authorized:
                refuse_self(creator, target, "revoke your own account")
            changes["is_authorized"] = bool(authorized)
        if admin is not None:
            if not admin:
                refuse_self(creator, target, "demote yourself")
            changes["is_admin"] = bool(admin)
        if confirmed_email is not None:
            changes["confirmed_email"] = bool(confirmed_email)
        if not changes:
            return target
        # Rights that shrink end the account's sessions: the user logs in again under them.
        end_sessions = (target.is_authorized and changes.get("is_authorized") is False) or (
            target.is_admin and changes.get("is_admin") is False
        )
        user = await self._store.users.update_user(target.email, end_sessions=end_sessions, **changes)
        if user is None:
            raise NotFound(f"no account with the email {target.email}")
        log.info(
            "%s set %s for %s%s", creator.email, changes, target.email,
            "; its sessions ended" if end_sessions else "",
        )
        return user

    async def delete_user(self, actor: User, email: str) -> None:
        """Ends the account's reservations (end_reservations), then deletes it with its API
        tokens and login sessions. Forbidden unless the actor is an administrator; NotFound for
        an unknown email; Conflict for oneself."""
        admin = await self._authz.require_admin(actor)
        target = await self.get_user(email)
        refuse_self(admin, target, "delete your own account")
        await self._end_reservations(target.email)
        await self._store.users.delete_user(target.email)
        log.info("%s deleted the account %s", admin.email, target.email)
