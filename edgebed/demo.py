"""`edgebed demo`: a controller and three simulated agents on loopback, ready in one command.

Composed here, beside the command line, from the three sides: the agents (edgebed.agent), the
controller (edgebed.controller) and its web application (edgebed.web). The three agents
(raspberry, node, sensor; sim driver) run in this process, each with its own database, thread and
gRPC server, next to the controller. Everything lives under --data-dir (var/demo):

- agents/NAME.sqlite and agents/NAME.token: each agent's database and token (mode 0600, for
  `grpcurl -H "authorization: Bearer $(cat ...)"`);
- demo.json: the agents' names, types, ports and tokens;
- controller.sqlite, secret.key: the controller's database and key;
- controller.toml: a controller configuration naming that database and key, which the
  `edgebed admin ... --config` commands accept while the demo runs;
- admin-password and api-token (mode 0600): the admin's password and an API token of the admin.

It prints, one per line: `url: `, `admin: `, `password: `, `api-token: `, one
`agent: NAME TYPE HOST:PORT` per agent, `config: ` (controller.toml) and `data: `. Running the
demo again reuses all of it: same ports, tokens, accounts and reservations (a new API token only
when the stored one was revoked).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from edgebed.collector import tune_collector
from edgebed.errors import UsageError
from edgebed.stopsignals import stop_on_signals

if TYPE_CHECKING:
    # Imported where used at run time, so `edgebed demo --help` loads neither side.
    from edgebed.agent.app import RunningAgent

ADMIN_EMAIL = "admin@edgebed.local"
# Simulated hardware: a few nodes per agent, durations shrunk so a deploy takes about a minute.
DEMO_AGENTS = (("raspberry", 8), ("node", 4), ("sensor", 6))
DEMO_TIME_SCALE = 0.05
STATE_FILE = "demo.json"
CONFIG_FILE = "controller.toml"


def _write_private(path: Path, text: str) -> None:
    """Writes a file only its owner can read (it holds tokens or a password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def demo_agents(data_dir: Path) -> list[dict]:
    """The agents' names, types, ports and tokens: read back from demo.json, or new ones (port 0
    until the first start picks one)."""
    path = data_dir / STATE_FILE
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))["agents"]
    return [
        {"name": f"{agent_type}-sim", "type": agent_type, "port": 0,
         "token": secrets.token_urlsafe(24), "nodes": nodes}
        for agent_type, nodes in DEMO_AGENTS
    ]


def save_demo_agents(data_dir: Path, agents: list[dict]) -> None:
    _write_private(data_dir / STATE_FILE, json.dumps({"agents": agents}, indent=2) + "\n")
    # One file per token, as an operator keeps them (add-agent --token-file, grpcurl examples).
    for entry in agents:
        _write_private(token_file(data_dir, entry["name"]), entry["token"] + "\n")


def token_file(data_dir: Path, agent_name: str) -> Path:
    return data_dir / "agents" / f"{agent_name}.token"


def agent_settings(data_dir: Path, entry: dict):
    from edgebed.agent.settings import AgentSettings

    return AgentSettings(
        name=entry["name"],
        type=entry["type"],
        listen=f"127.0.0.1:{entry['port']}",
        token=entry["token"],
        database=str(data_dir / "agents" / f"{entry['name']}.sqlite"),
        driver="sim",
        sim_nodes=entry["nodes"],
        sim_time_scale=DEMO_TIME_SCALE,
        source=str(data_dir / STATE_FILE),
    )


@contextlib.asynccontextmanager
async def running_agents(data_dir: Path) -> AsyncIterator[list[tuple[dict, RunningAgent]]]:
    """Starts the three agents concurrently, records the ports they got, stops them on exit."""
    from edgebed.agent.app import start_agent

    entries = demo_agents(data_dir)
    (data_dir / "agents").mkdir(parents=True, exist_ok=True)
    started = await asyncio.gather(
        *(start_agent(agent_settings(data_dir, entry)) for entry in entries),
        return_exceptions=True,
    )
    running = [agent for agent in started if not isinstance(agent, BaseException)]
    try:
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        for entry, agent in zip(entries, running, strict=True):
            entry["port"] = agent.port
        save_demo_agents(data_dir, entries)
        yield list(zip(entries, running, strict=True))
    finally:
        await asyncio.gather(*(agent.stop() for agent in running), return_exceptions=True)


def _admin_password(data_dir: Path) -> str:
    path = data_dir / "admin-password"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    password = secrets.token_urlsafe(12)
    _write_private(path, password + "\n")
    return password


async def ensure_admin(controller, email: str, password: str):
    from edgebed.controller.errors import NotFound

    try:
        return await controller.accounts.get_user(email)
    except NotFound:
        return await controller.accounts.create_user(email, password, admin=True, authorized=True)


async def register_agents(controller, admin, agents) -> None:
    """Registers each agent (or reconnects it when the controller flagged it disconnected while
    the demo was stopped)."""
    known = {info.name: info for info in await controller.agents.list_agents(admin)}

    async def register(entry: dict, agent) -> None:
        info = known.get(entry["name"])
        if info is None:
            await controller.agents.add_agent(
                admin, entry["name"], entry["type"], agent.host, agent.port, entry["token"]
            )
        elif info.status != "connected":
            await controller.agents.reconnect(admin, entry["name"])

    await asyncio.gather(*(register(entry, agent) for entry, agent in agents))
    await controller.inventory.list_nodes(refresh=True)


def demo_settings(data_dir: Path, port: int):
    from edgebed.controller.settings import Settings

    return Settings(
        listen=f"127.0.0.1:{port}",
        database=str(data_dir / "controller.sqlite"),
        secret_key_file=str(data_dir / "secret.key"),
        poll_seconds=1.0,
        turnaround_seconds=30,
    )


def _toml_string(value: str) -> str:
    # A JSON string is a TOML basic string: quotes, backslashes and control characters escaped.
    return json.dumps(value)


def write_controller_config(data_dir: Path, settings) -> Path:
    """controller.toml: the demo controller's own settings (the same database and secret key),
    for `edgebed admin ... --config` beside the running demo. Absolute paths, so it works from
    any directory; no secret in it (the key stays in its own file)."""
    path = data_dir / CONFIG_FILE
    text = (
        "# Written by `edgebed demo` at each start: the running demo's controller settings, for\n"
        "# `edgebed admin ... --config` beside it. Changes are overwritten.\n"
        f"listen = {_toml_string(settings.listen)}\n"
        f"database = {_toml_string(settings.database)}\n"
        f"secret_key_file = {_toml_string(settings.secret_key_file)}\n"
        "\n[scheduler]\n"
        f"poll_seconds = {settings.poll_seconds!r}\n"
        "\n[reservations]\n"
        f"turnaround_seconds = {settings.turnaround_seconds!r}\n"
    )
    path.write_text(text, encoding="utf-8")
    return path


async def demo_api_token(controller, data_dir: Path, email: str) -> str:
    """The admin's API token kept in data_dir/api-token (mode 0600): the stored one while it
    still works, else a new one (labelled "demo"), stored."""
    from edgebed.controller.errors import ServiceError

    path = data_dir / "api-token"
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        try:
            user = await controller.accounts.user_for_api_token(token)
        except ServiceError:
            user = None  # revoked from the settings page, or the database was reset
        if user is not None and user.email == email:
            return token
    token = await controller.accounts.create_api_token(email, label="demo")
    _write_private(path, token + "\n")
    return token


async def _serve(args, stop: asyncio.Event) -> int:
    from edgebed.web.app import create_app
    from edgebed.web.keys import CONTROLLER

    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    async with running_agents(data_dir) as agents:
        settings = demo_settings(data_dir, args.port)
        app = create_app(settings)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", args.port)
            try:
                await site.start()
            except OSError as exc:
                raise UsageError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}") from None
            controller = app[CONTROLLER]
            password = _admin_password(data_dir)
            admin = await ensure_admin(controller, ADMIN_EMAIL, password)
            await register_agents(controller, admin, agents)
            token = await demo_api_token(controller, data_dir, admin.email)
            config = write_controller_config(data_dir, settings)
            lines = [
                f"url: http://127.0.0.1:{args.port}",
                f"admin: {admin.email}",
                f"password: {password}",
                f"api-token: {token}",
                *(f"agent: {entry['name']} {entry['type']} {agent.host}:{agent.port}" for entry, agent in agents),
                f"config: {config}",
                f"data: {data_dir} (agent tokens in {data_dir / 'agents'}/NAME.token); Ctrl-C stops the demo",
            ]
            print("\n".join(lines), flush=True)
            await stop.wait()
        finally:
            await runner.cleanup()
    return 0


def run_demo(args) -> int:
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_collector()

    async def main() -> int:
        stop = asyncio.Event()
        stop_on_signals(stop)
        return await _serve(args, stop)

    return asyncio.run(main())
