"""Reservations: refusals, windows and the turnaround gap, filters, extend, configure, owner
checks, and the race of 50 concurrent requests for one node on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import functools
import logging

import pytest

from edgebed.controller import lifecycle
from edgebed.controller.errors import (
    AgentUnavailable,
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidProperties,
    NotAuthorized,
    NotFound,
)
from tests.controller.conftest import controller_for, make_settings

HOUR = 3600


@pytest.fixture
async def testbed(tmp_path, clock, fake_agents):
    """A controller with one admin, two authorized users, one pending user and a fake agent
    with 4 raspberry nodes."""
    served = fake_agents("rpi", nodes=4)
    settings = make_settings(
        tmp_path, turnaround_seconds=300, min_duration_hours=0.25, max_duration_hours=48, extend_cap_hours=24
    )
    async with controller_for(settings, clock) as ctl:
        ctl.admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
        ctl.alice = await ctl.accounts.create_user("alice@example.org", "alice-password", authorized=True)
        ctl.bob = await ctl.accounts.create_user("bob@example.org", "bob-password", authorized=True)
        await ctl.accounts.sign_up("eve@example.org", "eve-password")
        ctl.eve = await ctl.accounts.get_user("eve@example.org")
        info = await ctl.agents.add_agent(ctl.admin, "rpi", "raspberry", "127.0.0.1", served.port, served.fake.token)
        assert info.status == "connected" and info.node_count == 4
        ctl.fake, ctl.served = served.fake, served
        yield ctl


async def test_refusals_say_what_is_wrong(testbed, clock):
    ctl, now = testbed, int(clock())
    reserve = ctl.reservations.reserve
    with pytest.raises(InvalidInput, match="in the past"):
        await reserve(ctl.alice, nodes=["rpi-000"], start_date=now - HOUR, duration_hours=1)
    with pytest.raises(InvalidInput, match="at least 0.25 hours"):
        await reserve(ctl.alice, nodes=["rpi-000"], start_date=now, duration_hours=0)
    with pytest.raises(InvalidInput, match="at least 0.25 hours"):
        await reserve(ctl.alice, nodes=["rpi-000"], start_date=now, duration_hours=-2)
    with pytest.raises(InvalidInput, match="before 2100-01-01 00:00 UTC"):
        await reserve(ctl.alice, nodes=["rpi-000"], start_date=4_102_444_800, duration_hours=1)
    with pytest.raises(InvalidInput, match="at most 48 hours"):
        await reserve(ctl.alice, nodes=["rpi-000"], start_date=now, duration_hours=49)
    with pytest.raises(InvalidInput, match="unknown node: 'nope-1'"):
        await reserve(ctl.alice, nodes=["nope-1"], start_date=now, duration_hours=1)
    with pytest.raises(InvalidInput, match="either a list of nodes"):
        await reserve(ctl.alice, nodes=["rpi-000"], filter={}, count=1, start_date=now, duration_hours=1)
    with pytest.raises(InvalidInput, match="count"):
        await reserve(ctl.alice, filter={"model": "pi4"}, count=0, start_date=now, duration_hours=1)
    with pytest.raises(NotAuthorized, match="waiting for an administrator"):
        await reserve(ctl.eve, nodes=["rpi-000"], start_date=now, duration_hours=1)
    assert await ctl.reservations.list_reservations(ctl.alice) == []


async def test_a_node_of_a_disconnected_agent_is_refused(testbed, clock):
    ctl = testbed
    ctl.served.stop()
    # The refresh finds the agent gone (UNAVAILABLE): it is flagged disconnected.
    outcome = await ctl.inventory.refresh()
    assert isinstance(outcome["rpi"], AgentUnavailable) and outcome["rpi"].code == "UNAVAILABLE"
    with pytest.raises(AgentUnavailable, match="rpi-000 belongs to agent rpi, which is disconnected"):
        await ctl.reservations.reserve(ctl.alice, nodes=["rpi-000"], start_date=int(clock()), duration_hours=1)
    nodes = await ctl.inventory.list_nodes()
    assert nodes and not any(node.connected for node in nodes)


async def test_windows_never_overlap_and_keep_the_turnaround_gap(testbed, clock):
    ctl, start = testbed, int(clock()) + 3 * HOUR
    reserve = ctl.reservations.reserve
    assert await reserve(ctl.alice, nodes=["rpi-000"], start_date=start, duration_hours=2) == ["rpi-000"]
    # One reservation per (node, owner), whatever the window.
    with pytest.raises(Conflict, match="you already have a reservation on node rpi-000"):
        await reserve(ctl.alice, nodes=["rpi-000"], start_date=start + 10 * HOUR, duration_hours=1)
    with pytest.raises(Conflict, match="already reserved"):
        await reserve(ctl.bob, nodes=["rpi-000"], start_date=start + HOUR, duration_hours=2)
    # Right after alice's end, inside the 300 s turnaround: refused; after it: accepted.
    with pytest.raises(Conflict, match="already reserved"):
        await reserve(ctl.bob, nodes=["rpi-000"], start_date=start + 2 * HOUR + 299, duration_hours=1)
    with pytest.raises(Conflict, match="already reserved"):
        await reserve(ctl.bob, nodes=["rpi-000"], start_date=start - HOUR - 200, duration_hours=1)
    assert await reserve(ctl.bob, nodes=["rpi-000"], start_date=start + 2 * HOUR + 300, duration_hours=1) == ["rpi-000"]
    # All or nothing: one taken node fails the whole request and reserves none.
    with pytest.raises(Conflict):
        await reserve(ctl.admin, nodes=["rpi-001", "rpi-000"], start_date=start, duration_hours=1)
    assert await ctl.reservations.list_reservations(ctl.admin) == []


async def test_n_nodes_matching_a_filter(testbed, clock):
    ctl, start = testbed, int(clock()) + HOUR
    reserve = ctl.reservations.reserve
    await reserve(ctl.bob, nodes=["rpi-001"], start_date=start, duration_hours=1)
    got = await reserve(
        ctl.alice, filter={"model": "pi4", "type": "raspberry"}, count=3, start_date=start, duration_hours=1
    )
    assert got == ["rpi-000", "rpi-002", "rpi-003"]
    with pytest.raises(Conflict, match="only 0 of the 1 requested nodes are free"):
        await reserve(ctl.admin, filter={"model": "pi4"}, count=1, start_date=start, duration_hours=1)
    with pytest.raises(Conflict, match="only 0 nodes of connected agents match"):
        await reserve(ctl.admin, filter={"model": "pi5"}, count=1, start_date=start, duration_hours=1)


async def test_extend_doubles_up_to_the_cap_and_never_into_the_next_reservation(testbed, clock):
    ctl, start = testbed, int(clock())
    reserve, act = ctl.reservations.reserve, ctl.reservations.act
    await reserve(ctl.alice, nodes=["rpi-000"], start_date=start, duration_hours=5)
    assert (await act(ctl.alice, "rpi-000", "extend")).end_date == start + 10 * HOUR
    assert (await act(ctl.alice, "rpi-000", "extend")).end_date == start + 20 * HOUR
    assert (await act(ctl.alice, "rpi-000", "extend")).end_date == start + 24 * HOUR  # the cap
    with pytest.raises(Conflict, match="maximum of 24 hours"):
        await act(ctl.alice, "rpi-000", "extend")

    await reserve(ctl.alice, nodes=["rpi-001"], start_date=start, duration_hours=2)
    await reserve(ctl.bob, nodes=["rpi-001"], start_date=start + 3 * HOUR, duration_hours=1)
    with pytest.raises(Conflict, match="run into the next reservation"):
        await act(ctl.alice, "rpi-001", "extend")
    assert (await ctl.reservations.get_reservation(ctl.alice, "rpi-001")).end_date == start + 2 * HOUR


async def test_configure_checks_properties_and_makes_the_node_ready(testbed, clock, caplog):
    ctl = testbed
    await ctl.reservations.reserve(ctl.alice, nodes=["rpi-000"], start_date=int(clock()) + HOUR, duration_hours=1)
    [reservation] = await ctl.reservations.list_reservations(ctl.alice)
    assert reservation.status == "configuring"
    configure = ctl.reservations.configure
    with pytest.raises(InvalidInput, match="colour: raspberry nodes have no such property"):
        await configure(ctl.alice, "rpi-000", properties={"colour": "red"})
    with pytest.raises(InvalidInput, match="environment: must be one of raspios-lite, ubuntu-22.04; got 'windows'"):
        await configure(ctl.alice, "rpi-000", properties={"environment": "windows"})
    with pytest.raises(InvalidInput, match="partition_size: must be one of"):
        await configure(ctl.alice, "rpi-000", properties={"partition_size": "1T"})
    with pytest.raises(InvalidInput, match="ssh_key: SSH key line 1"):
        await configure(ctl.alice, "rpi-000", properties={"ssh_key": "not a key"})
    # Every wrong property at once, each by name, and nothing is set.
    with pytest.raises(InvalidProperties) as refused:
        await configure(ctl.alice, "rpi-000", bin="x", properties={"partition_size": "1T", "ssh_key": "no", "environment": "ubuntu-22.04"})
    assert set(refused.value.fields) == {"partition_size", "ssh_key"}
    unchanged = await ctl.reservations.get_reservation(ctl.alice, "rpi-000")
    assert unchanged.bin == "" and unchanged.properties == {} and unchanged.missing == ["environment"]
    secret = "s3cret-Hunter2"
    with caplog.at_level(logging.DEBUG):
        configured = await configure(
            ctl.alice, "rpi-000", bin="exp1", properties={"os_password": secret, "partition_size": "8G"}
        )
        assert configured.status == "configuring"  # environment, the required one, is missing
        configured = await configure(ctl.alice, "rpi-000", properties={"environment": "ubuntu-22.04"})
    assert configured.status == "ready" and configured.bin == "exp1" and configured.default_user == "ubuntu"
    # The owner sees the secret; nothing ever logs it.
    assert configured.properties["os_password"] == secret
    assert secret not in caplog.text and secret not in repr(configured)
    # Unsetting a required property sends it back to configuring.
    assert (await configure(ctl.alice, "rpi-000", properties={"environment": ""})).status == "configuring"


async def test_a_user_never_sees_or_acts_on_another_users_reservation(testbed, clock):
    ctl = testbed
    await ctl.reservations.reserve(ctl.alice, nodes=["rpi-000"], start_date=int(clock()) + HOUR, duration_hours=1)
    with pytest.raises(NotFound):
        await ctl.reservations.get_reservation(ctl.bob, "rpi-000")
    with pytest.raises(NotFound):
        await ctl.reservations.configure(ctl.bob, "rpi-000", properties={"environment": "raspios-lite"})
    for action in ("reboot", "deploy", "destroy", "extend"):
        with pytest.raises(NotFound):
            await ctl.reservations.act(ctl.bob, "rpi-000", action)
    assert await ctl.reservations.list_reservations(ctl.bob) == []
    timeline = await ctl.inventory.timeline(int(clock()), int(clock()) + 3 * HOUR, ctl.bob)
    assert [busy.mine for busy in timeline["rpi-000"]] == [False]
    # Cancelling before the start removes the reservation (nothing was deployed).
    await ctl.reservations.act(ctl.alice, "rpi-000", "destroy")
    assert await ctl.reservations.list_reservations(ctl.alice) == []


async def test_admin_actions_are_forbidden_to_other_users(testbed):
    ctl = testbed
    from edgebed.controller.domain import Environment

    calls = [
        ctl.accounts.list_users(ctl.alice),
        ctl.accounts.add_user(ctl.alice, "mallory@example.org", "a-long-password", admin=True),
        ctl.accounts.set_authorized(ctl.alice, "eve@example.org", True),
        ctl.accounts.set_admin(ctl.alice, "alice@example.org", True),
        ctl.accounts.delete_user(ctl.alice, "bob@example.org"),
        ctl.agents.list_agents(ctl.alice),
        ctl.agents.add_agent(ctl.alice, "x", "raspberry", "127.0.0.1", 1, "t"),
        ctl.agents.reconnect(ctl.alice, "rpi"),
        ctl.agents.delete_agent(ctl.alice, "rpi"),
        ctl.inventory.add_node(ctl.alice, "rpi", "rpi-100", {"ip": "10.0.0.9"}),
        ctl.inventory.rename_node(ctl.alice, "rpi-000", "rpi-900"),
        ctl.inventory.remove_node(ctl.alice, "rpi-000"),
        ctl.inventory.put_environment(ctl.alice, "rpi", Environment(name="evil")),
        ctl.inventory.remove_environment(ctl.alice, "rpi", "raspios-lite"),
    ]
    for call in calls:
        with pytest.raises(Forbidden):
            await call
    assert ctl.fake.calls["AddNode"] == ctl.fake.calls["RemoveNode"] == ctl.fake.calls["PutEnvironment"] == 0
    # A user who was an admin and got demoted loses the rights at once.
    await ctl.accounts.set_admin(ctl.admin, "bob@example.org", True)
    bob_as_admin = await ctl.accounts.get_user("bob@example.org")
    assert [u.email for u in await ctl.accounts.list_users(bob_as_admin)][0] == "eve@example.org"  # pending first
    await ctl.accounts.set_admin(ctl.admin, "bob@example.org", False)
    with pytest.raises(Forbidden):
        await ctl.accounts.list_users(bob_as_admin)
    with pytest.raises(Conflict):
        await ctl.accounts.set_admin(ctl.admin, "admin@example.org", False)


@pytest.mark.slow  # a load test: 50 concurrent requests, seconds on a busy machine
async def test_of_50_concurrent_requests_for_one_node_and_window_exactly_one_wins(
    tmp_path, clock, fake_agents, database_url
):
    served = fake_agents("rpi", nodes=2)
    settings = make_settings(tmp_path, database=database_url)
    # 50 database threads: every request runs its transaction on its own connection at once.
    async with controller_for(settings, clock, db_workers=50) as ctl:
        admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
        await ctl.agents.add_agent(admin, "rpi", "raspberry", "127.0.0.1", served.port, served.fake.token)
        users = await asyncio.gather(
            *(ctl.accounts.create_user(f"user{i}@example.org", "user-password", authorized=True) for i in range(50))
        )
        start = int(clock()) + HOUR

        # Through the service, as the pages and the API call it.
        results = await asyncio.gather(
            *(
                ctl.reservations.reserve(user, nodes=["rpi-000"], start_date=start + i, duration_hours=1)
                for i, user in enumerate(users)
            ),
            return_exceptions=True,
        )
        assert [r for r in results if r == ["rpi-000"]] == [["rpi-000"]], results
        assert sum(isinstance(r, Conflict) for r in results) == 49, results

        # The service's reads before the transaction spread the requests out in time; here the
        # 50 transactions themselves start together, several rounds, which is what breaks an
        # unlocked read-then-insert.
        for round_ in range(1, 4):
            window = start + round_ * 10 * HOUR
            results = await asyncio.gather(
                *(
                    ctl.store.schedule.reserve(
                        user.email,
                        candidates=["rpi-001"],
                        start=window + i,
                        end=window + HOUR,
                        choose=functools.partial(
                            lifecycle.choose_nodes, ["rpi-001"], owner=user.email, count=1,
                            start=window + i, end=window + HOUR, turnaround=0, all_or_nothing=True,
                        ),
                        status_for={"rpi-001": "configuring"},
                        props_for={},
                    )
                    for i, user in enumerate(users)
                ),
                return_exceptions=True,
            )
            assert sum(r == ["rpi-001"] for r in results) == 1, results
            assert sum(isinstance(r, Conflict) for r in results) == 49, results

        timeline = await ctl.inventory.timeline(start - HOUR, start + 40 * HOUR, admin)
        assert len(timeline["rpi-000"]) == 1
        assert len(timeline["rpi-001"]) == 3


async def test_concurrent_inventory_saves_of_new_nodes_never_collide(tmp_path, clock, database_url):
    """Two refreshes (a page's and the scheduler's) may both see a node as new; on PostgreSQL a
    row lock cannot guard a row that does not exist yet, so both would insert it."""
    settings = make_settings(tmp_path, database=database_url)
    async with controller_for(settings, clock, db_workers=8) as ctl:
        for round_ in range(3):
            nodes = {f"new-{round_}-{i:03d}": {"ip": f"10.9.{round_}.{i}"} for i in range(40)}
            results = await asyncio.gather(
                *(ctl.store.inventory.save_inventory("rpi", "raspberry", nodes, None, int(clock())) for _ in range(8)),
                return_exceptions=True,
            )
            assert not [r for r in results if isinstance(r, Exception)], results
            assert {n.name for n in await ctl.store.inventory.list_nodes()} == set(nodes)
