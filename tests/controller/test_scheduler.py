"""The scheduler against fake agents with an injected clock: the life of a reservation, the
user's actions, batching, and restarts after a crash at each point of StartAction."""

from __future__ import annotations

import asyncio

import pytest

from edgebed.controller.errors import Conflict
from edgebed.controller.store import ScheduleChange, Store
from tests.controller.conftest import controller_for, make_settings

HOUR = 3600


class Crash(Exception):
    """Stands for the controller dying at this point."""


async def setup(ctl, served, *, users=("alice@example.org",)):
    ctl.admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
    for name, agent in served.items():
        info = await ctl.agents.add_agent(ctl.admin, name, "raspberry", "127.0.0.1", agent.port, agent.fake.token)
        assert info.status == "connected"
    return [await ctl.accounts.create_user(email, "user-password", authorized=True) for email in users]


async def reserve_ready(ctl, user, nodes, start, hours=1.0, environment="raspios-lite"):
    assert await ctl.reservations.reserve(user, nodes=nodes, start_date=start, duration_hours=hours) == nodes
    await asyncio.gather(
        *(ctl.reservations.configure(user, n, properties={"environment": environment}) for n in nodes)
    )


async def states(ctl, user):
    return {r.node_name: (r.status, r.action_state) for r in await ctl.reservations.list_reservations(user)}


async def poll_until(ctl, user, wanted, *, polls=30):
    for _ in range(polls):
        await ctl.scheduler.poll()
        if await states(ctl, user) == wanted:
            return
    raise AssertionError(f"never reached {wanted}: {await states(ctl, user)}")


async def test_deploy_at_start_date_mirror_the_agent_destroy_at_end_date_then_rows_go(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=3)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served})
        start = int(clock()) + 600
        await reserve_ready(ctl, alice, ["rpi-000", "rpi-001"], start)
        await ctl.scheduler.poll()
        assert served.fake.started == []  # not before start_date
        assert await states(ctl, alice) == {"rpi-000": ("ready", ""), "rpi-001": ("ready", "")}

        clock.advance(600)
        report = await ctl.scheduler.poll()
        assert sorted(report.started) == ["rpi-000:deploy", "rpi-001:deploy"]
        assert await states(ctl, alice) == {"rpi-000": ("in_progress", "netboot"), "rpi-001": ("in_progress", "netboot")}
        seen = set()
        for _ in range(8):
            await ctl.scheduler.poll()
            [r] = [r for r in await ctl.reservations.list_reservations(alice) if r.node_name == "rpi-000"]
            seen.add(r.action_state)
            if r.action_state == "copy_image":
                assert r.process == "deploy" and 0 < r.progress < 100 and r.state_count == 7
        assert {"power_cycle", "wait_ssh", "copy_image", "configure", "boot_sd", "deployed"} <= seen
        [r] = [r for r in await ctl.reservations.list_reservations(alice) if r.node_name == "rpi-000"]
        assert (r.status, r.action_state, r.progress, r.node_ip, r.default_user) == ("ready", "deployed", 100, "10.1.0.1", "pi")

        clock.advance(HOUR)
        report = await ctl.scheduler.poll()
        assert sorted(report.started) == ["rpi-000:destroy", "rpi-001:destroy"]
        await poll_until(ctl, alice, {})
        assert await ctl.store.schedule.action_props() == {}
        assert await ctl.store.schedule.list_schedule() == []
        assert sorted(served.fake.started) == [
            ("rpi-000", "deploy"), ("rpi-000", "destroy"), ("rpi-001", "deploy"), ("rpi-001", "destroy")
        ]


@pytest.mark.slow
async def test_one_get_action_state_per_agent_per_poll_with_200_nodes_in_progress(tmp_path, clock, fake_agents):
    served = {"east": fake_agents("east", nodes=100), "west": fake_agents("west", nodes=100)}
    async with controller_for(make_settings(tmp_path, max_duration_hours=10), clock) as ctl:
        [alice] = await setup(ctl, served)
        nodes = await ctl.reservations.reserve(
            alice, filter={"model": "pi4"}, count=200, start_date=int(clock()), duration_hours=1
        )
        assert len(nodes) == 200
        await asyncio.gather(
            *(ctl.reservations.configure(alice, n, properties={"environment": "raspios-lite"}) for n in nodes)
        )
        polls = 0
        while True:
            before = {name: agent.fake.calls["GetActionState"] for name, agent in served.items()}
            report = await ctl.scheduler.poll()
            polls += 1
            after = {name: agent.fake.calls["GetActionState"] for name, agent in served.items()}
            assert {name: after[name] - before[name] for name in served} == {"east": 1, "west": 1}
            assert report.state_calls == {"east": 1, "west": 1}
            current = await states(ctl, alice)
            if polls == 2:
                assert sum(status == "in_progress" for status, _ in current.values()) == 200
            if all(state == "deployed" for _, state in current.values()):
                break
            assert polls < 20
        # Every GetActionState named the nodes of its own agent, all of them in one request.
        assert all(len(names) == 100 for agent in served.values() for names in agent.fake.state_requests)
        # And the deploys went in ONE StartActions per agent, with its 100 nodes.
        assert all(agent.fake.batches == [100] for agent in served.values())
        assert sum(agent.fake.calls["StartAction"] for agent in served.values()) == 0


async def test_the_users_reboot_deploy_again_extend_and_destroy(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=2)
    async with controller_for(make_settings(tmp_path, turnaround_seconds=60), clock) as ctl:
        alice, bob = await setup(ctl, {"rpi": served}, users=("alice@example.org", "bob@example.org"))
        start = int(clock())
        await reserve_ready(ctl, alice, ["rpi-000"], start, hours=2)
        with pytest.raises(Conflict, match="has not been deployed yet"):
            await ctl.reservations.act(alice, "rpi-000", "reboot")
        await poll_until(ctl, alice, {"rpi-000": ("ready", "deployed")})
        with pytest.raises(Conflict, match="already reserved"):
            await ctl.reservations.reserve(bob, nodes=["rpi-000"], start_date=start + 2 * HOUR, duration_hours=1)

        reservation = await ctl.reservations.act(alice, "rpi-000", "reboot")
        assert (reservation.status, reservation.process) == ("in_progress", "reboot")
        with pytest.raises(Conflict, match="already has a reboot waiting"):
            await ctl.reservations.act(alice, "rpi-000", "deploy")
        await poll_until(ctl, alice, {"rpi-000": ("ready", "rebooted")})

        await ctl.reservations.configure(alice, "rpi-000", properties={"environment": "ubuntu-22.04"})
        await ctl.reservations.act(alice, "rpi-000", "deploy")
        await poll_until(ctl, alice, {"rpi-000": ("ready", "deployed")})
        assert served.fake.actions["rpi-000"].environment == "ubuntu-22.04"

        assert (await ctl.reservations.act(alice, "rpi-000", "extend")).end_date == start + 4 * HOUR

        reservation = await ctl.reservations.act(alice, "rpi-000", "destroy")
        assert reservation.end_date == start and reservation.process == "destroy"
        # Ended early: the node is free again once the turnaround gap has passed.
        assert await ctl.reservations.reserve(bob, nodes=["rpi-000"], start_date=start + 60, duration_hours=1) == ["rpi-000"]
        await poll_until(ctl, alice, {})
        assert [p for n, p in served.fake.started] == ["deploy", "reboot", "deploy", "destroy"]


async def test_a_deploy_refused_by_the_agent_sends_the_node_back_to_configuring(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=1)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served})
        await reserve_ready(ctl, alice, ["rpi-000"], int(clock()) + 60)
        del served.fake.environments["raspios-lite"]  # removed on the agent behind our back
        clock.advance(60)
        await ctl.scheduler.poll()
        [r] = await ctl.reservations.list_reservations(alice)
        assert r.status == "configuring" and r.action_state == ""
        assert r.last_error == "deploy refused: unknown environment 'raspios-lite'"
        await ctl.scheduler.poll()
        assert served.fake.calls["StartActions"] == 1  # not retried in a loop
        await ctl.reservations.configure(alice, "rpi-000", properties={"environment": "ubuntu-22.04"})
        await poll_until(ctl, alice, {"rpi-000": ("ready", "deployed")})


async def test_a_crash_after_start_action_was_sent_is_adopted_on_restart(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=3)
    settings = make_settings(tmp_path)
    nodes = ["rpi-000", "rpi-001", "rpi-002"]
    async with controller_for(settings, clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served})
        await reserve_ready(ctl, alice, nodes, int(clock()))

        def die(*args, **kwargs):
            raise Crash

        # The agent accepted the deploys; the controller dies before recording the answers.
        ctl.scheduler._answered = die
        with pytest.raises(Crash):
            await ctl.scheduler.poll()
    assert sorted(served.fake.started) == [(n, "deploy") for n in nodes]
    rows = await _rows(settings)
    assert all(r.pending == "deploy" and r.pending_issued and r.baseline == "-" for r in rows)

    async with controller_for(settings, clock) as ctl:
        alice = await ctl.accounts.get_user("alice@example.org")
        report = await ctl.scheduler.poll()
        assert sorted(report.adopted) == [f"{n}:deploy" for n in nodes] and report.started == []
        await poll_until(ctl, alice, {n: ("ready", "deployed") for n in nodes})
    assert sorted(served.fake.started) == [(n, "deploy") for n in nodes]  # nothing sent twice


async def test_a_new_action_that_looks_like_the_previous_one_is_adopted_after_a_crash(
    tmp_path, clock, fake_agents
):
    """A second reboot that ends within the same second as the first looks the same in every
    field but the agent's action_id: only that id tells the controller it was already sent."""
    served = fake_agents("rpi", nodes=1)
    settings = make_settings(tmp_path)
    async with controller_for(settings, clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served})
        await reserve_ready(ctl, alice, ["rpi-000"], int(clock()))
        await poll_until(ctl, alice, {"rpi-000": ("ready", "deployed")})
        await ctl.reservations.act(alice, "rpi-000", "reboot")
        await poll_until(ctl, alice, {"rpi-000": ("ready", "rebooted")})
        first = served.fake.actions["rpi-000"]

        await ctl.reservations.act(alice, "rpi-000", "reboot")

        def die(*args, **kwargs):
            raise Crash

        ctl.scheduler._answered = die
        with pytest.raises(Crash):
            await ctl.scheduler.poll()
    served.fake.finish_all()
    second = served.fake.actions["rpi-000"]
    second.updated_at = first.updated_at
    assert (second.process, second.state, second.state_idx) == (first.process, first.state, first.state_idx)

    async with controller_for(settings, clock) as ctl:
        alice = await ctl.accounts.get_user("alice@example.org")
        report = await ctl.scheduler.poll()
        assert report.adopted == ["rpi-000:reboot"] and report.started == []
        await poll_until(ctl, alice, {"rpi-000": ("ready", "rebooted")})
    assert [p for n, p in served.fake.started] == ["deploy", "reboot", "reboot"]


async def test_a_crash_before_start_action_was_sent_sends_it_once_on_restart(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=2)
    settings = make_settings(tmp_path)
    nodes = ["rpi-000", "rpi-001"]
    async with controller_for(settings, clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served})
        await reserve_ready(ctl, alice, nodes, int(clock()))

        async def die(*args, **kwargs):
            raise Crash

        ctl.client.start_actions = die
        with pytest.raises(Crash):
            await ctl.scheduler.poll()
    assert served.fake.started == []
    async with controller_for(settings, clock) as ctl:
        alice = await ctl.accounts.get_user("alice@example.org")
        report = await ctl.scheduler.poll()
        assert sorted(report.started) == [f"{n}:deploy" for n in nodes]
        await poll_until(ctl, alice, {n: ("ready", "deployed") for n in nodes})
    assert sorted(served.fake.started) == [(n, "deploy") for n in nodes]


async def test_failed_precondition_from_a_busy_node_leads_to_adoption(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=1)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served})
        await reserve_ready(ctl, alice, ["rpi-000"], int(clock()))

        real_action_states = ctl.client.action_states
        stale = {"on": True}

        async def lagging_action_states(agent, nodes):
            # The agent's report lags behind: it does not show the deploy it runs already.
            result = await real_action_states(agent, nodes)
            return {} if stale["on"] else result

        ctl.client.action_states = lagging_action_states
        await ctl.scheduler.poll()  # sends the deploy; the agent accepts it
        await ctl.store.schedule.update_schedule(
            [
                # As if the answer had been lost: the intention is still in doubt.
                ScheduleChange(
                    "rpi-000", "alice@example.org", expect={},
                    changes={"pending": "deploy", "pending_issued": True, "baseline": "-", "process": "", "action_state": ""},
                )
            ]
        )
        report = await ctl.scheduler.poll()  # sends again: the agent answers FAILED_PRECONDITION
        assert report.started == [] and served.fake.calls["StartActions"] == 2
        [row] = await ctl.store.schedule.list_schedule()
        assert (row.pending, row.pending_issued, row.baseline) == ("deploy", False, "-")
        stale["on"] = False
        report = await ctl.scheduler.poll()
        assert report.adopted == ["rpi-000:deploy"]
        await poll_until(ctl, alice, {"rpi-000": ("ready", "deployed")})
        assert served.fake.started == [("rpi-000", "deploy")]


async def test_an_agent_lost_mid_deploy_is_followed_again_after_reconnect(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=2)
    async with controller_for(make_settings(tmp_path, call_timeout_seconds=0.5), clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served})
        await reserve_ready(ctl, alice, ["rpi-000", "rpi-001"], int(clock()))
        await ctl.scheduler.poll()
        await ctl.scheduler.poll()
        served.fake.hang.set()
        await ctl.scheduler.poll()  # one deadline: flagged
        [agent] = await ctl.agents.list_agents(ctl.admin)
        assert agent.status == "disconnected"
        calls = served.fake.calls["GetActionState"]
        await ctl.scheduler.poll()
        assert served.fake.calls["GetActionState"] == calls  # not called while disconnected
        assert {s for s, _ in (await states(ctl, alice)).values()} == {"in_progress"}
        served.fake.hang.clear()
        served.fake.release.set()
        assert (await ctl.agents.reconnect(ctl.admin, "rpi")).status == "connected"
        await poll_until(ctl, alice, {"rpi-000": ("ready", "deployed"), "rpi-001": ("ready", "deployed")})
        assert sorted(served.fake.started) == [("rpi-000", "deploy"), ("rpi-001", "deploy")]


async def _rows(settings):
    store = Store(settings.database, secret_key=settings.secret_key())
    await store.open()
    try:
        return await store.schedule.list_schedule()
    finally:
        await store.close()


async def test_a_destroy_racing_the_scheduler_is_applied_not_refused(tmp_path, clock, fake_agents):
    """The scheduler may move a row between destroy's read and its write (it sends the pending
    reboot); ending a reservation is the user's final word and must not bounce with a 409."""
    served = fake_agents("rpi", nodes=1)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served})
        await reserve_ready(ctl, alice, ["rpi-000"], int(clock()))
        await poll_until(ctl, alice, {"rpi-000": ("ready", "deployed")})
        await ctl.reservations.act(alice, "rpi-000", "reboot")

        store = ctl.scheduler._store
        real_update = store.schedule.update_schedule
        raced: list[bool] = []

        async def racing_update(changes, **kwargs):
            if not raced:
                raced.append(True)
                await ctl.scheduler.poll()  # sends the reboot and records it, under destroy's feet
            return await real_update(changes, **kwargs)

        store.schedule.update_schedule = racing_update
        try:
            reservation = await ctl.reservations.act(alice, "rpi-000", "destroy")
        finally:
            store.schedule.update_schedule = real_update
        assert raced and reservation.end_date <= int(clock())
        await poll_until(ctl, alice, {})
    assert [p for n, p in served.fake.started] == ["deploy", "reboot", "destroy"]
