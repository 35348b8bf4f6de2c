"""The scheduler and the agent client at scale (issue #12): each agent's round acts on its own
reply, so a hung agent delays no other; a call waiting for its turn in the controller does not
run down its deadline; an ordinary poll reads and asks about only what can change; StartActions
in one call per agent, and StartAction per node for an agent that does not serve it; the node
cache saved in a number of statements that follows the chunks, not the nodes.

Figures (200 agents of 100 nodes, poll CPU with 20,000 deployed reservations) are in
scripts/bench/controller_scale.py; nothing here is timed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from edgebed.controller import lifecycle
from edgebed.controller.store.inventory import plan_inventory, stale_nodes
from tests.controller.conftest import controller_for, make_settings
from tests.controller.test_scheduler import poll_until, reserve_ready, setup, states


async def _wait_for(condition, until_done: asyncio.Task, *, seconds: float = 30.0) -> bool:
    """Checks `condition` every 20 ms; True once it holds, False when `until_done` finished first
    (or `seconds` passed: a margin for a loaded machine, not a measure)."""
    for _ in range(int(seconds / 0.02)):
        if await condition():
            return True
        if until_done.done():
            return await condition()
        await asyncio.sleep(0.02)
    return False


@pytest.mark.slow
async def test_a_hung_agent_delays_no_other_agents_start_and_updates(tmp_path, clock, fake_agents):
    """Both agents' reservations start in the same poll; one agent hangs. The other agent's
    deploy is accepted, written and followed while the hung agent's call is still pending (the
    poll has not returned and the hung agent is not flagged yet): nothing waits for it."""
    ok, hung = fake_agents("ok", nodes=2), fake_agents("hung", nodes=2)
    async with controller_for(make_settings(tmp_path, call_timeout_seconds=3.0), clock) as ctl:
        [alice] = await setup(ctl, {"ok": ok, "hung": hung})
        await reserve_ready(ctl, alice, ["ok-000", "ok-001", "hung-000"], int(clock()))
        hung.fake.hang.set()
        try:
            poll = asyncio.create_task(ctl.scheduler.poll())

            async def ok_started_and_written() -> bool:
                current = await states(ctl, alice)
                return current["ok-000"] == ("in_progress", "netboot") == current["ok-001"]

            assert await _wait_for(ok_started_and_written, poll), await states(ctl, alice)
            assert not poll.done(), "the poll waits for the hung agent's answer"
            assert (await ctl.store.agents.get_agent("hung")).status == "connected"
            assert sorted(ok.fake.started) == [("ok-000", "deploy"), ("ok-001", "deploy")]

            # A background scheduler does not even wait for it: the next poll (patience 0)
            # serves the healthy agent while the hung agent's round is still running.
            report = await ctl.scheduler.poll(patience=0.0)
            assert "hung" not in report.state_calls
            await poll
            assert (await ctl.store.agents.get_agent("hung")).status == "disconnected"
        finally:
            hung.fake.release.set()


@pytest.mark.slow
async def test_a_deadline_runs_only_once_the_call_is_sent_not_while_it_waits_its_turn(tmp_path, clock, fake_agents):
    """One call in flight at a time (max_calls 1) and two hung agents ahead in the queue: the
    healthy agent's call waits two deadlines for its turn, then gets its own whole deadline and
    succeeds; it is not flagged. Only the hung agents are."""
    served = {name: fake_agents(name, nodes=1) for name in ("h1", "h2", "ok")}
    settings = make_settings(tmp_path, call_timeout_seconds=1.0, max_calls=1)
    async with controller_for(settings, clock) as ctl:
        await setup(ctl, served, users=())
        records = {name: await ctl.store.agents.get_agent(name) for name in served}
        served["h1"].fake.hang.set()
        served["h2"].fake.hang.set()
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            first = asyncio.create_task(ctl.client.get_nodes(records["h1"]))
            await asyncio.sleep(0)
            second = asyncio.create_task(ctl.client.get_nodes(records["h2"]))
            await asyncio.sleep(0)
            nodes = await ctl.client.get_nodes(records["ok"])
            waited = loop.time() - started
        finally:
            for agent in served.values():
                agent.fake.release.set()
        assert nodes == {"ok-000": {"ip": "10.1.0.1", "model": "pi4"}}
        # It did wait behind both hung calls: longer than its own deadline.
        assert waited > settings.call_timeout_seconds
        assert [isinstance(t.exception(), Exception) for t in (first, second)] == [True, True]
        statuses = {a.name: a.status for a in await ctl.agents.list_agents(ctl.admin)}
        assert statuses == {"h1": "disconnected", "h2": "disconnected", "ok": "connected"}


async def test_an_ordinary_poll_reads_and_asks_only_what_can_change(tmp_path, clock, fake_agents):
    """Deployed reservations with their window open are not read from the store, nor asked
    about: with 6 deployed, a poll reads no row and makes no call; a reboot of one makes the
    next polls read that one row and ask about that one node. A full poll still looks at all."""
    served = fake_agents("rpi", nodes=6)
    nodes = [f"rpi-{i:03d}" for i in range(6)]
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served})
        await reserve_ready(ctl, alice, nodes, int(clock()))
        await poll_until(ctl, alice, {n: ("ready", "deployed") for n in nodes})

        read: list[int] = []
        watched = ctl.store.schedule.list_watched

        async def counting(**kwargs):
            rows = await watched(**kwargs)
            read.append(len(rows))
            return rows

        ctl.store.schedule.list_watched = counting
        calls = served.fake.calls["GetActionState"]
        report = await ctl.scheduler.poll(full=False)
        assert read == [0] and report.state_calls == {}
        assert served.fake.calls["GetActionState"] == calls

        await ctl.reservations.act(alice, "rpi-003", "reboot")
        report = await ctl.scheduler.poll(full=False)
        assert report.started == ["rpi-003:reboot"] and read[-1] == 1
        report = await ctl.scheduler.poll(full=False)
        assert served.fake.state_requests[-1] == ["rpi-003"] and read[-1] == 1
        await poll_until(ctl, alice, {n: ("ready", "rebooted" if n == "rpi-003" else "deployed") for n in nodes})

        # Someone started an action by hand on the agent: only a full poll sees it.
        served.fake.actions["rpi-005"].state_idx = 0
        await ctl.scheduler.poll(full=False)
        assert (await states(ctl, alice))["rpi-005"] == ("ready", "deployed")
        await ctl.scheduler.poll(full=True)
        assert served.fake.state_requests[-1] == nodes
        assert (await states(ctl, alice))["rpi-005"][0] == "in_progress"


async def test_the_stores_watched_rows_are_exactly_the_lifecycles(tmp_path, clock):
    """list_watched (SQL) selects the rows lifecycle.watched says, over every combination of
    the columns it reads."""
    now, until = 10_000, 10_600
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        S = ctl.store.schedule.m.Schedule
        combos = itertools.product(
            ("configuring", "ready", "in_progress"),  # status
            ("", "deploy"),  # pending
            (False, True),  # pending_issued
            (False, True),  # ending
            ("", "deploy"),  # process
            ("", "deployed"),  # action_state
            ((now + 100, now + 3600), (until + 1, until + 3600), (now - 3600, now)),  # window
        )
        rows = []
        for index, (status, pending, issued, ending, process, state, (start, end)) in enumerate(combos):
            rows.append(
                dict(
                    node_name=f"n{index:04d}", owner="alice@example.org", bin="", start_date=start, end_date=end,
                    status=status, pending=pending, pending_issued=issued, ending=ending, process=process,
                    action_state=state,
                )
            )

        def insert():
            for first in range(0, len(rows), 50):
                S.insert_many(rows[first : first + 50]).execute()

        await ctl.store._engine.run(insert)
        every = await ctl.store.schedule.list_schedule()
        assert len(every) == len(rows)
        expected = sorted(r.node_name for r in every if lifecycle.watched(r, now, until))
        selected = sorted(r.node_name for r in await ctl.store.schedule.list_watched(now=now, until=until))
        assert selected == expected
        assert 0 < len(selected) < len(rows)


async def test_an_agent_without_start_actions_gets_start_action_per_node(tmp_path, clock, fake_agents):
    """An older agent answers StartActions with UNIMPLEMENTED: its nodes are started with
    StartAction each, it is not flagged nor given a last_error, and it is not asked for the
    batch again (until it is probed: a reconnect)."""
    served = fake_agents("old", nodes=3)
    served.fake.batch = False
    nodes = ["old-000", "old-001", "old-002"]
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        [alice] = await setup(ctl, {"old": served})
        await reserve_ready(ctl, alice, nodes[:2], int(clock()))
        report = await ctl.scheduler.poll()
        assert sorted(report.started) == ["old-000:deploy", "old-001:deploy"]
        assert (served.fake.calls["StartActions"], served.fake.calls["StartAction"]) == (1, 2)
        agent = await ctl.store.agents.get_agent("old")
        assert (agent.status, agent.last_error) == ("connected", "")
        await reserve_ready(ctl, alice, nodes[2:], int(clock()))
        await poll_until(ctl, alice, {n: ("ready", "deployed") for n in nodes})
        assert (served.fake.calls["StartActions"], served.fake.calls["StartAction"]) == (1, 3)


async def test_start_actions_results_go_through_the_lifecycle_item_by_item(tmp_path, clock, fake_agents, caplog):
    """One StartActions with three items: one accepted, one refused (its environment is gone
    on the agent), one on a busy node: each row gets its own after_start decision."""
    served = fake_agents("rpi", nodes=3)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served})
        start = int(clock()) + 60
        await reserve_ready(ctl, alice, ["rpi-000"], start)
        await reserve_ready(ctl, alice, ["rpi-001"], start, environment="ubuntu-22.04")
        await reserve_ready(ctl, alice, ["rpi-002"], start)
        del served.fake.environments["ubuntu-22.04"]
        # Busy with an action someone started by hand.
        served.fake.actions["rpi-002"] = _busy("rpi-002")
        clock.advance(60)
        with caplog.at_level(logging.WARNING):
            report = await ctl.scheduler.poll()
        assert served.fake.batches == [2]  # rpi-002 is busy: not sent (WAIT_BUSY)
        assert report.started == ["rpi-000:deploy"]
        rows = {r.node_name: r for r in await ctl.reservations.list_reservations(alice)}
        assert (rows["rpi-000"].status, rows["rpi-000"].action_state) == ("in_progress", "netboot")
        assert rows["rpi-001"].status == "configuring"
        assert rows["rpi-001"].last_error == "deploy refused: unknown environment 'ubuntu-22.04'"
        [row] = [r for r in await ctl.store.schedule.list_schedule() if r.node_name == "rpi-002"]
        assert (row.pending, row.pending_issued) == ("deploy", False)


def _busy(node):
    from tests.controller.fake_agent import FakeAction

    return FakeAction(node, "10.1.0.3", "", "reboot", 0, 0, {}, action_id=99)


def test_planning_an_inventory_save_looks_each_node_up_once():
    """plan_inventory and stale_nodes take one pass over the nodes; each lookup goes through a
    mapping or set counted here, so the work is linear in the nodes (a list lookup per node,
    or a set rebuilt per node, would show as len(nodes) squared)."""

    class Counting(dict):
        lookups = 0

        def get(self, key, default=None):
            Counting.lookups += 1
            return super().get(key, default)

    n = 2000
    nodes = {f"n{i:05d}": {"ip": f"10.0.{i // 250}.{i % 250}"} for i in range(n)}
    existing = Counting(
        {f"n{i:05d}": ("a", "raspberry", '{"ip": "x"}') for i in range(0, n, 2)}
        | {"n00001": ("other", "raspberry", "{}"), "gone": ("a", "raspberry", "{}")}
    )
    plan = plan_inventory("a", "raspberry", nodes, existing)
    assert Counting.lookups == n
    assert plan.claimed == {"n00001": "other"}
    assert len(plan.inserts) == n // 2 - 1 and len(plan.updates) == n // 2
    assert isinstance(plan.kept, frozenset) and len(plan.kept) == n - 1
    assert stale_nodes(["gone", "n00000"], plan.kept) == ["gone"]


async def test_saving_an_inventory_takes_statements_by_chunk_not_by_node(tmp_path, clock, caplog):
    """2,000 new nodes of one agent are written in a few dozen statements (multi-row inserts),
    and saving them again unchanged in a handful."""
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        nodes = {f"n{i:05d}": {"ip": "10.0.0.1"} for i in range(2000)}

        async def statements() -> int:
            caplog.clear()
            with caplog.at_level(logging.DEBUG, logger="peewee"):
                await ctl.store.inventory.save_inventory("a", "raspberry", nodes, None, 1)
            return len([r for r in caplog.records if r.name == "peewee"])

        first = await statements()
        again = await statements()
        assert len(await ctl.store.inventory.list_nodes()) == 2000
        # 4 chunked reads + 14 inserts of 150 rows + the agent's names (+ the transaction's).
        assert first <= 25, first
        assert again <= 10, again


async def test_an_agent_reconnected_by_another_process_is_called_again(tmp_path, clock, fake_agents):
    """With the scheduler in a process of its own, a reconnect happens in the web process: it
    writes `connected`. The scheduler's client, which found the agent lost, takes it back when
    it reads that status written after the loss, and follows its reservations again."""
    served = fake_agents("rpi", nodes=1)
    async with controller_for(make_settings(tmp_path, call_timeout_seconds=0.5), clock) as ctl:
        [alice] = await setup(ctl, {"rpi": served})
        await reserve_ready(ctl, alice, ["rpi-000"], int(clock()))
        served.fake.hang.set()
        await ctl.scheduler.poll()  # lost: flagged, and this client no longer calls it
        served.fake.release.set()
        served.fake.hang.clear()
        assert (await ctl.store.agents.get_agent("rpi")).status == "disconnected"
        report = await ctl.scheduler.poll()
        assert report.state_calls == {}

        # The web process reconnects it (its own client probed it): the status says so.
        await ctl.store.agents.set_agent_status("rpi", status="connected", last_error="")
        await poll_until(ctl, alice, {"rpi-000": ("ready", "deployed")})
