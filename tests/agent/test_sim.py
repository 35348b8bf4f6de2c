"""The simulated hardware: same interface as a real driver, boots, copies, hangs, survives restarts."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from edgebed.nodetypes.base import DriverError, Environment, NodeRef
from edgebed.nodetypes.node.driver import ServerDriver
from edgebed.nodetypes.node.sim import SimServerDriver
from edgebed.nodetypes.raspberry.driver import NETBOOT, SDCARD, RaspberryDriver
from edgebed.nodetypes.raspberry.sim import SimRaspberryDriver
from edgebed.nodetypes.sensor.driver import SensorDriver
from edgebed.nodetypes.sensor.sim import SimSensorDriver
from edgebed.nodetypes.sim import SimOptions

NODE = NodeRef("rpi-001", {"ip": "10.10.0.1", "serial": "1a2b0001"})
IMAGE = Environment(name="img", image="/img", size_bytes=2_000_000, default_user="pi")


def _protocol_methods(protocol) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(protocol).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }


@pytest.mark.parametrize(
    ("protocol", "sim"),
    [(RaspberryDriver, SimRaspberryDriver), (ServerDriver, SimServerDriver), (SensorDriver, SimSensorDriver)],
)
def test_sim_drivers_implement_the_driver_protocol(protocol, sim) -> None:
    driver = sim(SimOptions(time_scale=0))
    assert isinstance(driver, protocol)
    for name, signature in _protocol_methods(protocol).items():
        implemented = getattr(driver, name)
        assert inspect.iscoroutinefunction(implemented) == inspect.iscoroutinefunction(
            getattr(protocol, name)
        ), name
        assert list(inspect.signature(implemented).parameters) == list(signature.parameters)[1:], name


async def test_a_pi_boots_from_the_network_then_from_its_card() -> None:
    driver = SimRaspberryDriver(SimOptions(time_scale=0))
    assert await driver.ssh_system(NODE) is None
    await driver.set_network_boot(NODE, True)
    await driver.set_poe(NODE, True)
    assert await driver.ssh_system(NODE) == NETBOOT
    await driver.start_image_copy(NODE, IMAGE)
    assert (await driver.image_copy_status(NODE, IMAGE)).done
    await driver.set_network_boot(NODE, False)
    await driver.hard_reboot(NODE)
    assert await driver.ssh_system(NODE) == SDCARD


async def test_boot_time_and_copy_bandwidth_follow_time_scale() -> None:
    # 20 s netboot and 400 MB at 20 MB/s, times 0.005: 0.1 s each.
    driver = SimRaspberryDriver(SimOptions(time_scale=0.005))
    await driver.set_network_boot(NODE, True)
    await driver.set_poe(NODE, True)
    assert await driver.ssh_system(NODE) is None
    assert 0 < driver.seconds_until_ssh(NODE) <= 0.1
    await asyncio.sleep(0.12)
    assert await driver.ssh_system(NODE) == NETBOOT
    big = Environment(name="big", image="/big", size_bytes=400_000_000)
    await driver.start_image_copy(NODE, big)
    status = await driver.image_copy_status(NODE, big)
    assert not status.done and status.running and 0 <= status.percent < 100 and status.eta > 0
    await asyncio.sleep(status.eta + 0.02)
    assert (await driver.image_copy_status(NODE, big)).done


async def test_commands_need_the_system_up() -> None:
    driver = SimRaspberryDriver(SimOptions(time_scale=0))
    with pytest.raises(DriverError, match="powered off"):
        await driver.partition(NODE, "full")
    await driver.set_poe(NODE, True)
    with pytest.raises(DriverError, match="netboot|network"):
        await driver.partition(NODE, "full")


async def test_with_failure_rate_1_a_command_hangs_until_cancelled_and_boots_hang() -> None:
    driver = SimRaspberryDriver(SimOptions(time_scale=0, failure_rate=1.0, seed=3))
    await driver.set_network_boot(NODE, True)
    await driver.set_poe(NODE, True)
    # The boot hung: SSH never answers, whatever the time.
    assert await driver.ssh_system(NODE) is None
    assert driver.seconds_until_ssh(NODE) is None
    hardware = driver.hardware
    hardware.machine(NODE).boot_hangs = False
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(driver.configure_system(NODE, "h", ""), 0.2)


async def test_saved_machines_survive_a_restart_but_copies_do_not() -> None:
    saved: dict[str, dict] = {}

    async def save(hardware_id, state):
        saved[hardware_id] = state

    driver = SimRaspberryDriver(SimOptions(time_scale=0, save=save))
    await driver.set_network_boot(NODE, True)
    await driver.set_poe(NODE, True)
    await driver.start_image_copy(NODE, IMAGE)
    await driver.image_copy_status(NODE, IMAGE)
    await driver.partition(NODE, "8G")
    assert saved["1a2b0001"]["disk_image"] == "img"

    restarted = SimRaspberryDriver(SimOptions(time_scale=0, saved=dict(saved)))
    assert await restarted.poe_is_on(NODE)
    assert await restarted.ssh_system(NODE) == NETBOOT
    status = await restarted.image_copy_status(NODE, IMAGE)
    assert status.done
    # A copy running when the agent died is gone: the resumed step starts it again.
    other = Environment(name="other", image="/o", size_bytes=10**12)
    await restarted.start_image_copy(NODE, other)
    again = SimRaspberryDriver(SimOptions(time_scale=0, saved=dict(saved)))
    assert not (await again.image_copy_status(NODE, other)).running


async def test_renaming_a_node_keeps_its_hardware() -> None:
    driver = SimServerDriver(SimOptions(time_scale=0))
    await driver.set_power(NodeRef("srv-001", {"serial": "SRV1"}), True)
    assert await driver.power_is_on(NodeRef("renamed", {"serial": "SRV1"}))
