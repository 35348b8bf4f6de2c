"""End to end on loopback with REAL agent processes (`edgebed agent`, sim driver, small
time_scale): the life of a reservation, and a controller SIGKILLed mid-deployment."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edgebed.controller.store import Store
from tests.controller.conftest import REPO, controller_for, make_settings

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
    log = agent.log()
    for node in nodes:
        assert log.count(f"{node}: deploy started") == 1
        assert log.count(f"{node}: destroy started") == 1
    assert "pi-004: deploy started" not in log
    assert "very-secret-1" not in log


def _write_controller_config(path: Path, database: Path) -> None:
    path.write_text(
        f'listen = "127.0.0.1:0"\ndatabase = "{database}"\nsecret_key_file = "{path.parent / "secret.key"}"\n'
        "[scheduler]\npoll_seconds = 0.2\n[reservations]\nturnaround_seconds = 0\n"
        "[agents]\ncall_timeout_seconds = 6.0\n",
        encoding="utf-8",
    )


def _start_headless(config: Path, log: Path) -> subprocess.Popen:
    with open(log, "a", encoding="utf-8") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "edgebed.controller.headless", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "edgebed controller scheduler running", log.read_text()
    return process


async def test_a_controller_sigkilled_during_the_deployment_of_20_nodes_loses_and_repeats_nothing(
    tmp_path, agent_processes
):
    agent = agent_processes("rack", nodes=20, time_scale=0.03)
    database = tmp_path / "controller.sqlite"
    config = tmp_path / "controller.toml"
    _write_controller_config(config, database)
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
    log = tmp_path / "controller.log"

    async def sending():
        # The first intentions are on disk: StartAction calls are about to go out or in flight.
        return any(r.pending_issued or r.action_state for r in await store.schedule.list_schedule())

    async def deploying():
        rows = await store.schedule.list_schedule()
        return sum(1 for r in rows if r.action_state not in ("", "deployed")) >= 10

    async def all_deployed():
        rows = await store.schedule.list_schedule()
        return rows if all(r.action_state == "deployed" for r in rows) else None

    controller = None
    try:
        # Killed twice: while the StartAction calls go out, then in the middle of the deploys.
        for kill_when, what in ((sending, "StartAction to be sent"), (deploying, "the deploys to be under way")):
            controller = _start_headless(config, log)
            await wait_for(kill_when, what, timeout=WAIT_SECONDS)
            controller.send_signal(signal.SIGKILL)
            controller.wait()
            rows = await store.schedule.list_schedule()
            assert not all(r.action_state == "deployed" for r in rows), "killed too late to show anything"

        controller = _start_headless(config, log)
        rows = await wait_for(all_deployed, "all 20 nodes to be deployed after the restart")
        controller.send_signal(signal.SIGTERM)
        assert controller.wait(15) == 0
    finally:
        if controller is not None and controller.poll() is None:
            controller.kill()
        await store.close()

    assert sorted(r.node_name for r in rows) == nodes
    for row in rows:
        assert (row.status, row.process, row.pending, row.pending_issued, row.last_error) == (
            "ready", "deploy", "", False, ""
        ), row
    agent_log = agent.log()
    for node in nodes:
        assert agent_log.count(f"{node}: deploy started") == 1, node
    assert "Traceback" not in log.read_text()
