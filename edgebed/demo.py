"""`edgebed demo`: a controller and three simulated agents on loopback, ready in one command.

Composed here, beside the command line, from the three sides: the agents (edgebed.agent), the
controller (edgebed.controller) and its web application (edgebed.web). The three agents
(raspberry, node, sensor; sim driver) run in this process, each with its own database, thread and
gRPC server, next to the controller. Everything lives under --data-dir
(var/demo): the agents' databases, the controller's database and secret key, demo.json (the
agents' ports and tokens) and the admin's password. Running the demo again reuses all of it:
same ports, same tokens, same accounts and reservations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from edgebed.errors import UsageError

ADMIN_EMAIL = "admin@edgebed.local"
# Simulated hardware: a few nodes per agent, durations shrunk so a deploy takes about a minute.
DEMO_AGENTS = (("raspberry", 8), ("node", 4), ("sensor", 6))
DEMO_TIME_SCALE = 0.05
STATE_FILE = "demo.json"


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
async def running_agents(data_dir: Path) -> AsyncIterator[list[tuple[dict, object]]]:
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
            print(f"url: http://127.0.0.1:{args.port}", flush=True)
            print(f"admin: {admin.email}", flush=True)
            print(f"password: {password}", flush=True)
            print(
                f"data: {data_dir} (agents: {', '.join(e['name'] for e, _ in agents)}); "
                "Ctrl-C stops the demo",
                flush=True,
            )
            await stop.wait()
        finally:
            await runner.cleanup()
    return 0


def run_demo(args) -> int:
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        return await _serve(args, stop)

    return asyncio.run(main())
