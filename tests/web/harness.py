"""A real testbed for the web tests: the real controller on a SQLite file and the real aiohttp
application on a loopback port, with simulated agents: either real agents served from the
testbed's own event loop (`Testbed.start_agents`: the gRPC service on a loopback port, the sim
driver, a SQLite file; no process start-up, so the web tests stay in the fast subset) or
`edgebed agent` child processes from tests/processes.py (the browser test).

The server runs in its own thread and event loop so that tests can drive it from plain
synchronous code: Playwright's sync API, hypothesis, and a small cookie-keeping HTTP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json as jsonlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from edgebed.agent.app import RunningAgent, open_agent
from edgebed.agent.settings import AgentSettings
from edgebed.controller.settings import Settings
from edgebed.web.app import create_app
from tests.processes import AgentProcess

PASSWORD = "correct horse battery"


# ---------------------------------------------------------------------------------------------
# the controller and web server, in a thread


@dataclass
class ServedAgent:
    """A real agent (gRPC service, executor, sim driver, SQLite file) served from the testbed's
    event loop; registered like an AgentProcess."""

    name: str
    type: str
    token: str
    host: str
    port: int
    running: RunningAgent


class _ErrorCollector(logging.Handler):
    """Keeps the tracebacks of unexpected server errors (the 500s), for the test to show."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.errors: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.errors.append(self.format(record))


class Testbed:
    __test__ = False  # not a test class, whatever its name
    def __init__(self, directory: Path, *, wall_clock: Callable[[], float] = time.time, **settings: Any) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        # The controller's wall clock (tests of a clock that jumps); its monotonic clock is the real one.
        self.wall_clock = wall_clock
        self.directory = directory
        values = {
            "listen": "127.0.0.1:0",
            "database": str(directory / "controller.sqlite"),
            "secret_key_file": str(directory / "secret.key"),
            "poll_seconds": 0.2,
            "call_timeout_seconds": 3.0,
            "turnaround_seconds": 0,
        }
        values.update(settings)
        self.settings = Settings(**values)
        self.agents: list[AgentProcess | ServedAgent] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="testbed", daemon=True)
        self._stack = contextlib.AsyncExitStack()
        # Closed after the controller, so that its scheduler never calls a stopped agent.
        self._agent_stack = contextlib.AsyncExitStack()
        self.controller = None
        self.app: web.Application | None = None
        self.url = ""
        self._errors = _ErrorCollector()

    @property
    def server_errors(self) -> list[str]:
        """Unexpected errors the web server logged (each one answered 500)."""
        return list(self._errors.errors)

    def call(self, coroutine, timeout: float = 60.0):
        """Runs a coroutine on the server's loop (e.g. a service call) and returns its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def start(self) -> Testbed:
        logging.getLogger("edgebed.web.errors").addHandler(self._errors)
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        from argon2 import PasswordHasher

        from edgebed.controller.app import open_controller

        # Cheap argon2 parameters: the tests log in hundreds of times; the hashes stay argon2id.
        hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        self.controller = await self._stack.enter_async_context(
            open_controller(self.settings, run_scheduler=True, password_hasher=hasher, clock=self.wall_clock)
        )
        self.app = create_app(self.settings, controller=self.controller)
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        logging.getLogger("edgebed.web.errors").removeHandler(self._errors)
        try:
            try:
                self.call(self._stack.aclose())
            finally:
                self.call(self._agent_stack.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    # -- set-up through the service layer (what an operator does with the CLI) ---------------

    def create_user(self, email: str, *, admin: bool = False, authorized: bool = True):
        return self.call(
            self.controller.accounts.create_user(email, PASSWORD, admin=admin, authorized=authorized)
        )

    def api_token(self, email: str) -> str:
        return self.call(self.controller.accounts.create_api_token(email, "tests"))

    def start_agents(self, wanted: Iterable[tuple[str, str, int]], *, time_scale: float,
                     hang_commands: frozenset[str] = frozenset()) -> list[ServedAgent]:
        """Serves one agent per (name, type, nodes) from the testbed's loop; stopped with it.
        `hang_commands`: the sim commands that hang every time (`[sim] hang_commands`)."""

        async def start() -> list[ServedAgent]:
            served = []
            for name, agent_type, nodes in wanted:
                settings = AgentSettings(
                    name=name, type=agent_type, listen="127.0.0.1:0", token=secrets.token_urlsafe(16),
                    database=str(self.directory / f"agent-{name}.sqlite"), driver="sim", sim_nodes=nodes,
                    sim_time_scale=time_scale, sim_failure_rate=0.0, sim_seed=1,
                    sim_hang_commands=hang_commands,
                )
                running = await self._agent_stack.enter_async_context(open_agent(settings))
                served.append(ServedAgent(name, agent_type, settings.token, running.host, running.port, running))
            return served

        return self.call(start())

    def register_agents(self, admin_email: str, agents: list[AgentProcess | ServedAgent]) -> None:
        admin = self.call(self.controller.accounts.get_user(admin_email))

        async def register() -> None:
            for agent in agents:
                await self.controller.agents.add_agent(
                    admin, agent.name, agent.type, agent.host, agent.port, agent.token
                )
            await self.controller.inventory.list_nodes(refresh=True)

        self.call(register())
        self.agents.extend(agents)


# ---------------------------------------------------------------------------------------------
# a small HTTP client that keeps cookies and finds the CSRF token


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")


@dataclass
class Client:
    base_url: str
    cookies: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    # The session's CSRF token, once read from a page (it lasts as long as the session).
    csrf: str | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        form: Mapping[str, Any] | Iterable[tuple[str, str]] | None = None,
        json: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        parts = urlsplit(self.base_url)
        sent_headers = dict(headers or {})
        if form is not None:
            body = urlencode(list(form.items()) if isinstance(form, Mapping) else list(form)).encode()
            sent_headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif json is not None:
            body = jsonlib.dumps(json).encode()
            sent_headers.setdefault("Content-Type", "application/json")
        if self.cookies:
            sent_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.token is not None:
            sent_headers.setdefault("Authorization", f"Bearer {self.token}")
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=sent_headers)
            raw = connection.getresponse()
            response = Response(raw.status, raw.headers, raw.read())
        finally:
            connection.close()
        for header in response.headers.get_all("Set-Cookie") or []:
            cookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                if morsel.value == "" or morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def csrf_token(self) -> str:
        if self.csrf is not None:
            return self.csrf
        page = self.get("/login")
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if not match:
            page = self.get("/settings")
            match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match, f"no CSRF token on the page ({page.status})"
        self.csrf = match.group(1)
        return self.csrf

    def post(self, path: str, form: Mapping[str, Any] | Iterable[tuple[str, str]] = (), *,
             csrf: bool = True) -> Response:
        fields = list(form.items()) if isinstance(form, Mapping) else list(form)
        if csrf:
            fields.append(("csrf_token", self.csrf_token()))
        response = self.request("POST", path, form=fields)
        if path in ("/login", "/logout"):
            self.csrf = None  # a new session, a new token
        return response

    def login(self, email: str, password: str = PASSWORD) -> Response:
        response = self.post("/login", {"email": email, "password": password})
        assert response.status == 303, (response.status, response.text[:500])
        return response
