"""The agent client's transport on its own: the interceptor attaches the token and the deadline,
and every call's outcome reaches the observer before the call returns or raises.

A grpc.aio server on loopback plays the agent; it records what each call carried and answers
with the status code a test asks for.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from edgebed.controller.agent_client import AgentClient, CallOutcome
from edgebed.controller.domain import CONNECTED, AgentRecord
from edgebed.controller.errors import AgentRejectedToken, AgentUnavailable, Conflict, NotFound
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc as pb_grpc
from tests.controller.conftest import controller_for, make_settings


class RecordingAgent(pb_grpc.AgentServicer):
    """Answers GetNodes and StartAction; `fail_with` makes the next calls fail with that code.
    DescribeNodeType, which the client asks once before its first StartAction (to check the
    answer against), always answers and is not recorded."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, float | None]] = []  # (method, authorization, time left)
        self.fail_with: grpc.StatusCode | None = None
        self.delay = 0.0  # seconds each call waits before answering

    async def _enter(self, method: str, context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        self.seen.append((method, metadata.get("authorization", ""), context.time_remaining()))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with is not None:
            await context.abort(self.fail_with, f"told to fail with {self.fail_with.name}")

    async def GetNodes(self, request, context):
        await self._enter("GetNodes", context)
        return pb.GetNodesResponse(nodes=[pb.Node(name="n-000", properties={"ip": "10.0.0.1"})])

    async def DescribeNodeType(self, request, context):
        return pb.DescribeNodeTypeResponse(
            type="raspberry",
            processes=[pb.Process(name="deploy", states=["netboot", "deployed"])],
            final_states=["deployed", "rebooted", "destroyed", "lost"],
        )

    async def StartAction(self, request, context):
        await self._enter("StartAction", context)
        return pb.StartActionResponse(
            action=pb.ActionState(
                node_name=request.node_name, process=request.process, state="netboot", state_count=2
            )
        )


@pytest.fixture
async def agent():
    servicer = RecordingAgent()
    server = grpc.aio.server()
    pb_grpc.add_AgentServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    servicer.port = port
    servicer.server = server
    yield servicer
    await server.stop(None)


@pytest.fixture
async def client():
    outcomes: list[CallOutcome] = []

    async def observe(outcome: CallOutcome) -> None:
        outcomes.append(outcome)

    client = AgentClient(observe, timeout=2.0)
    client.outcomes = outcomes
    yield client
    await client.close()


def record(agent: RecordingAgent, token: str = "tok-1") -> AgentRecord:
    return AgentRecord(name="a1", type="raspberry", ip="127.0.0.1", port=agent.port, status=CONNECTED, token=token)


async def test_every_call_carries_the_bearer_token_and_the_deadline(agent, client):
    assert await client.get_nodes(record(agent)) == {"n-000": {"ip": "10.0.0.1"}}
    await client.start_action(record(agent), "n-000", "deploy")
    assert [(method, auth) for method, auth, _ in agent.seen] == [
        ("GetNodes", "Bearer tok-1"), ("StartAction", "Bearer tok-1")
    ]
    for _, _, remaining in agent.seen:
        # The deadline crosses the wire rounded up to a coarser unit, hence the small slack.
        assert remaining is not None and 1.0 < remaining <= 2.05, remaining

    # A new token for the same address: a new channel with the new token.
    await client.get_nodes(record(agent, token="tok-2"))
    assert agent.seen[-1][1] == "Bearer tok-2"


async def test_each_outcome_is_reported_once_with_method_code_and_latency(agent, client):
    await client.get_nodes(record(agent))
    [ok] = client.outcomes
    assert (ok.agent.name, ok.method, ok.code, ok.ok, ok.probe) == ("a1", "GetNodes", "OK", True, False)
    assert 0 <= ok.seconds < 2.0 and ok.reason == ""

    expected = [
        (grpc.StatusCode.NOT_FOUND, NotFound, ""),
        (grpc.StatusCode.FAILED_PRECONDITION, Conflict, ""),
        (grpc.StatusCode.UNAUTHENTICATED, AgentRejectedToken, "wrong token"),
        (grpc.StatusCode.INTERNAL, AgentUnavailable, "agent error: INTERNAL: told to fail with INTERNAL"),
    ]
    for code, error, reason in expected:
        agent.fail_with = code
        with pytest.raises(error) as raised:
            await client.start_action(record(agent), "n-000", "deploy")
        assert raised.value.code == code.name
        outcome = client.outcomes[-1]
        assert (outcome.method, outcome.code, outcome.lost, outcome.reason) == ("StartAction", code.name, False, reason)
    # GetNodes, the DescribeNodeType before the first StartAction, the StartActions.
    assert [o.method for o in client.outcomes[:2]] == ["GetNodes", "DescribeNodeType"]
    assert len(client.outcomes) == 2 + len(expected)
    # None of these makes the agent lost.
    assert client.usable(record(agent))


async def test_a_lost_agent_is_reported_and_not_called_again_until_probed(agent, client):
    agent.fail_with = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(AgentUnavailable) as raised:
        await client.get_nodes(record(agent))
    assert raised.value.code == "UNAVAILABLE" and "now disconnected" in raised.value.message
    [lost] = client.outcomes
    assert lost.lost and lost.reason == "unavailable: told to fail with UNAVAILABLE"

    # The caller still holds the `connected` record; the client knows better.
    assert not client.usable(record(agent))
    calls = len(agent.seen)
    with pytest.raises(AgentUnavailable):
        await client.get_nodes(record(agent))
    assert len(agent.seen) == calls and len(client.outcomes) == 1

    # A probe calls whatever the status; the recorder and the store decide when it is usable.
    agent.fail_with = None
    await client.probe(record(agent))
    assert client.outcomes[-1].probe and client.outcomes[-1].code == "OK"
    assert client.usable(record(agent))


async def test_a_call_past_its_deadline_is_reported_as_no_answer(agent):
    outcomes: list[CallOutcome] = []

    async def observe(outcome: CallOutcome) -> None:
        outcomes.append(outcome)

    client = AgentClient(observe, timeout=0.3)
    agent.delay = 1.5
    try:
        with pytest.raises(AgentUnavailable) as raised:
            await client.get_nodes(record(agent))
    finally:
        await client.close()
    assert raised.value.code == "DEADLINE_EXCEEDED"
    [late] = outcomes
    assert late.lost and late.reason == "no answer within 0.3 s (GetNodes)"
    assert 0.25 <= late.seconds < 1.5, late.seconds


async def test_the_recorder_reports_a_wrong_token_once_and_clears_it_after_a_success(
    tmp_path, clock, fake_agents, caplog
):
    served = fake_agents("rpi", nodes=1)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
        await ctl.agents.add_agent(admin, "rpi", "raspberry", "127.0.0.1", served.port, served.fake.token)
        served.fake.token = "rotated"
        with caplog.at_level(logging.WARNING, logger="edgebed.controller.agents"):
            for _ in range(3):
                await ctl.inventory.refresh()
        assert caplog.text.count("rejected the controller's token") == 1
        stored = await ctl.store.agents.get_agent("rpi")
        assert (stored.status, stored.last_error) == ("connected", "wrong token")
        assert ctl.metrics.calls("rpi", "GetNodes", "unauthenticated") == 3

        served.fake.token = "secret-token"
        await ctl.inventory.refresh()
        stored = await ctl.store.agents.get_agent("rpi")
        assert (stored.status, stored.last_error) == ("connected", "")
