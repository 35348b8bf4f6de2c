"""Fixtures for the controller's tests: fake agents on loopback gRPC servers, real agent
processes (tests/processes.py), a real PostgreSQL server for the session, settings and an injected clock."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from edgebed.controller.app import Controller, open_controller
from edgebed.controller.settings import Settings
from tests.controller.fake_agent import FakeAgent, ServedAgent
from tests.processes import AgentProcess, stop_all

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
