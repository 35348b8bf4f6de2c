"""`python -m controller.headless --config FILE`: the controller without its web server.

Runs the scheduler (and the periodic inventory refresh) until SIGTERM or SIGINT. For sites that
drive edgebed only through scripts, and for tests that must kill the scheduler with SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from edgebed.config import ConfigError
from edgebed.controller.app import open_controller
from edgebed.controller.cli import database_error
from edgebed.controller.settings import Settings, load_settings
from edgebed.controller.store import StoreUnavailable
from edgebed.stopsignals import stop_on_signals


async def serve(settings: Settings) -> int:
    try:
        opened = open_controller(settings, run_scheduler=True, check_integrity=True, role="scheduler")
        async with opened:
            stop = asyncio.Event()
            stop_on_signals(stop)
            print("edgebed controller scheduler running", flush=True)
            await stop.wait()
    except StoreUnavailable as exc:
        raise database_error(settings, exc) from None
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m controller.headless", description="Run the controller's scheduler without the web server."
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="controller TOML file")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        return asyncio.run(serve(settings))
    except ConfigError as exc:
        print(f"edgebed: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
