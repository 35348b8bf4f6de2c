"""`edgebed controller --config FILE`: the controller composed with its web application.

The controller package checks the settings and opens the database, agent channels and scheduler;
the web package serves the pages, the JSON API and /metrics. Composing both here keeps the
controller package free of any import of the web one.

Start-up takes, in this order, what another process could hold or what could be broken, so that
each refusal is one line on stderr and exit code 2 with nothing started: the listen address, the
lock of the SQLite file (a second controller on it is refused), the secret key file, the
database (SQLite's integrity check, then the schema migration).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from typing import Any

from edgebed.config import ConfigError
from edgebed.controller.cli import database_error, setup_logging
from edgebed.controller.settings import Settings, load_settings
from edgebed.listen import listening_socket

log = logging.getLogger(__name__)


def run_controller(args: Any) -> int:
    """Loads `args.config`, takes the listen address, opens the controller, then serves until
    SIGTERM or SIGINT.

    Returns 0 on a clean stop; raises ConfigError (one line, exit code 2) on a bad setting, a
    listen address in use, a database another controller uses, a bad key file, a damaged
    database or one that cannot be opened, or a web application that cannot be loaded.
    """
    settings = load_settings(args.config)
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
        return asyncio.run(_serve(settings, listener))
    finally:
        listener.close()


async def _serve(settings: Settings, listener: socket.socket) -> int:
    from aiohttp import web

    from edgebed.controller.app import open_controller
    from edgebed.controller.store import StoreUnavailable
    from edgebed.web.app import create_app

    async with contextlib.AsyncExitStack() as stack:
        try:
            controller = await stack.enter_async_context(
                open_controller(settings, run_scheduler=True, check_integrity=True)
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
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        log.info("controller serving on http://%s", settings.listen)
        await stop.wait()
        log.info("controller stopping")
    return 0
