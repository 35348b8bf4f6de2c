"""`edgebed controller --config FILE [--role all|web|scheduler]`: the controller composed with
its web application, whole or in two processes.

- `all` (the default): one process serving the pages, the JSON API and /metrics, and running the
  scheduler (its polls and the periodic inventory refresh).
- `web`: the pages, the JSON API and /metrics, without the scheduler: page latency never
  depends on what a poll costs. Users' actions are picked up by a scheduler process on the same
  database at its next poll (`[scheduler] poll_seconds`).
- `scheduler`: the scheduler alone; it serves nothing but /metrics (its own call and poll
  counters, and the database's gauges) at `[scheduler] metrics_listen` when that is set.

Any number of `web` processes and ONE `scheduler` process may share a database (two schedulers
would not break a reservation, every write being a compare-and-set, but would call the agents
twice). The controller package checks the settings and opens the database, agent channels and
scheduler; the web package serves the pages. Composing both here keeps the controller package
free of any import of the web one.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from edgebed.config import ConfigError, split_host_port
from edgebed.controller.cli import check_startup, database_error, setup_logging
from edgebed.controller.settings import Settings, load_settings

ROLES = ("all", "web", "scheduler")
SCHEDULER_READY = "edgebed controller scheduler running"


def run_controller(args: Any) -> int:
    """Loads `args.config`, checks the key file and the database, then serves `args.role` until
    stopped.

    Returns 0 on a clean stop; raises ConfigError (one line, exit code 2) on a bad setting, a bad
    key file, a database that cannot be opened, or a web application that cannot be loaded.
    """
    role = getattr(args, "role", "all") or "all"
    if role not in ROLES:
        raise ConfigError(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    settings = load_settings(args.config)
    check_startup(settings)
    setup_logging(logging.INFO)
    if role == "scheduler":
        return asyncio.run(serve_scheduler(settings))
    from aiohttp import web

    try:
        from edgebed.web.app import create_app
    except ImportError as exc:
        raise ConfigError(f"the web application cannot be loaded: {exc}") from None
    host, port = split_host_port(settings.listen)
    web.run_app(create_app(settings, run_scheduler=role == "all"), host=host, port=port, access_log=None)
    return 0


async def serve_scheduler(settings: Settings) -> int:
    """The scheduler alone until SIGTERM or SIGINT, with /metrics at settings.metrics_listen
    when set. Prints SCHEDULER_READY (and where /metrics is) once it runs."""
    from aiohttp import web

    from edgebed.controller.app import open_controller
    from edgebed.controller.store import StoreUnavailable

    try:
        async with open_controller(settings, run_scheduler=True) as controller:
            runner: web.AppRunner | None = None
            where = ""
            if settings.metrics_listen:

                async def metrics(request: web.Request) -> web.Response:
                    return web.Response(
                        text=await controller.metrics.render(), content_type="text/plain", charset="utf-8"
                    )

                app = web.Application()
                app.router.add_get("/metrics", metrics)
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                host, port = split_host_port(settings.metrics_listen)
                site = web.TCPSite(runner, host, port)
                try:
                    await site.start()
                except OSError as exc:
                    await runner.cleanup()
                    raise ConfigError(
                        f"key 'scheduler.metrics_listen': cannot listen on {settings.metrics_listen}: {exc.strerror}"
                    ) from None
                bound = runner.addresses[0] if runner.addresses else (host, port)
                where = f"; /metrics on http://{bound[0]}:{bound[1]}"
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            print(SCHEDULER_READY + where, flush=True)
            try:
                await stop.wait()
            finally:
                if runner is not None:
                    await runner.cleanup()
    except StoreUnavailable as exc:
        raise database_error(settings, exc) from None
    return 0
