"""`edgebed admin ...`, and the logging and database errors of `edgebed controller`.

The serving command itself is composed with the web application in edgebed/serve.py: the
controller package never imports the web package. Each handler gets the parsed arguments from
edgebed/cli.py and returns an exit code. Bad input raises UsageError or ConfigError, which
edgebed/cli.py prints as one line (exit code 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sys
from pathlib import Path
from typing import Any

from edgebed.config import ConfigError, redacted_url
from edgebed.controller.errors import ServiceError
from edgebed.controller.settings import Settings, load_settings
from edgebed.controller.store import StoreDamaged, StoreInUse, StoreUnavailable
from edgebed.errors import UsageError
from edgebed.storage import damaged_message, sqlite_file
from edgebed.tls import TlsError, read_ca_file

log = logging.getLogger(__name__)


def setup_logging(level: int) -> None:
    """Log records of `level` and above go to stderr, one line each."""
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def database_error(settings: Settings, exc: Exception) -> ConfigError:
    """The one-line ConfigError for a database that cannot be opened (its password hidden): one
    damaged, one another controller holds, or one that does not open."""
    if isinstance(exc, StoreDamaged):
        return ConfigError(damaged_message(sqlite_file(settings.database) or redacted_url(settings.database), str(exc)))
    if isinstance(exc, StoreInUse):
        return ConfigError(str(exc))
    return ConfigError(f"database {redacted_url(settings.database)}: cannot open: {exc}")


# -- edgebed admin ------------------------------------------------------------------------------


def _read_password() -> tuple[str, bool]:
    """(password, generated): stdin's first line, or a new one when stdin is a terminal or empty."""
    stdin = sys.stdin
    if stdin is not None and not stdin.isatty():
        line = stdin.readline().rstrip("\r\n")
        if line:
            return line, False
    return secrets.token_urlsafe(12), True


def _read_token_file(path: str) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UsageError(f"--token-file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--token-file {path}: cannot read: {exc}") from None
    if not token:
        raise UsageError(f"--token-file {path}: the file is empty")
    return token


def _read_ca_file(path: str | None) -> str:
    """The PEM text of --ca-file, checked; "" without the option (the agent is called in plaintext)."""
    if path is None:
        return ""
    try:
        return read_ca_file(path, "--ca-file").decode("ascii")
    except TlsError as exc:
        raise UsageError(str(exc)) from None


async def _admin(settings: Settings, args: Any) -> int:
    from edgebed.controller.app import open_controller

    command = args.admin_command
    # Read input before opening anything, so bad input fails fast and leaves no trace.
    password, generated = _read_password() if command == "create-user" else ("", False)
    token = _read_token_file(args.token_file) if command == "add-agent" else ""
    ca_pem = _read_ca_file(args.ca_file) if command == "add-agent" else ""
    async with contextlib.AsyncExitStack() as stack:
        try:
            controller = await stack.enter_async_context(open_controller(settings, run_scheduler=False))
        except StoreUnavailable as exc:
            raise database_error(settings, exc) from None
        try:
            if command == "create-user":
                user = await controller.accounts.create_user(
                    args.email, password, admin=args.admin, authorized=args.authorized
                )
                roles = [r for r, on in (("admin", user.is_admin), ("authorized", user.is_authorized)) if on]
                print(f"created user {user.email}" + (f" ({', '.join(roles)})" if roles else ""))
                if generated:
                    print(f"password: {password}")
            elif command == "add-agent":
                info = await controller.agents.register(args.name, args.type, args.ip, args.port, token, ca_pem)
                detail = f"{info.node_count} nodes" if info.status == "connected" else info.last_error
                print(f"agent {info.name} added: {info.status} ({detail})")
            elif command == "api-token":
                print(await controller.accounts.create_api_token(args.email, label="cli"))
            else:
                raise UsageError(f"unknown admin command {command!r}")
        except ServiceError as exc:
            raise UsageError(exc.message) from None
    return 0


def run_admin(args: Any) -> int:
    settings = load_settings(args.config)
    setup_logging(logging.WARNING)
    return asyncio.run(_admin(settings, args))
