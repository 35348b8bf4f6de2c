"""One agent's data that the database refuses never stops another agent's work: each agent's
inventory and reservation updates are written in transactions of their own.

The reply checks (controller/replies.py) stop bad data before it gets that far, so here they are
switched off on purpose (monkeypatched to let everything through) for the over-long values to
reach PostgreSQL, which refuses them (varchar(64)). On SQLite nothing an agent can send makes a
write fail (it stores a 100-character string in a varchar(64) column as it comes): there the
checks alone keep bad data out (tests/controller/test_bad_replies.py, test_misbehaving_agent.py).
"""

from __future__ import annotations

import pytest

from edgebed.controller import replies
from edgebed.controller.errors import BadReply
from tests.controller import fake_agent
from tests.controller.conftest import controller_for, make_settings


def _unchecked_actions(reported, described, asked):
    return {action.node_name: action for action in reported}


def _unchecked_nodes(items):
    return {name: dict(properties) for name, properties in items}


@pytest.mark.slow
async def test_postgresql_refuses_one_agents_data_and_the_other_agent_goes_on(
    tmp_path, clock, fake_agents, postgres_url, monkeypatch
):
    served = {"good": fake_agents("good", nodes=2), "bad": fake_agents("bad", nodes=2)}
    async with controller_for(make_settings(tmp_path, database=postgres_url), clock) as ctl:
        admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
        for name, agent in served.items():
            await ctl.agents.add_agent(admin, name, "raspberry", "127.0.0.1", agent.port, agent.fake.token)
        user = await ctl.accounts.create_user("alice@example.org", "user-password", authorized=True)
        nodes = ["bad-000", "good-000"]
        await ctl.reservations.reserve(user, nodes=nodes, start_date=int(clock()), duration_hours=1)
        for node in nodes:
            await ctl.reservations.configure(user, node, properties={"environment": "raspios-lite"})
        assert sorted((await ctl.scheduler.poll()).started) == ["bad-000:deploy", "good-000:deploy"]

        monkeypatch.setattr(replies, "actions", _unchecked_actions)
        monkeypatch.setattr(replies, "nodes", _unchecked_nodes)
        served["bad"].fake.tamper.update(GetActionState=fake_agent.long_state, GetNodes=fake_agent.long_node_name)

        # The reports of both agents come in the same polls; only the bad agent's are refused.
        for _ in range(8):
            await ctl.scheduler.poll()
        rows = {row.node_name: row for row in await ctl.store.schedule.list_schedule()}
        assert (rows["good-000"].status, rows["good-000"].action_state) == ("ready", "deployed")
        assert (rows["bad-000"].action_state, rows["bad-000"].progress) == ("netboot", 0)
        bad = await ctl.store.agents.get_agent("bad")
        assert bad.status == "connected"
        assert bad.last_error.startswith(
            "not stored: its reservations' updates: DataError: value too long for type character varying(64)"
        ), bad.last_error
        assert (await ctl.store.agents.get_agent("good")).last_error == ""

        served["good"].fake.nodes["good-new"] = {"ip": "10.1.9.9"}
        outcome = await ctl.inventory.refresh()
        assert outcome["good"] is None and isinstance(outcome["bad"], BadReply)
        # The bad agent's nodes as they were; the good agent's refreshed.
        assert {n.name for n in await ctl.store.inventory.list_nodes()} == {
            "bad-000", "bad-001", "good-000", "good-001", "good-new"
        }
        bad = await ctl.store.agents.get_agent("bad")
        assert bad.last_error.startswith("not stored: its nodes and catalog: DataError: value too long")

        # Honest again: its next writes go through and clear what it was told.
        served["bad"].fake.tamper.clear()
        await ctl.inventory.refresh()
        assert (await ctl.store.agents.get_agent("bad")).last_error == ""
        served["bad"].fake.tamper["GetActionState"] = fake_agent.long_state
        await ctl.scheduler.poll()
        assert (await ctl.store.agents.get_agent("bad")).last_error.startswith("not stored: its reservations'")
        served["bad"].fake.tamper.clear()
        await ctl.scheduler.poll()
        assert (await ctl.store.agents.get_agent("bad")).last_error == ""
        [row] = [r for r in await ctl.store.schedule.list_schedule() if r.node_name == "bad-000"]
        assert row.action_state not in ("netboot", "") and 0 <= row.progress <= 100
