"""`edgebed controller --config FILE`: the controller composed with its web application.

The controller package checks the settings and opens the database, agent channels and scheduler
(in the web application's cleanup context); the web package serves the pages, the JSON API and
/metrics. Composing both here keeps the controller package free of any import of the web one.
"""

from __future__ import annotations

import logging
from typing import Any

from edgebed.config import ConfigError, split_host_port
from edgebed.controller.cli import check_startup, setup_logging
from edgebed.controller.settings import load_settings


def run_controller(args: Any) -> int:
    """Loads `args.config`, checks the key file and the database, then serves until stopped.

    Returns 0 on a clean stop; raises ConfigError (one line, exit code 2) on a bad setting, a bad
    key file, a database that cannot be opened, or a web application that cannot be loaded.
    """
    settings = load_settings(args.config)
    check_startup(settings)
    setup_logging(logging.INFO)
    from aiohttp import web

    try:
        from edgebed.web.app import create_app
    except ImportError as exc:
        raise ConfigError(f"the web application cannot be loaded: {exc}") from None
    host, port = split_host_port(settings.listen)
    web.run_app(create_app(settings), host=host, port=port, access_log=None)
    return 0
