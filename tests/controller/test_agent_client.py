"""The agent client: tokens, lost agents, reconnecting, duplicate node names, metrics."""

from __future__ import annotations

import logging

import pytest

from edgebed.controller.errors import AgentRejectedToken, AgentUnavailable, InvalidInput
from tests.conftest import free_port
from tests.controller.conftest import controller_for, make_settings


@pytest.fixture
async def ctl(tmp_path, clock):
    async with controller_for(make_settings(tmp_path), clock) as controller:
        controller.admin = await controller.accounts.create_user(
            "admin@example.org", "admin-password", admin=True, authorized=True
        )
        yield controller


async def test_an_agent_that_does_not_answer_is_kept_disconnected_until_reconnected(ctl, fake_agents):
    port = free_port()
    info = await ctl.agents.add_agent(ctl.admin, "late", "raspberry", "127.0.0.1", port, "secret-token")
    assert info.status == "disconnected"
    assert info.last_error.startswith("unavailable:")
    served = fake_agents("late", nodes=2, port=port)
    # Disconnected: refreshes and polls leave it alone until an administrator reconnects it.
    await ctl.inventory.refresh()
    await ctl.inventory.list_nodes(refresh=True)
    assert sum(served.fake.calls.values()) == 0
    info = await ctl.agents.reconnect(ctl.admin, "late")
    assert (info.status, info.last_error, info.node_count) == ("connected", "", 2)
    # Reconnect's probe is one call; the catalog refresh that follows a success adds the rest.
    assert served.fake.calls["DescribeNodeType"] == 2 and served.fake.calls["GetNodes"] == 1
    assert [n.name for n in await ctl.inventory.list_nodes()] == ["late-000", "late-001"]


async def test_a_refused_token_is_reported_as_a_wrong_token_not_as_a_lost_agent(ctl, fake_agents):
    served = fake_agents("rpi", nodes=1)
    info = await ctl.agents.add_agent(ctl.admin, "rpi", "raspberry", "127.0.0.1", served.port, "not-the-token")
    assert (info.status, info.last_error) == ("disconnected", "wrong token")

    await ctl.agents.delete_agent(ctl.admin, "rpi")
    info = await ctl.agents.add_agent(ctl.admin, "rpi", "raspberry", "127.0.0.1", served.port, served.fake.token)
    assert info.status == "connected"
    served.fake.token = "rotated-on-the-agent"
    outcome = await ctl.inventory.refresh()
    assert isinstance(outcome["rpi"], AgentRejectedToken)
    assert "wrong token" in outcome["rpi"].message
    [info] = await ctl.agents.list_agents(ctl.admin)
    assert (info.status, info.last_error) == ("connected", "wrong token")
    served.fake.token = "secret-token"
    assert (await ctl.inventory.refresh())["rpi"] is None
    [info] = await ctl.agents.list_agents(ctl.admin)
    assert (info.status, info.last_error) == ("connected", "")


async def test_node_names_claimed_by_two_agents_are_reported_never_merged(ctl, fake_agents, caplog):
    first = fake_agents("site", nodes=3)
    second = fake_agents("site", nodes=2)  # names site-000 and site-001 again
    await ctl.agents.add_agent(ctl.admin, "first", "raspberry", "127.0.0.1", first.port, first.fake.token)
    with caplog.at_level(logging.ERROR):
        info = await ctl.agents.add_agent(ctl.admin, "second", "raspberry", "127.0.0.1", second.port, second.fake.token)
    assert info.status == "connected" and info.node_count == 0
    assert info.last_error == (
        "duplicate node names, ignored on this agent: site-000 (held by first), site-001 (held by first)"
    )
    assert "second claims node names another agent holds" in caplog.text
    nodes = await ctl.inventory.list_nodes(refresh=True)
    assert [(n.name, n.agent) for n in nodes] == [("site-000", "first"), ("site-001", "first"), ("site-002", "first")]
    # The duplicate goes away on the agent's side: so does the report.
    second.fake.nodes = {"other-000": {"ip": "10.9.0.1"}}
    await ctl.inventory.refresh()
    agents = {a.name: a for a in await ctl.agents.list_agents(ctl.admin)}
    assert agents["second"].last_error == "" and agents["second"].node_count == 1


async def test_calls_are_counted_by_agent_method_and_outcome(ctl, fake_agents):
    served = fake_agents("rpi", nodes=1)
    await ctl.agents.add_agent(ctl.admin, "rpi", "raspberry", "127.0.0.1", served.port, served.fake.token)
    served.fake.token = "changed"
    with pytest.raises(AgentUnavailable):
        await ctl.client.get_nodes(await ctl.store.agents.get_agent("rpi"))
    text = await ctl.metrics.render()
    assert 'edgebed_agent_calls_total{agent="rpi",method="GetNodes",outcome="ok"} 1' in text
    assert 'edgebed_agent_calls_total{agent="rpi",method="GetNodes",outcome="unauthenticated"} 1' in text
    assert 'edgebed_agent_call_seconds_count{agent="rpi",method="GetNodes"} 2' in text
    assert 'edgebed_reservations{status="ready"} 0' in text
    assert "secret-token" not in text


@pytest.mark.parametrize("token", ["two words", "line\nbreak", "accentu\u00e9", "bell\x07"])
async def test_a_token_grpc_cannot_send_is_refused_at_registration(ctl, fake_agents, token):
    # gRPC refuses such a header value with an exception that is no RpcError: registered, it
    # would break every refresh and every poll of the scheduler, for all agents.
    served = fake_agents("rpi", nodes=1)
    with pytest.raises(InvalidInput) as refused:
        await ctl.agents.add_agent(ctl.admin, "rpi", "raspberry", "127.0.0.1", served.port, token)
    assert "token" in refused.value.message and token not in refused.value.message
    assert await ctl.agents.list_agents(ctl.admin) == []
