"""`edgebed controller --config FILE [--role all|web|scheduler]`: the controller composed with
its web application, whole or in two processes.

- `all` (the default): one process serving the pages, the JSON API and /metrics, and running the
  scheduler (its polls and the periodic inventory refresh).
- `web`: the pages, the JSON API and /metrics, without the scheduler: page latency never
  depends on what a poll costs. Users' actions are picked up by a scheduler process on the same
  database at its next poll (`[scheduler] poll_seconds`).
- `scheduler`: the scheduler alone; it serves nothing but /metrics (its own call and poll
  counters, and the database's gauges) at `[scheduler] metrics_listen` when that is set.

Any number of `web` processes and ONE scheduler (`all` or `scheduler`) may share a database: a
scheduler locks a SQLite file, so a second one is refused. The controller package checks the
settings and opens the database, agent channels and scheduler; the web package serves the
pages, the JSON API and /metrics. Composing both here keeps the controller package free of any
import of the web one.

Start-up takes, in this order, what another process could hold or what could be broken, so that
each refusal is one line on stderr and exit code 2 with nothing started: the listen address, the
lock of the SQLite file (a second controller on it is refused), the secret key file, the
database (SQLite's integrity check, then the schema migration).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

from edgebed.collector import tune_collector
from edgebed.config import ConfigError
from edgebed.controller.cli import database_error, setup_logging
from edgebed.controller.settings import Settings, load_settings
from edgebed.listen import listening_socket
from edgebed.stopsignals import stop_on_signals

log = logging.getLogger(__name__)

ROLES = ("all", "web", "scheduler")
SCHEDULER_READY = "edgebed controller scheduler running"


def run_controller(args: Any) -> int:
    """Loads `args.config`, takes the listen address (`[scheduler] metrics_listen` for the
    scheduler role, when set), opens the controller, then serves `args.role` until SIGTERM or
    SIGINT.

    Returns 0 on a clean stop; raises ConfigError (one line, exit code 2) on a bad setting, a
    listen address in use, a database another controller uses, a bad key file, a damaged
    database or one that cannot be opened, or a web application that cannot be loaded.
    """
    role = getattr(args, "role", "all") or "all"
    if role not in ROLES:
        raise ConfigError(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    settings = load_settings(args.config)
    # A controller with 20,000 reservations starting spent a quarter of its CPU collecting.
    tune_collector()
    if role == "scheduler":
        return _run_scheduler(args.config, settings)
    try:
        listener = listening_socket(settings.listen)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise ConfigError(f"{args.config}: key 'listen' {settings.listen!r}: cannot listen there: {reason}") from None
    try:
        try:
            from edgebed.web.app import create_app  # noqa: F401 - loaded now to fail before serving
        except ImportError as exc:
            raise ConfigError(f"the web application cannot be loaded: {exc}") from None
        return asyncio.run(_serve(settings, listener, role=role))
    finally:
        listener.close()


async def _serve(settings: Settings, listener: socket.socket, *, role: str) -> int:
    from aiohttp import web

    from edgebed.controller.app import open_controller
    from edgebed.controller.store import StoreUnavailable
    from edgebed.web.app import create_app

    async with contextlib.AsyncExitStack() as stack:
        try:
            controller = await stack.enter_async_context(
                open_controller(settings, run_scheduler=role == "all", check_integrity=True, role=role)
            )
        except StoreUnavailable as exc:
            raise database_error(settings, exc) from None
        # Only now: start-up refusals above are one line each, without log lines around them.
        setup_logging(logging.INFO)
        runner = web.AppRunner(create_app(settings, controller=controller), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.SockSite(runner, listener).start()
        stop = asyncio.Event()
        stop_on_signals(stop)
        log.info("controller serving on http://%s", settings.listen)
        await stop.wait()
        log.info("controller stopping")
    return 0


def _run_scheduler(config: str, settings: Settings) -> int:
    listener = None
    if settings.metrics_listen:
        try:
            listener = listening_socket(settings.metrics_listen)
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise ConfigError(
                f"{config}: key 'scheduler.metrics_listen' {settings.metrics_listen!r}: cannot listen there: {reason}"
            ) from None
    try:
        return asyncio.run(_serve_scheduler(settings, listener))
    finally:
        if listener is not None:
            listener.close()


async def _serve_scheduler(settings: Settings, listener: socket.socket | None) -> int:
    """The scheduler alone until SIGTERM or SIGINT, with /metrics on `listener` when given.
    Prints SCHEDULER_READY (and where /metrics is) on stdout once it runs."""
    from aiohttp import web

    from edgebed.controller.app import open_controller
    from edgebed.controller.store import StoreUnavailable

    async with contextlib.AsyncExitStack() as stack:
        try:
            controller = await stack.enter_async_context(
                open_controller(settings, run_scheduler=True, check_integrity=True, role="scheduler")
            )
        except StoreUnavailable as exc:
            raise database_error(settings, exc) from None
        setup_logging(logging.INFO)
        where = ""
        if listener is not None:

            async def metrics(request: web.Request) -> web.Response:
                return web.Response(text=await controller.metrics.render(), content_type="text/plain", charset="utf-8")

            app = web.Application()
            app.router.add_get("/metrics", metrics)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.SockSite(runner, listener).start()
            host, port = listener.getsockname()[:2]
            where = f"; /metrics on http://{host}:{port}"
        stop = asyncio.Event()
        stop_on_signals(stop)
        print(SCHEDULER_READY + where, flush=True)
        await stop.wait()
        log.info("scheduler stopping")
    return 0
