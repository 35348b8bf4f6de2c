"""Bad replies from a real gRPC agent (the fake, told to tamper with its replies) are refused where
they enter the controller: the call raises BadReply, the agent's last_error says what was wrong,
it stays connected, nothing of the reply is stored, and a good reply to the same method clears
the error."""

from __future__ import annotations

import logging

import pytest

from edgebed.controller.domain import Environment
from edgebed.controller.errors import BadReply, InvalidInput
from edgebed.v1 import agent_pb2 as pb
from tests.controller import fake_agent
from tests.controller.conftest import controller_for, make_settings


async def register(ctl, served, name="rpi"):
    admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
    info = await ctl.agents.add_agent(admin, name, "raspberry", "127.0.0.1", served.port, served.fake.token)
    assert (info.status, info.last_error) == ("connected", "")
    return admin


async def stored(ctl):
    """Everything the controller keeps of its agents' replies."""
    return (
        await ctl.store.inventory.list_nodes(),
        await ctl.store.inventory.list_catalogs(),
        await ctl.store.schedule.list_schedule(),
    )


def nul_property(reply):
    reply.nodes[0].properties["serial"] = "abc\x00def"
    return reply


def many_properties(reply):
    for i in range(65):
        reply.nodes[0].properties[f"p{i}"] = "v"
    return reply


def duplicate_node(reply):
    reply.nodes.add().CopyFrom(reply.nodes[0])
    return reply


def process_without_final_state(reply):
    del reply.processes[0].states[-1]
    return reply


def negative_size(reply):
    reply.environments[0].size_bytes = -1
    return reply


def too_many_environments(reply):
    for i in range(200):
        reply.environments.add(name=f"extra-{i:03d}", image="/img/x.img")
    return reply


INVENTORY_FAULTS = [
    ("GetNodes", fake_agent.long_node_name, "node 4: name has 100 characters, more than 64"),
    ("GetNodes", fake_agent.newline_node_name, "node 4: name 'rpi-000\\n' is not a name"),
    ("GetNodes", duplicate_node, "node 'rpi-000' appears twice"),
    ("GetNodes", nul_property, "node rpi-000: property serial contains a NUL character"),
    ("GetNodes", many_properties, "node rpi-000: properties: 67 of them, more than 64"),
    ("DescribeNodeType", fake_agent.long_state_name_in_a_process, "process deploy: state has 100 characters"),
    ("DescribeNodeType", process_without_final_state, "process deploy: its last state boot_sd is not a final"),
    ("ListEnvironments", fake_agent.long_description, "environment bloated: description has 10240 characters"),
    ("ListEnvironments", negative_size, "environment raspios-lite: size_bytes is -1, not between 0 and"),
    ("ListEnvironments", too_many_environments, "environments: 202 of them, more than 200"),
]


@pytest.mark.parametrize(
    ("method", "tamper", "problem"), INVENTORY_FAULTS, ids=[f"{m}-{p[:25]}" for m, _, p in INVENTORY_FAULTS]
)
async def test_a_bad_inventory_reply_is_refused_whole_and_flagged(
    tmp_path, clock, fake_agents, method, tamper, problem
):
    served = fake_agents("rpi", nodes=3)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        await register(ctl, served)
        before = await stored(ctl)
        served.fake.tamper[method] = tamper
        outcome = await ctl.inventory.refresh(catalogs=True)
        assert isinstance(outcome["rpi"], BadReply)
        assert problem in outcome["rpi"].message
        agent = await ctl.store.agents.get_agent("rpi")
        assert agent.status == "connected"
        assert agent.last_error.startswith(f"bad reply to {method}: ") and problem in agent.last_error
        assert len(agent.last_error) <= 500 and fake_agent.MARK not in agent.last_error
        assert await stored(ctl) == before
        assert ctl.metrics.calls("rpi", method, "bad_reply") == 1

        # Another method's good reply does not clear it; a good reply to this method does.
        await ctl.inventory.refresh(catalogs=method != "GetNodes")
        assert (await ctl.store.agents.get_agent("rpi")).last_error.startswith(f"bad reply to {method}: ")
        del served.fake.tamper[method]
        assert (await ctl.inventory.refresh(catalogs=True))["rpi"] is None
        assert (await ctl.store.agents.get_agent("rpi")).last_error == ""


def set_field(**values):
    def change(reply):
        for action in reply.actions:
            for name, value in values.items():
                setattr(action, name, value)
        return reply

    return change


def report_another_node(reply):
    reply.actions.add().CopyFrom(reply.actions[0])
    reply.actions[-1].node_name = "rpi-002"
    return reply


ACTION_FAULTS = [
    (set_field(progress=-5), "action of node rpi-000: progress is -5, not between 0 and 100"),
    (set_field(state_idx=-1), "action of node rpi-000: state_idx is -1, not between 0 and 6"),
    (set_field(state_count=10**6), "action of node rpi-000: state_count is 1000000, but deploy has 7 states"),
    (set_field(state="x" * 100), "action of node rpi-000: state has 100 characters, more than 64"),
    (set_field(state="wipe"), "action of node rpi-000: state wipe is not state"),
    (set_field(process="explode"), "action of node rpi-000: process explode is not one of its node type's"),
    (set_field(updated_at=-1), "action of node rpi-000: updated_at is -1"),
    (set_field(final=True), "action of node rpi-000: final is True, but"),
    (report_another_node, "action of node rpi-002: that node was not asked for"),
]


@pytest.mark.parametrize(("tamper", "problem"), ACTION_FAULTS, ids=[p[24:50] for _, p in ACTION_FAULTS])
async def test_a_bad_action_report_leaves_the_reservation_as_it_was(tmp_path, clock, fake_agents, tamper, problem):
    served = fake_agents("rpi", nodes=3)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        await register(ctl, served)
        user = await ctl.accounts.create_user("alice@example.org", "user-password", authorized=True)
        await ctl.reservations.reserve(user, nodes=["rpi-000"], start_date=int(clock()), duration_hours=1)
        await ctl.reservations.configure(user, "rpi-000", properties={"environment": "raspios-lite"})
        report = await ctl.scheduler.poll()
        assert report.started == ["rpi-000:deploy"]
        [row] = await ctl.store.schedule.list_schedule()
        assert (row.status, row.action_state) == ("in_progress", "netboot")

        served.fake.tamper["GetActionState"] = tamper
        for _ in range(3):
            await ctl.scheduler.poll()
        assert await ctl.store.schedule.list_schedule() == [row]
        agent = await ctl.store.agents.get_agent("rpi")
        assert agent.status == "connected"
        assert agent.last_error.startswith("bad reply to GetActionState: ") and problem in agent.last_error
        assert ctl.metrics.calls("rpi", "GetActionState", "bad_reply") == 3

        del served.fake.tamper["GetActionState"]
        await ctl.scheduler.poll()
        [after] = await ctl.store.schedule.list_schedule()
        assert after.action_state != "netboot" and after.state_count == 7
        assert (await ctl.store.agents.get_agent("rpi")).last_error == ""


@pytest.mark.parametrize("method", ["StartActions", "StartAction"])
async def test_a_bad_start_action_reply_leaves_the_intention_in_doubt_until_a_good_report(
    tmp_path, clock, fake_agents, caplog, method
):
    # StartActions, or StartAction for an agent that does not serve the batch (UNIMPLEMENTED).
    served = fake_agents("rpi", nodes=3)
    served.fake.batch = method == "StartActions"
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        await register(ctl, served)
        user = await ctl.accounts.create_user("alice@example.org", "user-password", authorized=True)
        await ctl.reservations.reserve(user, nodes=["rpi-000"], start_date=int(clock()), duration_hours=1)
        await ctl.reservations.configure(user, "rpi-000", properties={"environment": "raspios-lite"})
        served.fake.tamper["StartAction"] = served.fake.tamper["StartActions"] = fake_agent.long_state
        with caplog.at_level(logging.WARNING, logger="edgebed.controller.agents"):
            report = await ctl.scheduler.poll()
        assert report.started == [] and served.fake.started == [("rpi-000", "deploy")]
        [row] = await ctl.store.schedule.list_schedule()
        # Sent, answered with garbage: as if it had not answered. Nothing of the answer is kept.
        assert (row.pending, row.pending_issued, row.action_state, row.progress) == ("deploy", True, "", 0)
        agent = await ctl.store.agents.get_agent("rpi")
        assert agent.last_error.startswith(f"bad reply to {method}: action of node rpi-000: state has 100")
        assert f"agent rpi: refused its reply: bad reply to {method}:" in caplog.text

        # The agent's next (good) report shows the action it runs: adopted, never sent twice.
        report = await ctl.scheduler.poll()
        assert report.adopted == ["rpi-000:deploy"]
        assert served.fake.started == [("rpi-000", "deploy")]
        assert (await ctl.store.agents.get_agent("rpi")).last_error == ""


async def test_a_bad_description_on_reconnect_keeps_the_agent_disconnected(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=3)
    served.fake.tamper["DescribeNodeType"] = fake_agent.long_state_name_in_a_process
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
        info = await ctl.agents.add_agent(admin, "rpi", "raspberry", "127.0.0.1", served.port, served.fake.token)
        assert info.status == "disconnected" and info.node_count == 0
        assert info.last_error.startswith("bad reply to DescribeNodeType: process deploy: state has 100 characters")
        assert await stored(ctl) == ([], [], [])

        del served.fake.tamper["DescribeNodeType"]
        info = await ctl.agents.reconnect(admin, "rpi")
        assert (info.status, info.last_error, info.node_count) == ("connected", "", 3)


async def test_a_bad_put_environment_reply_is_an_error_for_the_admin(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=1)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        admin = await register(ctl, served)

        def bloat(reply):
            reply.environment.description = "d" * 10240
            return reply

        served.fake.tamper["PutEnvironment"] = bloat
        with pytest.raises(BadReply, match="agent rpi sent a bad reply to PutEnvironment: environment new-os: "
                           "description has 10240 characters, more than 4096"):
            await ctl.inventory.put_environment(admin, "rpi", Environment("new-os", image="/img/new.img"))
        assert "bad reply to PutEnvironment" in (await ctl.store.agents.get_agent("rpi")).last_error
        # A good ListEnvironments (the next refresh) says the same things again: it clears it.
        await ctl.inventory.refresh(catalogs=True)
        assert (await ctl.store.agents.get_agent("rpi")).last_error == ""


async def test_names_ending_with_a_newline_are_refused_by_the_controller(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=1)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        admin = await register(ctl, served)
        with pytest.raises(InvalidInput, match="agent name"):
            await ctl.agents.add_agent(admin, "rpi\n", "raspberry", "127.0.0.1", served.port, served.fake.token)
        with pytest.raises(InvalidInput, match="node name"):
            await ctl.inventory.add_node(admin, "rpi", "rpi-000\n", {"ip": "10.1.0.9"})
        assert [a.name for a in await ctl.store.agents.list_agents()] == ["rpi"]
        assert "rpi-000\n" not in served.fake.nodes


def test_the_fake_tampers_with_a_copy_of_its_reply():
    fake = fake_agent.FakeAgent("rpi", nodes=1)
    reply = pb.GetNodesResponse(nodes=[pb.Node(name="a")])
    fake.tamper["GetNodes"] = fake_agent.long_node_name
    changed = fake._out("GetNodes", reply)
    assert len(changed.nodes) == 2 and len(reply.nodes) == 1
