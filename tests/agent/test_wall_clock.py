"""A wall clock that steps changes the stamps an agent stores, never a duration it measures: a
real sim agent whose wall clock steps back an hour mid-copy still deploys without a reboot, and
simulated boots and copies run on a monotonic clock, also across an agent restart."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from edgebed.agent.app import open_agent
from edgebed.nodetypes.base import Environment, NodeRef
from edgebed.nodetypes.interfaces import MAINTENANCE, NETWORK
from edgebed.nodetypes.sim import raspberry as sim_raspberry
from edgebed.nodetypes.sim.hardware import SimOptions
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from tests.agent.conftest import AUTH, make_settings

NODE = NodeRef("rpi-001", {"ip": "10.10.0.1", "serial": "1a2b0001"})


class SteppingClock:
    """A wall clock (epoch seconds) that follows time.time() plus an offset a test changes."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.slow
async def test_a_wall_clock_step_back_during_the_copy_changes_nothing(tmp_path) -> None:
    """Issue #10: an hour's step back during copy_image used to make the copy's progress
    negative, which the executor took for a stall (hard reboot) or let through. Now: deployed,
    no ladder rung in the transition log, progress in 0..100 at every poll."""
    wall = SteppingClock()
    # A 2.7 GB copy at 20 MB/s, times 0.01: 1.35 s of copy to step in.
    settings = make_settings(tmp_path, sim_nodes=1, sim_time_scale=0.01)
    polled: list[tuple[str, int]] = []
    stepped_at = None
    async with open_agent(settings, wall_clock=wall) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            await stub.StartAction(
                pb.StartActionRequest(node_name="rpi-001", process="deploy", environment="raspios-lite-arm64"),
                metadata=AUTH, timeout=5,
            )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                reply = await stub.GetActionState(
                    pb.GetActionStateRequest(node_names=["rpi-001"]), metadata=AUTH, timeout=5
                )
                [action] = reply.actions
                polled.append((action.state, action.progress))
                if action.state == "copy_image" and action.progress > 0 and stepped_at is None:
                    wall.offset = -3600.0
                    stepped_at = action.progress
                if action.final:
                    break
                await asyncio.sleep(0.01)
            transitions = await agent.db(agent.store.transitions, "rpi-001")
    assert stepped_at is not None and stepped_at < 100, "the step must land mid-copy"
    assert action.state == "deployed" and action.reboots == 0
    assert {t.event for t in transitions} == {"enter"}, [t.event for t in transitions if t.event != "enter"]
    assert all(0 <= progress <= 100 for _, progress in polled), sorted({p for _, p in polled})
    copy = [progress for state, progress in polled if state == "copy_image"]
    # The copy kept moving forward after the step.
    assert max(copy) > stepped_at
    # The stamps did follow the wall clock back.
    assert action.updated_at < time.time() - 3000
    # The duration did not: a couple of seconds, not an hour less.
    assert 0 < action.duration_seconds < 30


async def test_a_copy_and_a_boot_run_on_the_monotonic_clock() -> None:
    # Times 0.01: a 0.2 s network boot, a 0.1 s copy of 200 MB; the clocks are the test's.
    wall, mono = ManualClock(2_000_000_000.0), ManualClock(500.0)
    driver = sim_raspberry.create(SimOptions(time_scale=0.01, wall_clock=wall, monotonic=mono))
    assert driver.boot and driver.system and driver.image
    await driver.boot.set_boot_source(NODE, NETWORK)
    await _power_on(driver)
    assert driver.system.seconds_until_up(NODE) == pytest.approx(0.2)
    wall.now -= 3600
    assert driver.system.seconds_until_up(NODE) == pytest.approx(0.2)
    mono.now += 0.2
    assert await driver.system.running_system(NODE) == MAINTENANCE
    image = Environment(name="img", image="/img", size_bytes=200_000_000)
    await driver.image.start_write(NODE, image, {})
    mono.now += 0.05
    wall.now -= 3600
    status = await driver.image.write_status(NODE, image)
    assert status.percent == 50 and status.eta == pytest.approx(0.05)
    mono.now += 0.05
    assert (await driver.image.write_status(NODE, image)).done


@pytest.mark.parametrize(
    "wall_step, until_up",
    [(0.05, 0.15), (-3600.0, 0.2), (3600.0, None)],
    ids=["five-seconds-later", "wall-stepped-back-boot-starts-over", "wall-stepped-forward-boot-over"],
)
async def test_a_boot_under_way_across_an_agent_restart(wall_step, until_up) -> None:
    """The saved power-on time is a wall stamp; a restarted agent counts the wall time since
    then, never less than 0, as the time the boot has run."""
    saved: dict[str, dict] = {}

    def save(hardware_id, state):
        saved[hardware_id] = state

    wall = ManualClock(2_000_000_000.0)
    # Times 0.01: a 0.2 s network boot.
    driver = sim_raspberry.create(SimOptions(time_scale=0.01, wall_clock=wall, monotonic=ManualClock(10.0), save=save))
    assert driver.boot
    await driver.boot.set_boot_source(NODE, NETWORK)
    await _power_on(driver)
    wall.now += wall_step
    restarted = sim_raspberry.create(
        SimOptions(time_scale=0.01, wall_clock=wall, monotonic=ManualClock(99_999.0), saved=dict(saved))
    )
    assert restarted.system
    assert restarted.system.seconds_until_up(NODE) == (None if until_up is None else pytest.approx(until_up))
    if until_up is None:
        assert await restarted.system.running_system(NODE) == MAINTENANCE


async def _power_on(driver) -> None:
    # set_power spends the profile's scaled power_seconds on asyncio's clock first.
    await asyncio.wait_for(driver.power.set_power(NODE, True), 5)


@pytest.mark.parametrize(
    "lines, elapsed",
    [
        # The Pi's wall clock stepped back an hour (NTP's first answer) since the job started.
        ("started=2000000000\nnow=1999996400\nuptime=120.50\nstarted_uptime=100.25\n", 20.25),
        ("started=2000000000\nuptime=100.00\nstarted_uptime=100.00\n", 0.0),
        # A job started by an older script (no started_uptime): unknown, never a wall difference.
        ("started=2000000000\nnow=2000000030\nuptime=120.50\n", None),
        ("started=2000000000\nuptime=nan\nstarted_uptime=100.25\n", None),
    ],
    ids=["wall-stepped-back", "just-started", "older-job", "garbled"],
)
def test_a_real_nodes_job_is_timed_from_its_boot_not_its_wall_clock(lines, elapsed) -> None:
    from edgebed.nodetypes.real.jobs import parse_status

    status = parse_status(f"state=running\nid=copy x\n{lines}pid=42\n")
    assert status.elapsed == elapsed
    assert status.started == 2_000_000_000  # the stamp still tells two runs apart
