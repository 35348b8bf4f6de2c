"""The one error middleware: the service's errors become HTTP statuses with a message that says
what is wrong, as an HTML page for people and as {"error": "..."} under /api/ (with "fields":
{name: what is wrong} when the error names inputs, as InvalidProperties does)."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from edgebed.controller.errors import (
    AgentUnavailable,
    AuthenticationFailed,
    BadReply,
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidProperties,
    NotAuthorized,
    NotFound,
    ServiceError,
    StorageFull,
)
from edgebed.web.auth import current_user
from edgebed.web.formpage import redraw
from edgebed.web.keys import FORM_TEMPLATE
from edgebed.web.ratelimit import RateLimited
from edgebed.web.render import render

log = logging.getLogger(__name__)

# Most specific first: a subclass of another listed error must come before it.
_STATUS = (
    (InvalidInput, 400),
    (AuthenticationFailed, 401),
    (NotAuthorized, 403),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (BadReply, 502),
    (AgentUnavailable, 503),
    (StorageFull, 503),
)

_TITLES = {
    400: "Bad request",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    429: "Too many attempts",
    502: "Bad answer from the agent",
    503: "Agent unavailable",
}


# Errors shown on the page the form came from; 401/403 mean the page is not the viewer's to see.
_REDRAWN = frozenset({400, 404, 409, 429, 503})


def status_for(error: ServiceError) -> int:
    for error_type, status in _STATUS:
        if isinstance(error, error_type):
            return status
    return 400


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


async def _error_response(
    request: web.Request,
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    fields: dict[str, str] | None = None,
    *,
    title: str | None = None,
) -> web.StreamResponse:
    if _is_api(request):
        body: dict[str, object] = {"error": message}
        if fields:
            # Which input is wrong, by name: {"os_password": "must be 8 to 128 characters long"}.
            body["fields"] = fields
        answer = web.json_response(body, status=status, headers=headers)
        if status == 401:
            answer.headers["WWW-Authenticate"] = 'Bearer realm="edgebed"'
        return answer
    try:
        await current_user(request)
    except ServiceError:
        pass  # the error page is drawn for an anonymous visitor then
    redrawn: web.StreamResponse | None = None
    response: web.StreamResponse
    if status in _REDRAWN:
        try:
            redrawn = await redraw(request, message, status)
        except ServiceError as again:
            # The page cannot be drawn either (an agent went away meanwhile): the plain page.
            log.info("the form's page could not be drawn again: %s", again)
    form = request.get(FORM_TEMPLATE)
    if redrawn is not None:
        response = redrawn
    elif form is not None:
        template, context = form
        response = await render(request, template, {**context, "error": message}, status=status)
    else:
        title = title or _TITLES.get(status, "Error")
        response = await render(
            request, "error.html", {"title": title, "message": message, "status": status},
            status=status,
        )
    if headers:
        response.headers.update(headers)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except StorageFull as error:
        # Logged by the store, once a minute; the request wrote nothing and may be sent again.
        return await _error_response(request, 503, error.message, {"Retry-After": "60"}, title="Disk full")
    except ServiceError as error:
        message = getattr(error, "message", "") or str(error) or "the request failed"
        fields = error.fields if isinstance(error, InvalidProperties) else None
        return await _error_response(request, status_for(error), message, fields=fields)
    except RateLimited as error:
        return await _error_response(
            request, 429, error.message, {"Retry-After": str(error.retry_after)}
        )
    except web.HTTPException as error:
        if error.status < 400:
            raise
        message = error.reason
        kept: dict[str, str] = {}
        if error.status == 404:
            message = "there is no page at this address"
        elif error.status == 405:
            # RFC 9110: a 405 lists the methods the resource takes.
            allowed = error.headers.get("Allow", "")
            message = f"{request.method} is not allowed here" + (f"; use {allowed}" if allowed else "")
            kept["Allow"] = allowed
        elif error.status == 413:
            message = "the request is too large"
        return await _error_response(request, error.status, message, kept or None)
    except Exception:
        # A bug, not bad input: logged with its traceback, shown without details.
        log.exception("unexpected error on %s %s", request.method, request.path)
        return await _error_response(request, 500, "an internal error occurred; it was logged")
