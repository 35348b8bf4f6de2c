"""Typed keys for what the web application keeps in its aiohttp Application and requests."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from edgebed.controller.app import Controller
    from edgebed.controller.domain import User
    from edgebed.controller.settings import Settings
    from edgebed.web.mail import ConfirmationMailer

# Filled by the cleanup context in web.app (or injected by tests); every handler reads it.
CONTROLLER: web.AppKey[Controller] = web.AppKey("controller")
SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
MAILER: web.AppKey[ConfirmationMailer] = web.AppKey("mailer")
# Whether the controller the app opens runs the scheduler (False: `--role web`).
RUN_SCHEDULER: web.AppKey[bool] = web.AppKey("run_scheduler")

# The signed-in user of this request, once web.auth has looked it up (None: anonymous).
USER: web.RequestKey[User | None] = web.RequestKey("edgebed_user")
# A handler that reads a form sets this before calling the service, so that the error middleware
# shows the same form again with the message instead of a bare error page: (template, context).
FORM_TEMPLATE: web.RequestKey[tuple[str, dict[str, Any]]] = web.RequestKey("edgebed_form")
# A handler that reads a form sets this (web.formpage.redraw_on_error) so that the error
# middleware draws the page the form was posted from again, with the values kept and the message
# beside the field it is about, under the error's own HTTP status.
FORM_PAGE: web.RequestKey[Any] = web.RequestKey("edgebed_form_page")
# Which field of that form the error is about ("reserve.start"), or which form ("reserve").
ERROR_FIELD: web.RequestKey[str] = web.RequestKey("edgebed_error_field")
