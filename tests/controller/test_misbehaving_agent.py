"""A misbehaving agent beside two honest ones, with the real scheduler running, on SQLite and on
PostgreSQL: the honest agents' reservations deploy at start_date and are destroyed at end_date,
the misbehaving agent is flagged with the reason its replies were refused, and no row of the
database holds anything of those replies.

The honest agents are real agents (edgebed.agent, sim driver) started in this process; the
misbehaving one is the fake (tests/controller/fake_agent.MisbehavingAgent) answering over-long
node names and states, negative progress and state_idx, a huge state_count, a name ending with a
newline and a 10 KiB description.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from pathlib import Path

import psycopg2
import pytest

from edgebed.agent.app import open_agent
from edgebed.agent.settings import AgentSettings
from tests.controller.conftest import controller_for, make_settings
from tests.controller.fake_agent import MARK, MisbehavingAgent, ServedAgent

TOKEN = "honest-agent-token"
WINDOW = 20  # seconds of the reservations
WAIT = 60


def honest_settings(tmp_path: Path, name: str) -> AgentSettings:
    return AgentSettings(
        name=name, type="raspberry", listen="127.0.0.1:0", token=TOKEN,
        database=str(tmp_path / f"{name}.sqlite"), driver="sim", sim_nodes=3,
        sim_time_scale=0.005, sim_failure_rate=0.0, sim_seed=1,
    )


def every_value(database: str) -> list[str]:
    """Every cell of every table of the controller's database, as text."""
    if database.startswith("postgresql://"):
        conn = psycopg2.connect(database)
        tables_sql = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    else:
        conn = sqlite3.connect(database)
        tables_sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    try:
        cursor = conn.cursor()
        cursor.execute(tables_sql)
        values = []
        for (table,) in cursor.fetchall():
            cursor.execute(f'SELECT * FROM "{table}"')
            values += [str(value) for row in cursor.fetchall() for value in row]
        return values
    finally:
        conn.close()


async def wait_for(condition, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await condition()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


EXPECTED_REASONS = {
    "GetNodes": "bad reply to GetNodes: node 4: name has 100 characters, more than 64",
    "DescribeNodeType": "bad reply to DescribeNodeType: process deploy: state has 100 characters, more than 64",
    "ListEnvironments": "bad reply to ListEnvironments: environment bloated: description has 10240 characters, "
    "more than 4096",
    "GetActionState": "bad reply to GetActionState: action of node bad-000: state has 100 characters, more than 64",
}


@pytest.mark.slow
async def test_a_misbehaving_agent_is_flagged_and_stores_nothing_while_the_honest_ones_deploy_and_end(
    tmp_path, database_url, caplog
):
    caplog.set_level(logging.WARNING, logger="edgebed.controller.agents")
    settings = make_settings(
        tmp_path, database=database_url, poll_seconds=0.2, refresh_seconds=1.0, call_timeout_seconds=6.0
    )
    bad = ServedAgent(MisbehavingAgent("bad", nodes=3))
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(bad.stop)
        honest = [await stack.enter_async_context(open_agent(honest_settings(tmp_path, n))) for n in ("east", "west")]
        ctl = await stack.enter_async_context(controller_for(settings, run_scheduler=True))
        admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
        for agent in honest:
            info = await ctl.agents.add_agent(admin, agent.settings.name, "raspberry", agent.host, agent.port, TOKEN)
            assert (info.status, info.node_count) == ("connected", 3)
        info = await ctl.agents.add_agent(admin, "bad", "raspberry", "127.0.0.1", bad.port, bad.fake.token)
        assert (info.status, info.node_count) == ("connected", 3)
        bad_nodes = [n for n in await ctl.store.inventory.list_nodes() if n.agent == "bad"]
        [bad_catalog] = [c for c in await ctl.store.inventory.list_catalogs() if c.agent == "bad"]

        user = await ctl.accounts.create_user("user@example.org", "user-password", authorized=True)
        catalogs = await ctl.inventory.catalogs()
        wanted = {"east-001": "east", "east-002": "east", "west-001": "west", "west-002": "west", "bad-000": "bad"}
        start = int(time.time()) + 3
        reserved = await ctl.reservations.reserve(
            user, nodes=sorted(wanted), start_date=start, duration_hours=WINDOW / 3600
        )
        assert reserved == sorted(wanted)
        for node, agent_name in wanted.items():
            environment = catalogs[agent_name].environments[0].name
            reservation = await ctl.reservations.configure(user, node, properties={"environment": environment})
            assert reservation.status == "ready"
        bad.fake.misbehave()

        honest_nodes = sorted(n for n, a in wanted.items() if a != "bad")

        async def honest_states():
            rows = {r.node_name: (r.status, r.action_state) for r in await ctl.store.schedule.list_schedule()}
            return {node: rows.get(node) for node in honest_nodes}

        async def all_deployed():
            return set((await honest_states()).values()) == {("ready", "deployed")}

        await wait_for(all_deployed, "the honest agents' four nodes to be deployed")
        assert time.time() < start + WINDOW, "deployed only after end_date: the test cannot see the destroy"
        # The misbehaving agent's reservation waits: its reports are refused, so nothing was
        # sent to it and nothing of what it says is mirrored.
        [row] = [r for r in await ctl.store.schedule.list_schedule() if r.node_name == "bad-000"]
        assert (row.status, row.pending, row.pending_issued) == ("in_progress", "deploy", False)
        assert (row.action_state, row.process, row.state_idx, row.state_count, row.progress, row.node_ip) == (
            "", "", 0, 0, 0, ""
        )

        async def honest_rows_gone():
            return set((await honest_states()).values()) == {None}

        await wait_for(honest_rows_gone, "the honest reservations to be destroyed and go")
        assert time.time() >= start + WINDOW
        for agent in honest:
            for node in (n for n, a in wanted.items() if a == agent.settings.name):
                records = await agent.db(agent.store.list_actions, [node])
                assert [(r.process, r.state) for r in records] == [("destroy", "destroyed")]

        async def flagged_for_every_reply():
            return all(ctl.metrics.calls("bad", method, "bad_reply") >= 2 for method in EXPECTED_REASONS)

        await wait_for(flagged_for_every_reply, "a bad reply to every method the controller calls", timeout=10)

    # The misbehaving agent: still connected (it answers), flagged, and told why each reply failed.
    async with controller_for(settings) as ctl:
        agent = await ctl.store.agents.get_agent("bad")
        assert agent.status == "connected"
        assert agent.last_error in EXPECTED_REASONS.values(), agent.last_error
        for method, reason in EXPECTED_REASONS.items():
            assert f"agent bad: refused its reply: {reason}" in caplog.text, method
        for name in ("east", "west"):
            assert (await ctl.store.agents.get_agent(name)).last_error == ""

        # Nothing of its replies is stored: its nodes and catalog as they were before it turned;
        # its reservation, never started, expired at end_date with nothing to destroy.
        assert [n for n in await ctl.store.inventory.list_nodes() if n.agent == "bad"] == bad_nodes
        assert [c for c in await ctl.store.inventory.list_catalogs() if c.agent == "bad"] == [bad_catalog]
        assert await ctl.store.schedule.list_schedule() == []
        assert bad.fake.started == []
    values = every_value(database_url)
    assert values and not [v for v in values if MARK in v or "\n" in v and v.startswith("bad-")]
