"""Fixtures for the agent's tests: real agents (in-process grpc.aio servers on port 0, SQLite in
tmp_path) and a stub that sends the token."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from edgebed.agent.app import open_agent
from edgebed.agent.settings import AgentSettings
from edgebed.v1 import agent_pb2_grpc

TOKEN = "agent-test-token-6f1d0c"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


def make_settings(tmp_path: Path, type: str = "raspberry", **overrides) -> AgentSettings:
    values = dict(
        name={"raspberry": "rpi", "node": "srv", "sensor": "sns"}[type],
        type=type,
        listen="127.0.0.1:0",
        token=TOKEN,
        database=str(tmp_path / f"{type}.sqlite"),
        driver="sim",
        sim_nodes=6,
        sim_time_scale=0.0,
        sim_failure_rate=0.0,
        sim_seed=1,
    )
    values.update(overrides)
    return AgentSettings(**values)


@pytest.fixture
async def agent(tmp_path):
    async with open_agent(make_settings(tmp_path)) as running:
        yield running


@pytest.fixture
async def stub(agent):
    async with grpc.aio.insecure_channel(agent.address) as channel:
        yield agent_pb2_grpc.AgentStub(channel)
