"""Sessions in encrypted cookies, the CSRF check on every form post, and protective headers.

The cookie (aiohttp-session's EncryptedCookieStorage) carries the CSRF token, flash messages and,
once logged in, the account's email, the session id and the credential version the session was
opened under. Whether that session is still open is the database's answer, on every request
(Accounts.session_user, called by web/auth.py): the cookie alone never decides.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp_session import Session, get_session, new_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from edgebed.controller.accounts import SESSION_SECONDS, SessionGrant
from edgebed.controller.errors import Forbidden

SESSION_COOKIE = "edgebed_session"
SESSION_MAX_AGE = SESSION_SECONDS
# What the cookie carries about the login session (see web/auth.py).
SESSION_EMAIL = "email"
SESSION_ID = "sid"
SESSION_VERSION = "cv"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_SESSION_KEY_PURPOSE = b"edgebed web session cookie v1"

# Only these come from scripts with bearer tokens, which a browser never sends on its own.
_CSRF_EXEMPT_PREFIX = "/api/"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_key(secret_key: bytes) -> bytes:
    """A 32-byte key for the cookie, derived so that the controller's secret is used for one
    purpose per derived key (the controller also signs email-confirmation tokens with it)."""
    return hmac.new(secret_key, _SESSION_KEY_PURPOSE, hashlib.sha256).digest()


def session_middleware_for(secret_key: bytes, *, secure: bool) -> Middleware:
    storage = EncryptedCookieStorage(
        session_key(secret_key),  # raw bytes: the storage base64-encodes them for Fernet
        cookie_name=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=secure,
    )
    return session_middleware(storage)


def csrf_token(session: Session) -> str:
    """This session's CSRF token, created on first use."""
    token = session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _carry(session: Session, grant: SessionGrant) -> None:
    session[SESSION_EMAIL] = grant.user.email
    session[SESSION_ID] = grant.session_id
    session[SESSION_VERSION] = grant.credential_version


async def start_session(request: web.Request, grant: SessionGrant) -> Session:
    """A fresh cookie session for a login session just opened (never reuse the anonymous one:
    fixation)."""
    session = await new_session(request)
    _carry(session, grant)
    csrf_token(session)
    return session


async def reissue_session(request: web.Request, grant: SessionGrant) -> None:
    """Puts a login session opened in place of the current one (a password change) into this
    browser's cookie, keeping its CSRF token and messages; copies of the old cookie stay ended."""
    _carry(await get_session(request), grant)


def forget_login(session: Session) -> None:
    """Drops an ended login session from the cookie (its CSRF token and messages stay)."""
    for key in (SESSION_EMAIL, SESSION_ID, SESSION_VERSION):
        session.pop(key, None)


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in _SAFE_METHODS and not request.path.startswith(_CSRF_EXEMPT_PREFIX):
        session = await get_session(request)
        expected = session.get("csrf")
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            posted = (await request.post()).get(CSRF_FIELD)
            sent = posted if isinstance(posted, str) else None
        if (
            not isinstance(expected, str)
            or not isinstance(sent, str)
            or not hmac.compare_digest(expected.encode(), sent.encode("utf-8", "replace"))
        ):
            raise Forbidden(
                "the form's security token is missing or out of date; reload the page and "
                "submit it again"
            )
    return await handler(request)


# A strict policy is possible because every script and style is a local file.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "style-src 'self'; style-src-attr 'unsafe-inline'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.content_type == "text/html":
        response.headers.setdefault("Cache-Control", "no-store")
