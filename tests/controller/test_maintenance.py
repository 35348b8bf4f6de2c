"""Never hand out a dirty node (issue #10), against fake agents with an injected clock: a destroy
that ends lost puts the node in maintenance, a node in maintenance is never reserved or deployed
until an administrator releases it, removing an agent or node that has reservations is refused
or destroys first, and every ended reservation is kept as history."""

from __future__ import annotations

import asyncio

import pytest

from edgebed.controller.errors import Conflict, Forbidden, InvalidInput, NotFound
from tests.controller.conftest import controller_for, make_settings

HOUR = 3600


async def setup(ctl, served, *, users=("alice@example.org", "bob@example.org")):
    ctl.admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
    for name, agent in served.items():
        info = await ctl.agents.add_agent(ctl.admin, name, "raspberry", "127.0.0.1", agent.port, agent.fake.token)
        assert info.status == "connected"
    return [await ctl.accounts.create_user(email, "user-password", authorized=True) for email in users]


async def reserve_ready(ctl, user, nodes, start, hours=1.0):
    assert await ctl.reservations.reserve(user, nodes=nodes, start_date=start, duration_hours=hours) == nodes
    for node in nodes:
        await ctl.reservations.configure(user, node, properties={"environment": "raspios-lite"})


async def states(ctl, user):
    return {r.node_name: (r.status, r.action_state) for r in await ctl.reservations.list_reservations(user)}


async def poll_until(ctl, condition, what, *, polls=30):
    for _ in range(polls):
        await ctl.scheduler.poll()
        if await condition():
            return
    raise AssertionError(f"never reached: {what}")


async def in_maintenance(ctl):
    return {m.node_name: m for m in await ctl.maintenance.list_maintenance(ctl.admin)}


@pytest.mark.slow
async def test_a_lost_destroy_ends_the_reservation_and_puts_the_node_in_maintenance_until_released(
    tmp_path, clock, fake_agents, caplog, database_url
):
    served = fake_agents("rpi", nodes=3)
    async with controller_for(make_settings(tmp_path, database=database_url), clock) as ctl:
        alice, bob = await setup(ctl, {"rpi": served})
        start = int(clock())
        await reserve_ready(ctl, alice, ["rpi-000"], start)
        # Bob's reservation of the node right after alice's: it must not get her system.
        assert await ctl.reservations.reserve(bob, nodes=["rpi-000"], start_date=start + HOUR, duration_hours=1)
        await ctl.reservations.configure(bob, "rpi-000", properties={"environment": "raspios-lite"})
        await poll_until(ctl, lambda: _is(states(ctl, alice), {"rpi-000": ("ready", "deployed")}), "deployed")

        served.fake.lose = {"destroy"}
        clock.advance(HOUR)
        await poll_until(ctl, lambda: _is(states(ctl, alice), {}), "alice's rows to go")
        assert served.fake.actions["rpi-000"].state == "lost"
        held = (await in_maintenance(ctl))["rpi-000"]
        assert held.reason.startswith("a destroy ended lost") and held.set_by == "edgebed"
        assert held.since == int(clock())
        assert "its destroy ended lost; the node is in maintenance" in caplog.text

        [entry] = await ctl.reservations.history(alice)
        assert (entry.node_name, entry.owner, entry.environment, entry.outcome, entry.ended, entry.end_reason) == (
            "rpi-000", alice.email, "raspios-lite", "lost", "lost", "window"
        )
        assert (entry.start_date, entry.end_date, entry.ended_at) == (start, start + HOUR, int(clock()))

        # Bob's window is open, but his deploy is never sent to the dirty node; he is told why.
        for _ in range(3):
            await ctl.scheduler.poll()
        assert [p for n, p in served.fake.started] == ["deploy", "destroy"]
        [bobs] = await ctl.reservations.list_reservations(bob)
        assert (bobs.status, bobs.action_state, bobs.node_maintenance) == ("ready", "", held.reason)
        with pytest.raises(Conflict, match="rpi-000 is in maintenance"):
            await ctl.reservations.act(bob, "rpi-000", "deploy")

        # A new reservation of the node is refused, by name and by filter.
        later = start + 5 * HOUR
        with pytest.raises(Conflict, match="node rpi-000 is in maintenance: a destroy ended lost"):
            await ctl.reservations.reserve(alice, nodes=["rpi-000"], start_date=later, duration_hours=1)
        taken = await ctl.reservations.reserve(alice, filter={}, count=2, start_date=later, duration_hours=1)
        assert taken == ["rpi-001", "rpi-002"]
        with pytest.raises(Conflict, match=r"only 0 of the 1 requested nodes are free .*1 more are in maintenance"):
            await ctl.reservations.reserve(bob, filter={"name": "rpi-000"}, count=1, start_date=later, duration_hours=1)
        [node] = [n for n in await ctl.inventory.list_nodes() if n.name == "rpi-000"]
        assert node.maintenance == held.reason and node.maintenance_since == held.since

        # Released by an administrator: bob's deploy goes out, and the node may be reserved again.
        served.fake.lose = set()
        await ctl.maintenance.release(ctl.admin, "rpi-000")
        assert await in_maintenance(ctl) == {}
        await poll_until(ctl, lambda: _is(states(ctl, bob), {"rpi-000": ("ready", "deployed")}), "bob deployed")
        assert await ctl.reservations.reserve(alice, nodes=["rpi-000"], start_date=later, duration_hours=1)
        with pytest.raises(NotFound, match="not in maintenance"):
            await ctl.maintenance.release(ctl.admin, "rpi-000")


async def _is(coroutine, wanted):
    return await coroutine == wanted


async def test_a_first_deploy_decided_before_the_node_went_into_maintenance_is_held_back(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=1)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served}, users=("alice@example.org",))
        await reserve_ready(ctl, alice, ["rpi-000"], int(clock()))
        await ctl.reservations.act(alice, "rpi-000", "deploy")  # intended, not sent yet
        await ctl.maintenance.enter(ctl.admin, "rpi-000", "PoE port flaps")
        report = await ctl.scheduler.poll()
        assert report.started == [] and served.fake.started == []
        [r] = await ctl.reservations.list_reservations(alice)
        assert (r.status, r.pending, r.node_maintenance) == ("ready", "", "PoE port flaps")
        await ctl.maintenance.release(ctl.admin, "rpi-000")
        await poll_until(ctl, lambda: _is(states(ctl, alice), {"rpi-000": ("ready", "deployed")}), "deployed")


async def test_actions_lost_in_a_row_put_the_node_in_maintenance_and_a_success_starts_the_count_again(
    tmp_path, clock, fake_agents
):
    served = fake_agents("rpi", nodes=1)
    async with controller_for(make_settings(tmp_path, lost_in_a_row=2), clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served}, users=("alice@example.org",))
        await reserve_ready(ctl, alice, ["rpi-000"], int(clock()), hours=4)
        served.fake.lose = {"reboot"}
        await poll_until(ctl, lambda: _is(states(ctl, alice), {"rpi-000": ("ready", "deployed")}), "deployed")
        for expected in ("lost", "deployed", "lost"):
            # lost, then a successful deploy (the count starts again), then lost: one in a row.
            action = "reboot" if expected == "lost" else "deploy"
            await ctl.reservations.act(alice, "rpi-000", action)
            await poll_until(ctl, lambda e=expected: _is(states(ctl, alice), {"rpi-000": ("ready", e)}), expected)
            for _ in range(2):
                await ctl.scheduler.poll()  # a final state reported again is not counted again
        assert await in_maintenance(ctl) == {}
        await ctl.reservations.act(alice, "rpi-000", "reboot")
        await poll_until(ctl, lambda: _is(states(ctl, alice), {"rpi-000": ("ready", "lost")}), "lost again")
        held = (await in_maintenance(ctl))["rpi-000"]
        assert (held.reason, held.lost_in_a_row, held.set_by) == ("2 actions in a row ended lost", 2, "edgebed")
        # The holder keeps the node and may try again; only new reservations are refused.
        assert (await ctl.reservations.act(alice, "rpi-000", "deploy")).pending == "deploy"


@pytest.mark.slow
async def test_deleting_an_agent_with_reservations_is_refused_and_force_destroys_first(
    tmp_path, clock, fake_agents, database_url
):
    served = fake_agents("rpi", nodes=3)
    async with controller_for(make_settings(tmp_path, database=database_url), clock) as ctl:
        alice, bob = await setup(ctl, {"rpi": served})
        now = int(clock())
        await reserve_ready(ctl, alice, ["rpi-000"], now)
        await ctl.reservations.reserve(bob, nodes=["rpi-001"], start_date=now + 2 * HOUR, duration_hours=1)
        await poll_until(ctl, lambda: _is(states(ctl, alice), {"rpi-000": ("ready", "deployed")}), "deployed")

        with pytest.raises(Conflict, match=r"agent rpi has reservations: rpi-000 \(alice@example.org, .*UTC\), "
                                           r"rpi-001 \(bob@example.org, .*remove it with force"):
            await ctl.maintenance.delete_agent(ctl.admin, "rpi")
        with pytest.raises(Conflict, match="agent rpi has reservations"):
            await ctl.agents.delete_agent(ctl.admin, "rpi")  # the plain removal refuses too
        with pytest.raises(Forbidden):
            await ctl.maintenance.delete_agent(alice, "rpi", force=True)
        assert (await ctl.agents.list_agents(ctl.admin))[0].name == "rpi"

        removal = await ctl.maintenance.delete_agent(ctl.admin, "rpi", force=True)
        # Bob's reservation had not started: cancelled. Alice's node is destroyed first.
        assert (removal.removed, removal.waiting_for) == (False, [("rpi-000", alice.email)])
        assert [n.retiring for n in await ctl.inventory.list_nodes()] == [True, True, True]
        with pytest.raises(Conflict, match="rpi-002 is on agent rpi, which is being removed"):
            await ctl.reservations.reserve(bob, nodes=["rpi-002"], start_date=now, duration_hours=1)
        [r] = await ctl.reservations.list_reservations(alice)
        assert (r.ending, r.process, r.notice) == (True, "destroy", "ended: an administrator removes rpi-000")

        report = await ctl.scheduler.poll()
        assert report.started == ["rpi-000:destroy"] and report.retired == []
        for _ in range(10):
            report = await ctl.scheduler.poll()
            if report.retired:
                break
        assert report.retired == ["agent:rpi"]
        assert await ctl.agents.list_agents(ctl.admin) == [] and await ctl.inventory.list_nodes() == []
        assert served.fake.started == [("rpi-000", "deploy"), ("rpi-000", "destroy")]
        assert served.fake.actions["rpi-000"].state == "destroyed"  # wiped before it was forgotten
        history = {(h.node_name, h.owner): h for h in await ctl.reservations.admin_history(ctl.admin)}
        assert (history["rpi-000", alice.email].ended, history["rpi-000", alice.email].end_reason) == (
            "destroyed", "agent_removed")
        assert history["rpi-000", alice.email].ended_by == ctl.admin.email
        assert history["rpi-001", bob.email].ended == "cancelled"


async def test_a_forced_agent_removal_whose_destroy_ends_lost_leaves_the_node_in_maintenance_when_it_comes_back(
    tmp_path, clock, fake_agents
):
    served = fake_agents("rpi", nodes=2)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served}, users=("alice@example.org",))
        await reserve_ready(ctl, alice, ["rpi-000"], int(clock()))
        await poll_until(ctl, lambda: _is(states(ctl, alice), {"rpi-000": ("ready", "deployed")}), "deployed")
        served.fake.lose = {"destroy"}
        await ctl.maintenance.delete_agent(ctl.admin, "rpi", force=True)
        await poll_until(ctl, lambda: _is(ctl.agents.list_agents(ctl.admin), []), "the agent removed")
        assert [m.agent for m in (await in_maintenance(ctl)).values()] == [""]  # no agent lists it now

        await ctl.agents.add_agent(ctl.admin, "rpi", "raspberry", "127.0.0.1", served.port, served.fake.token)
        with pytest.raises(Conflict, match="rpi-000 is in maintenance: a destroy ended lost"):
            await ctl.reservations.reserve(alice, nodes=["rpi-000"], start_date=int(clock()), duration_hours=1)
        assert (await in_maintenance(ctl))["rpi-000"].agent == "rpi"


async def test_removing_a_node_with_reservations_is_refused_and_force_removes_it_once_destroyed(
    tmp_path, clock, fake_agents
):
    served = fake_agents("rpi", nodes=2)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served}, users=("alice@example.org",))
        await reserve_ready(ctl, alice, ["rpi-000"], int(clock()))
        await poll_until(ctl, lambda: _is(states(ctl, alice), {"rpi-000": ("ready", "deployed")}), "deployed")
        with pytest.raises(Conflict, match=r"node rpi-000 has reservations: rpi-000 \(alice@example.org"):
            await ctl.maintenance.remove_node(ctl.admin, "rpi-000")
        removal = await ctl.maintenance.remove_node(ctl.admin, "rpi-000", force=True)
        assert removal.waiting_for == [("rpi-000", alice.email)]
        await poll_until(ctl, lambda: _is(states(ctl, alice), {}), "destroyed")
        await ctl.scheduler.poll()
        assert "rpi-000" not in served.fake.nodes
        assert [n.name for n in await ctl.inventory.list_nodes()] == ["rpi-001"]
        # Removed only once wiped: the reservation ended destroyed, not orphaned.
        [entry] = await ctl.reservations.history(alice)
        assert (entry.ended, entry.end_reason) == ("destroyed", "node_removed")
        assert await ctl.maintenance.list_retirements(ctl.admin) == []
        # Without reservations: at once.
        assert (await ctl.maintenance.remove_node(ctl.admin, "rpi-001")).removed
        assert await ctl.inventory.list_nodes() == []


@pytest.mark.slow
async def test_an_administrator_lists_ends_and_moves_anyones_reservations(tmp_path, clock, fake_agents, database_url):
    served = fake_agents("rpi", nodes=4)
    async with controller_for(make_settings(tmp_path, database=database_url), clock) as ctl:
        alice, bob = await setup(ctl, {"rpi": served})
        now = int(clock())
        await reserve_ready(ctl, alice, ["rpi-000"], now)
        # Not rpi-000: bob's window would overlap alice's.
        assert await ctl.reservations.reserve(bob, filter={"model": "pi4"}, count=1, start_date=now + HOUR - 60,
                                              duration_hours=1) == ["rpi-001"]
        await poll_until(ctl, lambda: _is(states(ctl, alice), {"rpi-000": ("ready", "deployed")}), "deployed")

        listed = await ctl.reservations.admin_list(ctl.admin)
        assert [(r.node_name, r.owner, r.status) for r in listed] == [
            ("rpi-000", alice.email, "ready"), ("rpi-001", bob.email, "configuring")]
        assert [r.owner for r in await ctl.reservations.admin_list(ctl.admin, owner=bob.email)] == [bob.email]
        assert [r.node_name for r in await ctl.reservations.admin_list(ctl.admin, status="configuring")] == ["rpi-001"]
        assert len(await ctl.reservations.admin_list(ctl.admin, agent="rpi")) == 2
        with pytest.raises(InvalidInput, match="the status must be one of"):
            await ctl.reservations.admin_list(ctl.admin, status="weird")
        with pytest.raises(Forbidden):
            await ctl.reservations.admin_list(alice)
        with pytest.raises(Forbidden):
            await ctl.reservations.admin_end(alice, "rpi-001", bob.email)

        # Bob's reservation has not started: it moves with its window; the target is the first
        # free node matching the filter he reserved with.
        await ctl.maintenance.enter(ctl.admin, "rpi-001", "SD card slot broken")
        moved = await ctl.reservations.admin_move(ctl.admin, "rpi-001", bob.email)
        assert (moved.node_name, moved.start_date, moved.status) == ("rpi-002", now + HOUR - 60, "configuring")
        assert moved.notice == ("moved here from node rpi-001 by an administrator: rpi-001 is in maintenance "
                                "(SD card slot broken)")
        assert [r.node_name for r in await ctl.reservations.list_reservations(bob)] == ["rpi-002"]
        with pytest.raises(InvalidInput, match="on node rpi-002 already"):
            await ctl.reservations.admin_move(ctl.admin, "rpi-002", bob.email, to="rpi-002")
        with pytest.raises(Conflict, match="node rpi-001 is in maintenance"):
            await ctl.reservations.admin_move(ctl.admin, "rpi-002", bob.email, to="rpi-001")
        with pytest.raises(NotFound):
            await ctl.reservations.admin_move(ctl.admin, "rpi-003", bob.email)

        # Alice's is deployed: her node is destroyed, and she goes on with a new deploy on
        # rpi-003 for the rest of her window.
        moved = await ctl.reservations.admin_move(ctl.admin, "rpi-000", alice.email, to="rpi-003")
        assert (moved.node_name, moved.start_date, moved.end_date, moved.status) == (
            "rpi-003", now, now + HOUR, "ready")
        assert moved.properties == {"environment": "raspios-lite"}
        ending = {r.node_name: r for r in await ctl.reservations.list_reservations(alice)}["rpi-000"]
        assert (ending.ending, ending.notice) == (True, "moved to another node by an administrator; this node is "
                                                        "being destroyed")
        await poll_until(ctl, lambda: _is(states(ctl, alice), {"rpi-003": ("ready", "deployed")}), "moved and deployed")
        assert ("rpi-000", "destroy") in served.fake.started and ("rpi-003", "deploy") in served.fake.started

        ended = await ctl.reservations.admin_end(ctl.admin, "rpi-003", alice.email)
        assert (ended.ending, ended.notice) == (True, "ended by an administrator")
        assert (await ctl.reservations.admin_end(ctl.admin, "rpi-002", bob.email)).node_name == "rpi-002"
        await poll_until(ctl, lambda: _is(states(ctl, alice), {}), "ended")
        mine = [(h.node_name, h.ended, h.end_reason, h.ended_by) for h in await ctl.reservations.history(alice)]
        assert mine == [("rpi-003", "destroyed", "admin", ctl.admin.email),
                        ("rpi-000", "destroyed", "moved", ctl.admin.email)]
        assert [(h.node_name, h.ended) for h in await ctl.reservations.history(bob)] == [("rpi-002", "cancelled")]
        everyone = await ctl.reservations.admin_history(ctl.admin)
        assert len(everyone) == 3 and everyone == sorted(everyone, key=lambda h: -h.id)
        assert [h.node_name for h in await ctl.reservations.admin_history(ctl.admin, before=everyone[0].id, limit=1)] \
            == [everyone[1].node_name]
        with pytest.raises(InvalidInput, match="the limit"):
            await ctl.reservations.history(alice, limit=0)


async def test_maintenance_is_for_administrators_and_needs_a_reason(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=1)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served}, users=("alice@example.org",))
        for call in (ctl.maintenance.enter(alice, "rpi-000", "x"), ctl.maintenance.release(alice, "rpi-000"),
                     ctl.maintenance.list_maintenance(alice), ctl.reservations.admin_history(alice)):
            with pytest.raises(Forbidden):
                await call
        with pytest.raises(InvalidInput, match="give the reason"):
            await ctl.maintenance.enter(ctl.admin, "rpi-000", "  ")
        with pytest.raises(NotFound, match="no node named nope"):
            await ctl.maintenance.enter(ctl.admin, "nope", "x")
        entry = await ctl.maintenance.enter(ctl.admin, "rpi-000", "fan\nnoise")
        assert (entry.reason, entry.set_by, entry.since) == ("fan noise", ctl.admin.email, int(clock()))
        clock.advance(60)
        again = await ctl.maintenance.enter(ctl.admin, "rpi-000", "fan noise, replaced")
        assert (again.reason, again.since) == ("fan noise, replaced", entry.since)
        # Renamed on its agent: its maintenance follows it.
        await ctl.inventory.rename_node(ctl.admin, "rpi-000", "rpi-100")
        assert list(await in_maintenance(ctl)) == ["rpi-100"]


@pytest.mark.slow
async def test_concurrent_reservations_never_take_a_node_entering_maintenance(
    tmp_path, clock, fake_agents, database_url
):
    """An administrator's maintenance and 20 filtered requests at once, on SQLite and PostgreSQL:
    a request either sees the node free and gets it, or sees it in maintenance and skips it."""
    served = fake_agents("rpi", nodes=1)
    async with controller_for(make_settings(tmp_path, database=database_url), clock, db_workers=24) as ctl:
        users = await setup(ctl, {"rpi": served}, users=[f"u{i}@example.org" for i in range(20)])
        start = int(clock()) + HOUR
        results = await asyncio.gather(
            ctl.maintenance.enter(ctl.admin, "rpi-000", "drill"),
            *(ctl.reservations.reserve(u, filter={}, count=1, start_date=start + i * 2 * HOUR, duration_hours=1)
              for i, u in enumerate(users)),
            return_exceptions=True,
        )
        won = [r for r in results[1:] if r == ["rpi-000"]]
        refused = [r for r in results[1:] if isinstance(r, Conflict)]
        assert len(won) + len(refused) == 20, results
        assert all("in maintenance" in r.message for r in refused)
        assert len(await ctl.store.schedule.list_schedule()) == len(won)
