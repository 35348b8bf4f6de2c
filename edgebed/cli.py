"""The `edgebed` command line: parses arguments and hands them to the side that does the work.

Each side's module is imported only when its command runs, so `edgebed agent` on a Raspberry Pi
never loads the web stack. A bad input ends the command with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from edgebed.config import ConfigError
from edgebed.errors import UsageError

__all__ = ["UsageError", "build_parser", "main"]


# command -> "module:function"; the function takes the parsed arguments and returns an exit code.
_HANDLERS = {
    "agent": "edgebed.agent.cli:run_agent",
    "controller": "edgebed.serve:run_controller",
    "demo": "edgebed.demo:run_demo",
    "admin": "edgebed.controller.cli:run_admin",
    "tls": "edgebed.tls:run_tls",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgebed",
        description="Reservation and deployment manager for shared hardware testbeds.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    agent = commands.add_parser(
        "agent", help="run an agent", description="Run an agent: the gRPC service and executor."
    )
    agent.add_argument("--config", required=True, metavar="FILE", help="agent TOML file")

    controller = commands.add_parser(
        "controller",
        help="run the controller",
        description="Run the controller: web pages, JSON API, /metrics and the scheduler.",
    )
    controller.add_argument("--config", required=True, metavar="FILE", help="controller TOML file")
    controller.add_argument(
        "--role",
        choices=("all", "web", "scheduler"),
        default="all",
        help=(
            "all: pages, API, /metrics and the scheduler in one process (default); web: pages, API "
            "and /metrics without the scheduler; scheduler: the scheduler alone, with /metrics at "
            "[scheduler] metrics_listen when set"
        ),
    )

    demo = commands.add_parser(
        "demo",
        help="run a controller and three simulated agents",
        description=(
            "Start a controller and three agents (raspberry, node, sensor) with simulated "
            "hardware on loopback, data under ./var/demo/, and print the admin credentials."
        ),
    )
    demo.add_argument("--port", type=int, default=8080, help="controller HTTP port (8080)")
    demo.add_argument("--data-dir", default="var/demo", help="where the demo keeps its data")

    admin = commands.add_parser(
        "admin", help="administer accounts and agents", description="Administer edgebed."
    )
    admin_commands = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")

    create_user = admin_commands.add_parser(
        "create-user",
        help="create an account",
        description=(
            "Create an account. The password is read from stdin; when stdin is a terminal "
            "or empty, one is generated and printed."
        ),
    )
    create_user.add_argument("email")
    create_user.add_argument("--admin", action="store_true", help="make it an administrator")
    create_user.add_argument(
        "--authorized", action="store_true", help="let it log in without approval"
    )
    create_user.add_argument("--config", required=True, metavar="FILE")

    add_agent = admin_commands.add_parser(
        "add-agent",
        help="register an agent",
        description="Register an agent; one that does not answer yet is kept as disconnected.",
    )
    add_agent.add_argument("name")
    add_agent.add_argument("--type", required=True, choices=("raspberry", "node", "sensor"))
    add_agent.add_argument("--ip", required=True)
    add_agent.add_argument("--port", required=True, type=int)
    add_agent.add_argument(
        "--token-file", required=True, metavar="F", help="file holding the agent's token"
    )
    add_agent.add_argument(
        "--ca-file",
        metavar="F",
        help=(
            "PEM CA that issued the agent's certificate (or that certificate itself, pinned): "
            "calls then go over TLS; without, in plaintext"
        ),
    )
    add_agent.add_argument("--config", required=True, metavar="FILE")

    api_token = admin_commands.add_parser(
        "api-token",
        help="print a new API token for a user",
        description="Create and print a new API token for the user with that email.",
    )
    api_token.add_argument("email")
    api_token.add_argument("--config", required=True, metavar="FILE")

    tls = commands.add_parser(
        "tls",
        help="make a small CA and the agents' and controller's certificates",
        description=(
            "A certificate authority for TLS between the controller and its agents: ECDSA P-256 "
            "keys written with mode 0600, never overwritten."
        ),
    )
    tls_commands = tls.add_subparsers(dest="tls_command", required=True, metavar="ACTION")
    tls_ca = tls_commands.add_parser(
        "ca", help="create the CA", description="Create DIR/ca.pem and DIR/ca.key (mode 0600)."
    )
    tls_ca.add_argument("--dir", required=True, metavar="DIR", help="where the CA lives (created mode 0700)")
    tls_ca.add_argument("--days", type=int, metavar="N", help="validity in days (3650)")
    tls_issue = tls_commands.add_parser(
        "issue",
        help="issue an agent's or the controller's certificate",
        description=(
            "Issue DIR/NAME.pem and DIR/NAME.key (mode 0600), signed by DIR/ca.pem: an agent's "
            "server certificate naming the addresses the controller dials (--ip, --dns), or with "
            "--client the controller's client certificate for agents that require one."
        ),
    )
    tls_issue.add_argument("--dir", required=True, metavar="DIR", help="the CA's directory")
    tls_issue.add_argument("--name", required=True, help="file name and common name, e.g. the agent's name")
    tls_issue.add_argument(
        "--ip", action="append", metavar="IP", help="an address the certificate is valid for (repeatable)"
    )
    tls_issue.add_argument(
        "--dns", action="append", metavar="NAME", help="a host name the certificate is valid for (repeatable)"
    )
    tls_issue.add_argument("--client", action="store_true", help="a client certificate (the controller's)")
    tls_issue.add_argument("--days", type=int, metavar="N", help="validity in days (825, at most the CA's)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, _, function_name = _HANDLERS[args.command].partition(":")
    handler = getattr(importlib.import_module(module_name), function_name)
    try:
        return int(handler(args) or 0)
    except (ConfigError, UsageError) as exc:
        print(f"edgebed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
