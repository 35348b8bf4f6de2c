"""Accounts: sign-up, log-in, email confirmation, API tokens and the admin's user management.

Rights are checked by the shared Authz (controller/authz.py). Deleting an account first ends its
reservations through the `end_reservations` callable given at construction (Reservations.end_all
in controller/app.py): a required argument, so a composition cannot forget it.
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

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from edgebed.controller import validation
from edgebed.controller.authz import WAITING_FOR_APPROVAL, Authz, refuse_self
from edgebed.controller.domain import ApiToken, User
from edgebed.controller.errors import AuthenticationFailed, InvalidInput, NotAuthorized, NotFound
from edgebed.controller.store import Store

log = logging.getLogger(__name__)

__all__ = ["WAITING_FOR_APPROVAL", "Accounts", "EndReservations", "hash_api_token"]

CONFIRMATION_SECONDS = 3 * 86400
UNCONFIRMED_EMAIL = (
    "your email address is not confirmed yet: follow the link in the confirmation mail, "
    "or ask an administrator to confirm it"
)
API_TOKEN_PREFIX = "edgebed_"


def hash_api_token(secret: str) -> str:
    # API tokens are 256 random bits, so a plain SHA-256 is as strong as a slow hash here and
    # lets each API call find its token by an index lookup.
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


# Ends every reservation of the account with this email (destroying what was deployed);
# awaited before the account is deleted.
EndReservations = Callable[[str], Awaitable[None]]


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

    async def sign_up(self, email: str, password: str, ssh_key: str = "") -> User:
        email = validation.email(email)
        password = validation.password(password)
        ssh_key = validation.ssh_keys(ssh_key)
        user = await self._store.users.create_user(
            email, await self._hash(password), ssh_key=ssh_key, admin=False, authorized=False, now=self._now()
        )
        log.info("new account %s is waiting for approval", email)
        return user

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

    async def authenticate(self, email: str, password: str) -> User:
        try:
            email = validation.email(email)
        except InvalidInput:
            raise AuthenticationFailed("wrong email or password") from None
        if not isinstance(password, str) or len(password) > validation.MAX_PASSWORD_LENGTH:
            raise AuthenticationFailed("wrong email or password")
        found = await self._store.users.get_password_hash(email)
        if found is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self._hash(secrets.token_urlsafe(16))
            await self._verify(self._dummy_hash, password)
            raise AuthenticationFailed("wrong email or password")
        user, password_hash = found
        if not await self._verify(password_hash, password):
            raise AuthenticationFailed("wrong email or password")
        if self._hasher.check_needs_rehash(password_hash):
            await self._store.users.update_user(email, password=await self._hash(password))
        if not user.is_authorized:
            raise NotAuthorized(WAITING_FOR_APPROVAL)
        self._refuse_unconfirmed(user)
        return user

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

    async def change_password(self, email: str, old: str, new: str) -> None:
        found = await self._store.users.get_password_hash(validation.email(email))
        if found is None:
            raise NotFound("no such user")
        if not isinstance(old, str) or not await self._verify(found[1], old):
            raise AuthenticationFailed("the current password is wrong")
        new = validation.password(new)
        await self._store.users.update_user(found[0].email, password=await self._hash(new))

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
        user = await self._store.users.update_user(target.email, **changes)
        if user is None:
            raise NotFound(f"no account with the email {target.email}")
        log.info("%s set %s for %s", creator.email, changes, target.email)
        return user

    async def delete_user(self, actor: User, email: str) -> None:
        """Ends the account's reservations (end_reservations), then deletes it. Forbidden unless
        the actor is an administrator; NotFound for an unknown email; Conflict for oneself."""
        admin = await self._authz.require_admin(actor)
        target = await self.get_user(email)
        refuse_self(admin, target, "delete your own account")
        await self._end_reservations(target.email)
        await self._store.users.delete_user(target.email)
        log.info("%s deleted the account %s", admin.email, target.email)
