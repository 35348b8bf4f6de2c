"""Fixtures for the controller's tests: fake agents on loopback gRPC servers, real agent
processes, a real PostgreSQL server for the session, settings and an injected clock."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
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

REPO = Path(__file__).resolve().parents[2]


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


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "controller.sqlite")
    return request.getfixturevalue("postgres_url")


# -- real agent processes ----------------------------------------------------------------------


@dataclass
class AgentProcess:
    name: str
    host: str
    port: int
    token: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


def edgebed_command() -> list[str]:
    """The installed console script, as users run it (`python -m edgebed.cli` would load
    edgebed.cli twice, as __main__ and as itself, with two distinct UsageError classes)."""
    script = Path(sys.executable).parent / "edgebed"
    if not script.exists():
        component_missing("the `edgebed` console script (pip install -e .)")
    return [str(script)]


def start_agent_process(
    directory: Path, name: str, *, nodes: int, time_scale: float, token: str = "agent-token", type: str = "raspberry"
) -> AgentProcess:
    if not (REPO / "agent" / "cli.py").exists():
        component_missing("the edgebed agent (agent/cli.py)")
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / f"{name}.toml"
    config.write_text(
        f'name = "{name}"\ntype = "{type}"\nlisten = "127.0.0.1:0"\ntoken = "{token}"\n'
        f'database = "{directory / (name + ".sqlite")}"\ndriver = "sim"\n'
        f"[sim]\nnodes = {nodes}\ntime_scale = {time_scale}\nfailure_rate = 0.0\nseed = 1\n",
        encoding="utf-8",
    )
    log_path = directory / f"{name}.log"
    log_file = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 - the child writes to it
    process = subprocess.Popen(
        [*edgebed_command(), "agent", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
        cwd=REPO,
    )
    log_file.close()
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    prefix = f"edgebed agent {name} listening on "
    if not line.startswith(prefix):
        process.kill()
        raise AssertionError(f"agent did not start: {line!r}\n{log_path.read_text()}")
    host, _, port = line[len(prefix) :].rpartition(":")
    return AgentProcess(name, host, int(port), token, process, log_path)


@pytest.fixture
def agent_processes(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(name: str, **kwargs) -> AgentProcess:
        agent = start_agent_process(tmp_path / "agents", name, **kwargs)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if agent.process.poll() is None:
            agent.process.send_signal(signal.SIGTERM)
            try:
                agent.process.wait(10)
            except subprocess.TimeoutExpired:
                agent.process.kill()
                agent.process.wait()
