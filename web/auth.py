"""Who is asking: the session's user for pages, the bearer token's user for the JSON API."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web
from aiohttp_session import get_session

from edgebed.controller.domain import User
from edgebed.controller.errors import AuthenticationFailed, Forbidden
from edgebed.web.keys import CONTROLLER, USER
from edgebed.web.security import SESSION_EMAIL, SESSION_ID, SESSION_VERSION, forget_login


async def current_user(request: web.Request) -> User | None:
    """The signed-in, still authorized user, or None.

    Looked up on every request: the login session the cookie names must still be open in the
    database under the account's current credential version, so that logging out, a password
    change, a revocation, a demotion or a deletion ends every copy of the cookie at once rather
    than when it expires.
    """
    if USER in request:
        return request[USER]
    session = await get_session(request)
    user: User | None = None
    if SESSION_EMAIL in session or SESSION_ID in session:
        user = await request.app[CONTROLLER].accounts.session_user(
            session.get(SESSION_EMAIL), session.get(SESSION_ID), session.get(SESSION_VERSION)
        )
        if user is None:
            forget_login(session)
    request[USER] = user
    return user


async def require_user(request: web.Request) -> User:
    """The signed-in user; anyone else is sent to the login page (and back afterwards)."""
    user = await current_user(request)
    if user is None:
        target = request.rel_url.path_qs if request.method == "GET" else "/"
        raise web.HTTPSeeOther(f"/login?next={quote(target, safe='')}")
    return user


async def require_admin(request: web.Request) -> User:
    user = await require_user(request)
    if not user.is_admin:
        raise Forbidden("this page is for administrators only")
    return user


async def api_user(request: web.Request) -> User:
    """The user of the `Authorization: Bearer <token>` header (401 without one, 403 when the
    account awaits approval)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed("an 'Authorization: Bearer <api token>' header is required")
    if len(token) > 512 or not token.isascii() or not token.isprintable():
        raise AuthenticationFailed("the API token is not valid")
    user = await request.app[CONTROLLER].accounts.user_for_api_token(token)
    request[USER] = user
    return user


async def api_admin(request: web.Request) -> User:
    user = await api_user(request)
    if not user.is_admin:
        raise Forbidden("this call is for administrators only")
    return user


def safe_next(target: str | None) -> str:
    """Only a path on this site, so that the login form cannot send anyone elsewhere.

    Only printable ASCII without spaces passes: browsers drop tabs and newlines from a Location,
    so "/<TAB>/evil.example" would be followed as "//evil.example", another site.
    """
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or not all("!" <= char <= "~" for char in target)
    ):
        return "/reserve"
    return target
