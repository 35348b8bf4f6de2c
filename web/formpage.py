"""Errors of a posted form shown on the page it was posted from, next to the field, with the
values kept; the HTTP status stays the error's own (400, 409, 503, ...) so scripts still see it.

A handler calls `redraw_on_error(request, draw, form)` once it has read the form, where
`draw(form_error, status)` draws the page again from the posted values, and wraps each step in
`about(request, "form.field")`; the error middleware (web.errors) calls `draw` when a service
error escapes the handler. Templates show the message with the `field_error(key)` and
`form_alert(form)` macros of macros.html.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from aiohttp import web

from edgebed.controller.errors import ServiceError
from edgebed.web.keys import ERROR_FIELD, FORM_PAGE

# The key of an error shown above the page's content (base.html), for one whose field or row is
# not on the page.
PAGE = "page"


@dataclass(frozen=True)
class FormError:
    """What the template shows: `field` is "form.field" beside which the message goes, or the
    form's own name when the error is about the form as a whole."""

    field: str
    message: str

    @property
    def form(self) -> str:
        return self.field.partition(".")[0]


Draw = Callable[[FormError, int], Awaitable[web.StreamResponse]]


def redraw_on_error(request: web.Request, draw: Draw, form: str) -> None:
    request[FORM_PAGE] = (draw, form)


@contextlib.contextmanager
def about(request: web.Request, key: str) -> Iterator[None]:
    """Marks a service error raised inside as being about the field `key` ("form.field"); the
    innermost mark wins."""
    try:
        yield
    except ServiceError:
        request.setdefault(ERROR_FIELD, key)
        raise


async def redraw(request: web.Request, message: str, status: int) -> web.StreamResponse | None:
    """The posted form's page with the message, or None when the handler set no page."""
    found = request.get(FORM_PAGE)
    if found is None:
        return None
    draw, form = found
    key = request.get(ERROR_FIELD, form)
    page = await draw(FormError(key, message), status)
    # The field or row the error is about may not be on the page (a row for an account or node
    # that does not exist): then the message goes above the page's content instead of nowhere.
    body = page.text if isinstance(page, web.Response) else None
    if body is not None and f'data-error-for="{html.escape(key)}"' not in body:
        page = await draw(FormError(PAGE, message), status)
    return page
