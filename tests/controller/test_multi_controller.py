"""Several `edgebed controller` processes on one real PostgreSQL, driving ten real agent
processes (issue #14): shares, SIGKILL takeovers, a join, a controller paused past its lease,
and the login limits across replicas. One run that checks all of it, since everything here is
started once (three controllers, ten agents, a hundred nodes)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter

import pytest

from edgebed.controller.leases import owner_of
from edgebed.controller.store import LEADER, Store
from tests.conftest import free_port
from tests.controller.conftest import controller_for, make_settings
from tests.processes import (
    AgentProcess,
    ControllerProcess,
    agent_calls,
    final_states,
    start_all,
    stop_all,
    write_controller_config,
)
from tests.web.harness import Client

pytestmark = pytest.mark.slow

LEASE = 6.0
CALL_TIMEOUT = 3.0
POLL = 0.3
AGENTS = 10
NODES_PER_AGENT = 10
WAIT = 180.0
STARTUP = 120.0
PASSWORD = "a-long-password-1"


async def wait_for(condition, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await condition()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _controller(tmp_path, index: int, database: str) -> ControllerProcess:
    config = write_controller_config(
        tmp_path / f"ctl{index}",
        listen=f"127.0.0.1:{free_port()}",
        database=database,
        secret_key_file=str(tmp_path / "secret.key"),
        scheduler={"poll_seconds": POLL, "lease_seconds": LEASE},
        reservations={"turnaround_seconds": 0},
        agents={"call_timeout_seconds": CALL_TIMEOUT},
    )
    return ControllerProcess(config, name=f"ctl{index}")


def _failures_before_refusal(urls: list[str], email: str) -> int:
    """Wrong passwords for `email`, sent to `urls` in turn (a round-robin load balancer), until
    one is refused with 429: how many were let through (401)."""
    for count, url in enumerate(itertools.cycle(urls)):
        client = Client(url)
        status = client.post("/login", {"email": email, "password": "wrong-password-9"}).status
        if status == 429:
            return count
        assert status == 401, status
        assert count < 50, "never refused"
    raise AssertionError("unreachable")


def _runs(callers: list[str]) -> int:
    return sum(1 for i, caller in enumerate(callers) if i == 0 or callers[i - 1] != caller)


async def test_three_controllers_share_ten_agents_through_two_sigkills_a_join_and_a_pause(tmp_path, postgres_url):
    agents = [
        # A deploy takes about 20 s: two takeovers fit in it.
        AgentProcess(tmp_path / "agents", f"rack{i}", nodes=NODES_PER_AGENT, time_scale=0.1, log_calls=True)
        for i in range(AGENTS)
    ]
    # Ten processes starting side by side on a shared machine: more than the usual 30 s.
    start_all(agents, timeout=STARTUP)
    controllers = [_controller(tmp_path, i, postgres_url) for i in range(3)]
    settings = make_settings(
        tmp_path, database=postgres_url, lease_seconds=LEASE, call_timeout_seconds=CALL_TIMEOUT
    )
    store = Store(postgres_url, secret_key=settings.secret_key(), workers=2)
    try:
        async with controller_for(settings) as ctl:
            admin = await ctl.accounts.create_user("admin@example.org", PASSWORD, admin=True, authorized=True)
            for agent in agents:
                await ctl.agents.add_agent(admin, agent.name, "raspberry", agent.host, agent.port, agent.token)
            user = await ctl.accounts.create_user("user@example.org", PASSWORD, authorized=True)
            await ctl.accounts.create_user("one@example.org", PASSWORD, authorized=True)
            await ctl.accounts.create_user("three@example.org", PASSWORD, authorized=True)
            environment = (await ctl.inventory.environments())["raspberry"][0].name
        await store.open()
        start_all(controllers, timeout=STARTUP)
        names = {agent.name for agent in agents} | {LEADER}

        async def instance_of() -> dict[int, str]:
            return {i.pid: i.id for i in await store.leases.instances(LEASE) if i.alive}

        async def settled():
            # Every agent held by the live controller its share says.
            live = await instance_of()
            running = [live[c.pid] for c in controllers if c.running and c.pid in live]
            if len(running) != sum(c.running for c in controllers):
                return None
            leases = {lease.agent: lease for lease in await store.leases.leases() if lease.held}
            if set(leases) >= names and all(leases[n].holder == owner_of(n, running) for n in names):
                return {n: leases[n].holder for n in names}
            return None

        holders = await wait_for(settled, "the three controllers to share the agents")
        assert len(set(holders.values())) >= 2, holders

        # Every replica shows who drives what: /metrics and the admin overview.
        metrics = Client(controllers[1].url).get("/metrics").text
        for name, holder in holders.items():
            assert f'edgebed_agent_driven_by{{agent="{name}",controller="{holder}"}} 1' in metrics
            assert f'edgebed_agent_lease_age_seconds{{agent="{name}"}} ' in metrics
        assert metrics.count("edgebed_controller_up{") == 3
        admin_client = Client(controllers[2].url)
        admin_client.login("admin@example.org", PASSWORD)
        overview = admin_client.get("/admin").text
        assert 'id="controllers"' in overview and all(holder in overview for holder in holders.values())
        assert "driven by " + holders["rack0"] in overview

        # Login limits are counted in the database: as many failures allowed with three
        # replicas behind a round-robin as with one.
        urls = [c.url for c in controllers]
        assert _failures_before_refusal(urls[:1], "one@example.org") == 5
        assert _failures_before_refusal(urls, "three@example.org") == 5

        # A hundred reservations deploying.
        async with controller_for(settings) as ctl:
            nodes = await ctl.reservations.reserve(
                user, filter={}, count=AGENTS * NODES_PER_AGENT, start_date=int(time.time()), duration_hours=2
            )
            assert len(nodes) == AGENTS * NODES_PER_AGENT
            for node in nodes:
                await ctl.reservations.configure(user, node, properties={"environment": environment})

        async def deploying(at_least: int):
            rows = await store.schedule.list_schedule()
            under_way = sum(1 for r in rows if r.action_state not in ("", "deployed"))
            return under_way >= at_least and any(r.action_state != "deployed" for r in rows)

        async def busiest(among: list[ControllerProcess]) -> tuple[ControllerProcess, str]:
            # The controller among `among` that drives the most agents now, and its instance id.
            ids = await _all_instances(store)
            driven = Counter(holder for name, holder in holders.items() if name != LEADER)
            chosen = max(among, key=lambda c: driven.get(ids.get(c.pid, ""), 0))
            return chosen, ids[chosen.pid]

        async def taken_from(instance: str):
            leases = {lease.agent: lease for lease in await store.leases.leases()}
            if all(lease.held and lease.holder != instance for lease in leases.values() if lease.agent in names):
                return {n: leases[n].holder for n in names}
            return None

        # SIGKILL one controller mid-deploy, then a second once its agents are taken over.
        await wait_for(lambda: deploying(20), "20 deploys under way")
        first_killed, first_instance = await busiest(controllers)
        first_killed.kill()
        holders = await wait_for(lambda: taken_from(first_instance), "the first victim's agents to be taken over")
        assert await deploying(1), "deploys over before the second kill: use a smaller time_scale"
        second_killed, second_instance = await busiest([c for c in controllers if c.running])
        second_killed.kill()
        holders = await wait_for(lambda: taken_from(second_instance), "the second victim's agents to be taken over")
        survivor = next(c for c in controllers if c.running)

        async def all_deployed():
            rows = await store.schedule.list_schedule()
            return rows if len(rows) == len(nodes) and all(r.action_state == "deployed" for r in rows) else None

        rows = await wait_for(all_deployed, "all 100 nodes to be deployed")
        for row in rows:
            assert (row.status, row.process, row.pending, row.pending_issued, row.last_error) == (
                "ready", "deploy", "", False, ""
            ), row

        # A controller joins again (the first victim restarted): the work is shared out again.
        first_killed.start(timeout=STARTUP)
        holders = await wait_for(settled, "the rejoined controller to get its share")
        rejoined = next(i for pid, i in (await instance_of()).items() if pid == first_killed.pid)
        assert rejoined in holders.values()

        # Destroy everything; meanwhile the busiest controller is paused past its lease (as if
        # cut off from the database) and comes back.
        async with controller_for(settings) as ctl:
            for node in nodes:
                await ctl.reservations.act(user, node, "destroy")
        paused, paused_instance = await busiest([survivor, first_killed])
        paused.pause()
        try:
            await wait_for(lambda: taken_from(paused_instance), "the paused controller's agents to be taken over")
        finally:
            paused.resume()

        async def all_gone():
            return not await store.schedule.list_schedule()

        await wait_for(all_gone, "all 100 reservations to be destroyed")
        history = await store.schedule.list_history(limit=1000)
        assert sorted(h.node_name for h in history if h.owner == "user@example.org") == sorted(nodes)
        assert {h.outcome for h in history} == {"destroyed"}
        tokens = {lease.agent: lease.token for lease in await store.leases.leases()}
        for controller in controllers:
            if controller.running:
                assert controller.terminate() == 0
            assert "Traceback" not in controller.log(), controller.log()[-3000:]
    finally:
        stop_all(controllers)
        await store.close()
        stop_all(agents)

    # What each agent saw: exactly one deploy and one destroy per node, each to its end, and
    # each agent asked by one controller at a time: every change of caller needs a change of
    # the lease's holder, which the token counts.
    for agent in agents:
        transitions = agent.transitions()
        mine = sorted(n for n in nodes if n.startswith(agent.name + "-"))
        assert agent.started("deploy") == {n: 1 for n in mine}, agent.name
        assert agent.started("destroy") == {n: 1 for n in mine}, agent.name
        assert final_states(transitions, "deploy") == {n: ["deployed"] for n in mine}
        assert final_states(transitions, "destroy") == {n: ["destroyed"] for n in mine}
        polled = [caller for method, caller in agent_calls(agent) if method in ("GetActionState", "StartAction")]
        assert polled, agent.name
        assert _runs(polled) <= tokens[agent.name], (agent.name, tokens[agent.name], polled)


async def _all_instances(store: Store) -> dict[int, str]:
    return {i.pid: i.id for i in await store.leases.instances(LEASE)}
