"""A hung agent (accepts the connection, never answers) served with pytest-grpc: flagged
disconnected after ONE 6-second deadline, and the other agents are not slowed meanwhile.

This is the suite's one test that waits for the real 6 s deadline.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from edgebed.controller.errors import AgentUnavailable
from edgebed.v1 import agent_pb2_grpc as pb_grpc
from tests.controller.conftest import controller_for, make_settings
from tests.controller.fake_agent import FakeAgent

# Slow: waits out a real call deadline of several seconds.
pytestmark = pytest.mark.slow

# pytest-grpc's server has one worker by default; the hung call must not hold the only one.
grpc_max_workers = 4


@pytest.fixture(scope="module")
def grpc_add_to_server():
    return pb_grpc.add_AgentServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer():
    hung = FakeAgent("hung", nodes=2)
    yield hung
    hung.release.set()


@pytest.fixture(scope="module")
def grpc_stub_cls():
    return pb_grpc.AgentStub


async def test_a_hung_agent_costs_one_deadline_once_and_never_slows_the_others(
    tmp_path, clock, fake_agents, grpc_server, grpc_addr, grpc_servicer
):
    settings = make_settings(tmp_path, call_timeout_seconds=6.0)
    healthy = {f"ok{i}": fake_agents(f"ok{i}", nodes=2) for i in range(3)}
    host, _, port = grpc_addr.rpartition(":")
    async with controller_for(settings, clock) as ctl:
        admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
        for name, served in healthy.items():
            await ctl.agents.add_agent(admin, name, "raspberry", "127.0.0.1", served.port, served.fake.token)
        info = await ctl.agents.add_agent(admin, "hung", "raspberry", host, int(port), grpc_servicer.token)
        assert info.status == "connected" and info.node_count == 2
        calls_before = grpc_servicer.calls["GetNodes"]

        grpc_servicer.hang.set()
        try:
            started = time.monotonic()
            everyone = asyncio.create_task(ctl.inventory.refresh())
            await asyncio.sleep(0.1)
            # While the hung call is pending, work on the healthy agents completes.
            healthy_records = [await ctl.store.agents.get_agent(name) for name in healthy]
            partial = await ctl.inventory.refresh(healthy_records)
            assert partial == {name: None for name in healthy}
            assert not everyone.done()

            outcome = await everyone
            elapsed = time.monotonic() - started
            assert {name: outcome[name] for name in healthy} == {name: None for name in healthy}
            assert isinstance(outcome["hung"], AgentUnavailable)
            assert outcome["hung"].code == "DEADLINE_EXCEEDED"
            # One deadline for the whole refresh, not one per agent (a correctness check of the
            # concurrency, with a wide margin for a loaded machine).
            assert 5.9 <= elapsed < 6.0 + 2.5, elapsed

            record = await ctl.store.agents.get_agent("hung")
            assert (record.status, record.last_error) == ("disconnected", "no answer within 6 s (GetNodes)")
            assert grpc_servicer.calls["GetNodes"] == calls_before + 1

            # From now on nobody waits for it: it is not called again until reconnected.
            await ctl.inventory.refresh()
            await ctl.scheduler.poll()
            nodes = {node.name: node.connected for node in await ctl.inventory.list_nodes()}
            assert nodes["hung-000"] is False and nodes["ok0-000"] is True
            assert grpc_servicer.calls["GetNodes"] == calls_before + 1
        finally:
            grpc_servicer.release.set()
