"""Authorization: who may do what, checked in this one module by every service.

The services (accounts, agents, inventory, reservations) receive one `Authz` at construction and
call it first in each method that acts for a user. Every check re-reads the actor from the
database, so a right revoked, or an account deleted, a moment ago is refused at once, whatever
the caller's session or API token still says.
"""

from __future__ import annotations

from edgebed.controller.domain import User
from edgebed.controller.errors import AuthenticationFailed, Conflict, Forbidden, NotAuthorized
from edgebed.controller.store import UserRepository

WAITING_FOR_APPROVAL = "your account is waiting for an administrator's approval"


class Authz:
    """The rights checks, against the users table."""

    def __init__(self, users: UserRepository) -> None:
        self._users = users

    async def require_authorized(self, actor: User) -> User:
        """The actor as stored now, when an administrator has authorized the account.

        Raises AuthenticationFailed when the account no longer exists, NotAuthorized
        (WAITING_FOR_APPROVAL) when it is not, or no longer, authorized.
        """
        current = await self._users.get_user(actor.email)
        if current is None:
            raise AuthenticationFailed("this account no longer exists")
        if not current.is_authorized:
            raise NotAuthorized(WAITING_FOR_APPROVAL)
        return current

    async def require_admin(self, actor: User) -> User:
        """The actor as stored now, when an authorized administrator; Forbidden otherwise
        (also when the account no longer exists: a non-admin learns nothing more)."""
        current = await self._users.get_user(actor.email)
        if current is None or not current.is_admin or not current.is_authorized:
            raise Forbidden("only administrators may do this")
        return current


def refuse_self(admin: User, target: User, action: str) -> None:
    """Conflict("you cannot <action>") when an administrator aims at their own account an action
    that would lock them out (revoke, demote, delete): there must always be someone left who can
    undo it. `action` completes the sentence, e.g. "delete your own account"."""
    if target.email == admin.email:
        raise Conflict(f"you cannot {action}")
