"""A real agent process killed with SIGKILL mid-deploy, or stopped with SIGTERM, loses nothing."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from edgebed.nodetypes import load_node_type
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from tests.agent.conftest import AUTH, TOKEN
from tests.processes import AgentProcess

# Slow: real agent processes, 100 nodes deploying, SIGKILL and restart.
pytestmark = pytest.mark.slow

DEPLOY = load_node_type("raspberry").processes["deploy"].state_names


def _agent(tmp_path, nodes: int, time_scale: float) -> AgentProcess:
    return AgentProcess(tmp_path, "crash", nodes=nodes, time_scale=time_scale, token=TOKEN)


async def _deploy_all(address: str, count: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        await asyncio.gather(*[
            stub.StartAction(
                pb.StartActionRequest(
                    node_name=f"crash-{i:03d}", process="deploy", environment="raspios-lite-arm64"
                ),
                metadata=AUTH, timeout=10,
            )
            for i in range(1, count + 1)
        ])


async def _wait_all_final(address: str, timeout: float) -> dict[str, pb.ActionState]:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        while True:
            reply = await stub.GetActionState(pb.GetActionStateRequest(), metadata=AUTH, timeout=6)
            states = {a.node_name: a for a in reply.actions}
            if states and all(a.final for a in states.values()):
                return states
            assert time.monotonic() < deadline, "actions did not finish in time"
            await asyncio.sleep(0.1)


def _check_history(agent: AgentProcess, names: list[str]) -> None:
    """Each node's last action entered every state of deploy in order: none skipped, none twice
    (a resumed state is run again, not entered again); hard reboots may come in between."""
    transitions = agent.transitions()
    for name in names:
        mine = [t for t in transitions if t.node_name == name]
        last = mine[-1].action_id
        entered = [(t.state_idx, t.state) for t in mine if t.action_id == last and t.event == "enter"]
        assert entered == list(enumerate(DEPLOY)), (name, entered)
        assert not [t for t in mine if t.event == "lost"]


async def test_sigkill_mid_deploy_then_restart_finishes_all_100(tmp_path) -> None:
    # time_scale 0.01: one deploy lasts about 2 s (boots, a 2.7 GB copy, configuration).
    agent = _agent(tmp_path, nodes=100, time_scale=0.01).start()
    try:
        await _deploy_all(agent.address, 100)
        await asyncio.sleep(1.0)
    finally:
        agent.kill()
    unfinished = [a for a in agent.actions().values() if not a.final]
    # The kill really came mid-way: actions were spread over the states.
    assert len(unfinished) > 50
    assert all(a.state_idx > 0 for a in unfinished)

    agent.start()
    try:
        states = await _wait_all_final(agent.address, timeout=40)
    finally:
        assert agent.terminate() == 0
    names = [f"crash-{i:03d}" for i in range(1, 101)]
    assert sorted(states) == names
    assert {a.state for a in states.values()} == {"deployed"}
    _check_history(agent, names)
    assert agent.started("deploy") == {name: 1 for name in names}


async def test_sigterm_stops_gracefully_and_loses_nothing(tmp_path) -> None:
    agent = _agent(tmp_path, nodes=20, time_scale=0.01).start()
    try:
        await _deploy_all(agent.address, 20)
        await asyncio.sleep(0.8)
    finally:
        assert agent.terminate() == 0
    log = agent.log()
    assert "agent crash stopped" in log and "Traceback" not in log
    assert TOKEN not in log

    actions = agent.actions()
    transitions = agent.transitions()
    assert any(not a.final for a in actions.values())
    # Every committed action row agrees with the last state its log entered.
    for name, action in actions.items():
        entered = [t for t in transitions if t.node_name == name and t.event == "enter"]
        assert (entered[-1].state, entered[-1].state_idx) == (action.state, action.state_idx)

    agent.start()
    try:
        states = await _wait_all_final(agent.address, timeout=30)
    finally:
        assert agent.terminate() == 0
    assert {a.state for a in states.values()} == {"deployed"}
    names = [f"crash-{i:03d}" for i in range(1, 21)]
    _check_history(agent, names)
    assert agent.started("deploy") == {name: 1 for name in names}
