"""The aiohttp application: user and admin pages, the JSON API and /metrics.

`create_app(settings)` builds it; the controller (database, agent channels, scheduler) is opened
in a cleanup context when the app starts and closed when it stops. Tests inject an open
controller instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp_jinja2
import jinja2
from aiohttp import web

from edgebed.web import api, fragments, labels, views_account, views_admin, views_user
from edgebed.web.errors import error_middleware
from edgebed.web.forms import format_epoch
from edgebed.web.keys import CONTROLLER, MAILER, RUN_SCHEDULER, SETTINGS
from edgebed.web.mail import ConfirmationMailer
from edgebed.web.security import add_security_headers, csrf_middleware, session_middleware_for

if TYPE_CHECKING:
    from edgebed.controller.app import Controller
    from edgebed.controller.settings import Settings

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
# Forms and JSON bodies are small; anything bigger is refused with 413 before it is read.
MAX_BODY_BYTES = 256 * 1024


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", views_account.index)
    r.add_get("/signup", views_account.signup_form)
    r.add_post("/signup", views_account.signup)
    r.add_get("/login", views_account.login_form)
    r.add_post("/login", views_account.login)
    r.add_post("/logout", views_account.logout)
    r.add_get("/confirm", views_account.confirm_email)
    r.add_get("/settings", views_account.settings_page)
    r.add_post("/settings/password", views_account.change_password)
    r.add_post("/settings/ssh-key", views_account.set_ssh_key)
    r.add_post("/settings/tokens", views_account.create_token)
    r.add_post("/settings/tokens/revoke", views_account.revoke_token)

    r.add_get("/reserve", views_user.reserve_page)
    r.add_post("/reserve", views_user.reserve)
    r.add_get("/configure", views_user.configure_page)
    r.add_post("/configure", views_user.configure)
    r.add_get("/manage", views_user.manage_page)
    r.add_get("/manage/live", views_user.manage_live)
    r.add_post("/manage/action", views_user.manage_action)
    r.add_get("/history", views_user.history_page)

    r.add_get("/admin", views_admin.overview_page)
    r.add_get("/admin/users", views_admin.users_page)
    r.add_post("/admin/users", views_admin.user_action)
    r.add_post("/admin/users/create", views_admin.create_user)
    r.add_get("/admin/agents", views_admin.agents_page)
    r.add_post("/admin/agents", views_admin.add_agent)
    r.add_post("/admin/agents/action", views_admin.agent_action)
    r.add_get("/admin/nodes", views_admin.nodes_page)
    r.add_post("/admin/nodes", views_admin.node_action)
    r.add_get("/admin/environments", views_admin.environments_page)
    r.add_post("/admin/environments", views_admin.environment_action)
    r.add_post("/admin/clock/confirm", views_admin.confirm_clock)
    r.add_get("/admin/reservations", views_admin.reservations_page)
    r.add_post("/admin/reservations", views_admin.reservation_action)

    api.add_routes(app)
    r.add_static("/static", HERE / "static", name="static", append_version=False)


def create_app(
    settings: Settings, *, controller: Controller | None = None, run_scheduler: bool = True
) -> web.Application:
    """The application; it opens its own controller when none is given, with the scheduler
    unless `run_scheduler` is False (`edgebed controller --role web`: another process polls)."""
    app = web.Application(
        middlewares=[
            session_middleware_for(settings.secret_key(), secure=bool(settings.secure_cookies)),
            error_middleware,
            csrf_middleware,
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    app[SETTINGS] = settings
    app[MAILER] = ConfirmationMailer(settings.smtp_host, settings.smtp_port, settings.smtp_sender)

    environment = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["when"] = format_epoch
    environment.filters["prop_label"] = labels.prop
    environment.filters["status_label"] = labels.status
    environment.filters["state_label"] = labels.state
    environment.filters["agent_status_label"] = labels.agent_status
    # The manage page's rows, built in Python (web/fragments.py).
    environment.filters["manage_rows"] = fragments.manage_rows

    if controller is not None:
        app[CONTROLLER] = controller
    else:
        app[RUN_SCHEDULER] = run_scheduler
        app.cleanup_ctx.append(_controller_context)
    app.on_response_prepare.append(add_security_headers)
    add_routes(app)
    return app


async def _controller_context(app: web.Application) -> AsyncIterator[None]:
    from edgebed.controller.app import open_controller

    async with open_controller(app[SETTINGS], run_scheduler=app[RUN_SCHEDULER]) as controller:
        app[CONTROLLER] = controller
        yield
