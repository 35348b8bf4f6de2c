"""Rendering a page: the template plus what every page shows (who is signed in, the CSRF token
for its forms, messages left by the previous request, the viewer's time zone)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import get_session

from edgebed.web.forms import zone_or_utc
from edgebed.web.keys import CONTROLLER, SETTINGS, USER
from edgebed.web.security import csrf_token

TZ_COOKIE = "tz"  # the browser's IANA zone, set by static/edgebed.js


def viewer_zone(request: web.Request) -> ZoneInfo:
    # The script writes the zone URL-encoded ("Europe%2FParis").
    return zone_or_utc(unquote(request.cookies.get(TZ_COOKIE, ""))[:64])


def confirmations_in_use(request: web.Request) -> bool:
    settings = request.app[SETTINGS]
    return bool(settings.require_confirmed_email or settings.smtp_host)


async def flash(request: web.Request, message: str, kind: str = "info") -> None:
    """A message shown once, on the next page (after a redirect)."""
    session = await get_session(request)
    messages = list(session.get("flash", []))[-9:]
    messages.append([kind, message])
    session["flash"] = messages


async def render(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    session = await get_session(request)
    flashes = session.pop("flash", []) if "flash" in session else []
    user = request.get(USER)
    controller = request.app.get(CONTROLLER)
    page = {
        "user": user,
        # Administrators see a banner while a wall clock jump pauses reservations (controller.clock).
        "clock": controller.clock.guard.status() if controller is not None and user is not None and user.is_admin
        else None,
        "csrf_token": csrf_token(session),
        "flashes": flashes,
        "tz": viewer_zone(request),
        "path": request.path,
        # A refused form's message and field (web/formpage.py); None on a page drawn normally.
        "form_error": None,
        # Whether email confirmation means anything here (required for log-in, or links are
        # mailed): the pages show confirmation badges and actions only then.
        "confirmations": confirmations_in_use(request),
    }
    page.update(context)
    return aiohttp_jinja2.render_template(template, request, page, status=status)
