"""Fixtures for the controller's tests: fake agents on loopback gRPC servers, real agent
processes (tests/processes.py), a real PostgreSQL server for the session, settings and an injected clock."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from edgebed.controller.app import Controller, open_controller
from edgebed.controller.settings import Settings
from tests.conftest import component_missing, free_port
from tests.controller.fake_agent import FakeAgent, ServedAgent
from tests.processes import AgentProcess, stop_all


def _postgres_bin() -> Path:
    """Debian's newest PostgreSQL server binaries (15 on bookworm), or EDGEBED_PG_BIN."""
    if os.environ.get("EDGEBED_PG_BIN"):
        return Path(os.environ["EDGEBED_PG_BIN"])
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _postgres_bin()

# Cheap argon2 parameters: the tests create many accounts; production uses the library defaults.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class FakeClock:
    """An injected wall clock and its monotonic twin: time moves only when a test says so.
    `advance` moves both (time passes); `jump` moves only the wall clock (someone set it)."""

    def __init__(self, now: float | None = None) -> None:
        self.now = float(int(now if now is not None else time.time()))
        self.elapsed = 0.0

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.elapsed

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.elapsed += seconds

    def jump(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_settings(tmp_path: Path, database: str | None = None, **overrides) -> Settings:
    values = dict(
        listen="127.0.0.1:0",
        database=database or str(tmp_path / "controller.sqlite"),
        secret_key_file=str(tmp_path / "secret.key"),
        poll_seconds=0.2,
        turnaround_seconds=0,
        call_timeout_seconds=2.0,
        # The scheduler's tests use windows of seconds or minutes; the shortest allowed duration
        # is tested as a rule of its own (tests/web/test_input_rules.py, test_reservations.py).
        min_duration_hours=1 / 3600,
    )
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def controller_for(
    settings: Settings, clock: Callable[[], float] = time.time, *, run_scheduler: bool = False, db_workers: int = 8
) -> AsyncIterator[Controller]:
    # A FakeClock brings its monotonic twin; the real wall clock goes with the real monotonic one.
    monotonic = getattr(clock, "monotonic", time.monotonic)
    async with open_controller(
        settings, run_scheduler=run_scheduler, clock=clock, monotonic=monotonic, password_hasher=FAST_HASHER,
        db_workers=db_workers,
    ) as controller:
        yield controller


@pytest.fixture
def fake_agents() -> Iterator[Callable[..., ServedAgent]]:
    """start(name, **FakeAgent kwargs) -> a served fake agent; all stopped at the end."""
    served: list[ServedAgent] = []

    def start(name: str, *, port: int = 0, **kwargs) -> ServedAgent:
        agent = ServedAgent(FakeAgent(name, **kwargs), port=port)
        served.append(agent)
        return agent

    yield start
    for agent in served:
        agent.stop()


# -- PostgreSQL ------------------------------------------------------------------------------


@dataclass
class PostgresServer:
    port: int
    root: Path

    def new_database(self) -> str:
        import psycopg2

        name = "edgebed_" + uuid.uuid4().hex[:12]
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


def _as_postgres() -> list[str]:
    """Prefix that runs a command as the `postgres` user (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"]
    return ["su", "postgres", "-s", "/bin/sh", "-c", '"$0" "$@"']


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        component_missing("PostgreSQL")
    root = Path(tempfile.mkdtemp(prefix="edgebed-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    port = free_port()
    run = _as_postgres()
    subprocess.run(
        [*run, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-h 127.0.0.1 -p {port} -k {root} -F -c max_connections=200"
    subprocess.run(
        [*run, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60", "-o", options, "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield PostgresServer(port=port, root=root)
    finally:
        subprocess.run(
            [*run, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "controller.sqlite")
    return request.getfixturevalue("postgres_url")


# -- real agent processes ----------------------------------------------------------------------


@pytest.fixture
def agent_processes(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """start(name, nodes=..., time_scale=..., type=...) -> a running `edgebed agent` (sim
    driver) under tmp_path/agents; all stopped at the end."""
    started: list[AgentProcess] = []

    def start(name: str, **kwargs) -> AgentProcess:
        agent = AgentProcess(tmp_path / "agents", name, **kwargs)
        started.append(agent)
        return agent.start()

    yield start
    stop_all(started)
