"""End to end on loopback with REAL agent processes (`edgebed agent`, sim driver, small
time_scale): the life of a reservation, and a controller SIGKILLed mid-deployment."""

from __future__ import annotations

import asyncio
import time

import pytest

from edgebed.controller.store import Store
from tests.controller.conftest import controller_for, make_settings
from tests.processes import HeadlessController, final_states, write_controller_config

# Slow: real agent and controller processes, deploys of several seconds.
pytestmark = pytest.mark.slow

WAIT_SECONDS = 40


async def wait_for(condition, what: str, timeout: float = WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await condition()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_three_raspberry_nodes_deploy_at_start_and_are_destroyed_at_end(tmp_path, agent_processes):
    agent = agent_processes("pi", nodes=4, time_scale=0.005)
    settings = make_settings(tmp_path, poll_seconds=0.2, call_timeout_seconds=6.0)
    async with controller_for(settings, run_scheduler=True) as ctl:
        admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
        info = await ctl.agents.add_agent(admin, "pi", "raspberry", agent.host, agent.port, agent.token)
        assert (info.status, info.node_count) == ("connected", 4)
        user = await ctl.accounts.create_user("user@example.org", "user-password", authorized=True)
        environment = (await ctl.inventory.environments())["raspberry"][0]

        start = int(time.time()) + 3
        nodes = await ctl.reservations.reserve(
            user, filter={"type": "raspberry"}, count=3, start_date=start, duration_hours=9 / 3600
        )
        assert nodes == ["pi-001", "pi-002", "pi-003"]
        for node in nodes:
            reservation = await ctl.reservations.configure(
                user, node, bin="e2e", properties={"environment": environment.name, "os_password": "very-secret-1"}
            )
            assert reservation.status == "ready"

        async def statuses():
            return {r.node_name: (r.status, r.action_state) for r in await ctl.reservations.list_reservations(user)}

        while time.time() < start - 0.5:
            assert set((await statuses()).values()) == {("ready", "")}  # nothing before start_date
            await asyncio.sleep(0.2)

        async def all_deployed():
            current = await statuses()
            return current if set(current.values()) == {("ready", "deployed")} else None

        await wait_for(all_deployed, "the three nodes to be deployed")
        assert time.time() < start + 9, "deployed only after end_date: the test cannot see the destroy"
        reservations = await ctl.reservations.list_reservations(user)
        assert {(r.progress, r.default_user, r.node_ip != "") for r in reservations} == {
            (100, environment.default_user, True)
        }

        async def rows_gone():
            return not await ctl.store.schedule.list_schedule() and not await ctl.store.schedule.action_props()

        await wait_for(rows_gone, "the schedule and action_prop rows to go")
        assert time.time() >= start + 9
    assert agent.terminate() == 0
    # The agent's durable transition log: one deploy and one destroy per reserved node, each
    # ending in its final state, and nothing on the node nobody reserved.
    transitions = agent.transitions()
    assert agent.started("deploy") == {node: 1 for node in nodes}
    assert agent.started("destroy") == {node: 1 for node in nodes}
    assert final_states(transitions, "deploy") == {node: ["deployed"] for node in nodes}
    assert final_states(transitions, "destroy") == {node: ["destroyed"] for node in nodes}
    assert "very-secret-1" not in agent.log()


async def test_a_controller_sigkilled_during_the_deployment_of_20_nodes_loses_and_repeats_nothing(
    tmp_path, agent_processes
):
    agent = agent_processes("rack", nodes=20, time_scale=0.03)
    database = tmp_path / "controller.sqlite"
    # A short lease: the SIGKILLed controller's lease on the agent runs out (and the restarted one
    # drives it) within 4 s, while the deploys, all started by one StartActions, are under way.
    config = write_controller_config(
        tmp_path, database=str(database), scheduler={"poll_seconds": 0.2, "lease_seconds": 4.0},
        reservations={"turnaround_seconds": 0}, agents={"call_timeout_seconds": 2.0},
    )
    settings = make_settings(tmp_path, database=str(database))
    async with controller_for(settings) as ctl:
        admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
        await ctl.agents.add_agent(admin, "rack", "raspberry", agent.host, agent.port, agent.token)
        user = await ctl.accounts.create_user("user@example.org", "user-password", authorized=True)
        environment = (await ctl.inventory.environments())["raspberry"][0].name
        nodes = await ctl.reservations.reserve(
            user, filter={}, count=20, start_date=int(time.time()), duration_hours=1
        )
        assert len(nodes) == 20
        for node in nodes:
            await ctl.reservations.configure(user, node, properties={"environment": environment})

    store = Store(str(database), secret_key=settings.secret_key(), workers=2)
    await store.open()
    controller = HeadlessController(config)

    async def sending():
        # The first intentions are on disk: StartAction calls are about to go out or in flight.
        return any(r.pending_issued or r.action_state for r in await store.schedule.list_schedule())

    async def deploying():
        rows = await store.schedule.list_schedule()
        return sum(1 for r in rows if r.action_state not in ("", "deployed")) >= 10

    async def all_deployed():
        rows = await store.schedule.list_schedule()
        return rows if all(r.action_state == "deployed" for r in rows) else None

    try:
        # Killed twice: while the StartAction calls go out, then in the middle of the deploys.
        for kill_when, what in ((sending, "StartAction to be sent"), (deploying, "the deploys to be under way")):
            controller.start()
            await wait_for(kill_when, what, timeout=WAIT_SECONDS)
            controller.kill()
            rows = await store.schedule.list_schedule()
            assert not all(r.action_state == "deployed" for r in rows), "killed too late to show anything"

        controller.start()
        rows = await wait_for(all_deployed, "all 20 nodes to be deployed after the restart")
        assert controller.terminate() == 0
    finally:
        controller.stop()
        await store.close()

    assert sorted(r.node_name for r in rows) == nodes
    for row in rows:
        assert (row.status, row.process, row.pending, row.pending_issued, row.last_error) == (
            "ready", "deploy", "", False, ""
        ), row
    # What the agent did, from its durable transition log (not from log lines, which a StartAction
    # cancelled after its commit may never write): each node deployed exactly once, to the end.
    assert agent.terminate() == 0
    transitions = agent.transitions()
    assert agent.started("deploy") == {node: 1 for node in nodes}
    assert final_states(transitions, "deploy") == {node: ["deployed"] for node in nodes}
    assert {t.process for t in transitions} == {"deploy"}
    assert "Traceback" not in controller.log()
