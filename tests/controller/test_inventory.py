"""Inventory: node types and environments from the agents, the admin's node and environment
management (which goes through the owning agent), and the reservation timeline."""

from __future__ import annotations

import pytest

from edgebed.controller.domain import Environment
from edgebed.controller.errors import Conflict, InvalidInput, NotAuthorized, NotFound
from tests.controller.conftest import controller_for, make_settings


async def test_node_types_environments_and_admin_node_management(tmp_path, clock, fake_agents):
    rpi, srv = fake_agents("rpi", nodes=2), fake_agents("srv", type="node", nodes=1)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
        await ctl.agents.add_agent(admin, "rpi", "raspberry", "127.0.0.1", rpi.port, rpi.fake.token)
        await ctl.agents.add_agent(admin, "srv", "node", "127.0.0.1", srv.port, srv.fake.token)

        types = await ctl.inventory.node_types()
        assert sorted(types) == ["node", "raspberry"]
        spec = types["raspberry"].property("os_password")
        assert spec is not None and spec.secret and not spec.required
        assert types["raspberry"].processes["reboot"] == ["power_off", "power_on", "wait_ssh", "rebooted"]
        envs = await ctl.inventory.environments()
        assert [(e.name, e.agent, e.default_user) for e in envs["raspberry"]] == [
            ("raspios-lite", "rpi", "pi"), ("ubuntu-22.04", "rpi", "ubuntu")
        ]

        node = await ctl.inventory.add_node(admin, "rpi", "rpi-100", {"ip": "10.1.9.9", "model": "pi5"})
        assert (node.name, node.agent, node.properties["model"], node.connected) == ("rpi-100", "rpi", "pi5", True)
        with pytest.raises(Conflict, match="already used by agent srv"):
            await ctl.inventory.add_node(admin, "rpi", "srv-000", {"ip": "10.1.9.8"})
        with pytest.raises(InvalidInput, match="node name"):
            await ctl.inventory.add_node(admin, "rpi", "bad name!", {})
        renamed = await ctl.inventory.rename_node(admin, "rpi-100", "rpi-200")
        assert renamed.name == "rpi-200" and "rpi-200" in rpi.fake.nodes
        await ctl.reservations.reserve(admin, nodes=["rpi-200"], start_date=int(clock()) + 60, duration_hours=1)
        with pytest.raises(Conflict, match="has reservations"):
            await ctl.inventory.remove_node(admin, "rpi-200")
        await ctl.reservations.act(admin, "rpi-200", "destroy")  # cancels: never started
        await ctl.inventory.remove_node(admin, "rpi-200")
        assert [n.name for n in await ctl.inventory.list_nodes()] == ["rpi-000", "rpi-001", "srv-000"]
        with pytest.raises(NotFound):
            await ctl.inventory.remove_node(admin, "rpi-200")

        stored = await ctl.inventory.put_environment(
            admin, "rpi", Environment(name="debian-12", description="Debian", image="/img/d.img", size_bytes=10, default_user="debian")
        )
        assert stored.name == "debian-12"
        assert "debian-12" in [e.name for e in (await ctl.inventory.environments())["raspberry"]]
        await ctl.inventory.remove_environment(admin, "rpi", "debian-12")
        assert "debian-12" not in [e.name for e in (await ctl.inventory.environments())["raspberry"]]
        with pytest.raises(NotFound, match="no environment named nope"):
            await ctl.inventory.remove_environment(admin, "rpi", "nope")


async def test_the_timeline_shows_windows_and_hides_other_owners(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=2)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
        user = await ctl.accounts.create_user("user@example.org", "user-password", authorized=True)
        await ctl.agents.add_agent(admin, "rpi", "raspberry", "127.0.0.1", served.port, served.fake.token)
        now = int(clock())
        await ctl.reservations.reserve(admin, nodes=["rpi-000"], start_date=now + 3600, duration_hours=2)
        await ctl.reservations.reserve(user, nodes=["rpi-000"], start_date=now + 4 * 3600, duration_hours=1)
        timeline = await ctl.inventory.timeline(now, now + 86400, user)
        assert [(b.start_date - now, b.end_date - now, b.mine) for b in timeline["rpi-000"]] == [
            (3600, 3 * 3600, False), (4 * 3600, 5 * 3600, True)
        ]
        assert "rpi-001" not in timeline
        # Other owners stay unnamed to a user; an administrator sees who holds each window.
        assert [b.owner for b in timeline["rpi-000"]] == ["", ""]
        seen_by_admin = await ctl.inventory.timeline(now, now + 86400, admin)
        assert [b.owner for b in seen_by_admin["rpi-000"]] == ["admin@example.org", "user@example.org"]
        with pytest.raises(InvalidInput, match="end after it starts"):
            await ctl.inventory.timeline(now, now, user)
        # "free until" past a view: each node's first start in [after, before), nothing else.
        assert await ctl.inventory.next_starts(now + 2 * 3600, now + 86400, user) == {"rpi-000": now + 4 * 3600}
        assert await ctl.inventory.next_starts(now, now + 86400, user) == {"rpi-000": now + 3600}
        assert await ctl.inventory.next_starts(now + 5 * 3600, now + 86400, user) == {}
        assert await ctl.inventory.next_starts(now, now, user) == {}
        # Read for the rows a page shows only (issue #12): the other nodes' windows are not read.
        await ctl.reservations.reserve(user, nodes=["rpi-001"], start_date=now + 3600, duration_hours=1)
        assert sorted(await ctl.inventory.timeline(now, now + 86400, user)) == ["rpi-000", "rpi-001"]
        assert list(await ctl.inventory.timeline(now, now + 86400, user, ["rpi-001"])) == ["rpi-001"]
        assert await ctl.inventory.timeline(now, now + 86400, user, []) == {}
        assert await ctl.inventory.next_starts(now, now + 86400, user, ["rpi-001"]) == {"rpi-001": now + 3600}
        assert await ctl.inventory.next_starts(now, now + 86400, user, ["rpi-000", "nope"]) == {"rpi-000": now + 3600}
        await ctl.accounts.sign_up("new@example.org", "new-password")
        waiting = await ctl.accounts.get_user("new@example.org")
        with pytest.raises(NotAuthorized):
            await ctl.inventory.timeline(now, now + 86400, waiting)
        with pytest.raises(NotAuthorized):
            await ctl.inventory.next_starts(now, now + 86400, waiting)
