"""The simulated hardware: the same interfaces as a real driver, boots, copies, hangs, survives
restarts."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from edgebed.nodetypes import TYPE_NAMES, load_node_type
from edgebed.nodetypes.base import DriverError, Environment, NodeRef
from edgebed.nodetypes.drivers import DriverOptions, load_driver
from edgebed.nodetypes.interfaces import (
    INSTALLED,
    INTERFACES,
    LOCAL,
    MAINTENANCE,
    NETWORK,
    Driver,
    HostConfig,
    LoginConfig,
)
from edgebed.nodetypes.sim import node as sim_node
from edgebed.nodetypes.sim import raspberry as sim_raspberry
from edgebed.nodetypes.sim.hardware import SimHardware, SimOptions
from edgebed.nodetypes.sim.interfaces import network_booted_driver

NODE = NodeRef("rpi-001", {"ip": "10.10.0.1", "serial": "1a2b0001"})
IMAGE = Environment(name="img", image="/img", size_bytes=2_000_000, default_user="pi")


def _protocol_methods(protocol: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(protocol).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }


def _pi(**options) -> Driver:
    return sim_raspberry.create(SimOptions(**options))


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_each_sim_driver_implements_the_interfaces_its_type_needs(type_name) -> None:
    """Checked as a real driver would be: through its entry point, against the same protocols,
    method by method (name, parameters, async or not)."""
    node_type = load_node_type(type_name)
    driver = load_driver(type_name, "sim").create(DriverOptions(sim=SimOptions(time_scale=0)))
    assert driver.missing(node_type.needs) == []
    for name in node_type.needs:
        protocol, implementation = INTERFACES[name], getattr(driver, name)
        assert isinstance(implementation, protocol)
        for method, signature in _protocol_methods(protocol).items():
            implemented = getattr(implementation, method)
            assert inspect.iscoroutinefunction(implemented) == inspect.iscoroutinefunction(
                getattr(protocol, method)
            ), (name, method)
            assert list(inspect.signature(implemented).parameters) == list(signature.parameters)[1:], (name, method)


def test_the_sensor_sim_has_no_boot_or_setup_and_its_type_needs_none() -> None:
    driver = load_driver("sensor", "sim").create(DriverOptions(sim=SimOptions(time_scale=0)))
    assert driver.boot is None and driver.setup is None
    assert driver.missing(["boot", "setup"]) == ["boot", "setup"]
    assert load_node_type("sensor").needs == {"power", "image", "system"}


async def test_a_pi_boots_from_the_network_then_from_its_card() -> None:
    driver = _pi(time_scale=0)
    assert driver.system and driver.boot and driver.image
    assert await driver.system.running_system(NODE) is None
    await driver.boot.set_boot_source(NODE, NETWORK)
    await driver.power.set_power(NODE, True)
    assert await driver.system.running_system(NODE) == MAINTENANCE
    await driver.image.start_write(NODE, IMAGE, {})
    assert (await driver.image.write_status(NODE, IMAGE)).done
    await driver.image.verify(NODE, IMAGE)
    await driver.boot.set_boot_source(NODE, LOCAL)
    await driver.power.hard_reboot(NODE)
    assert await driver.system.running_system(NODE) == INSTALLED


async def test_an_unknown_boot_source_is_refused() -> None:
    driver = _pi(time_scale=0)
    assert driver.boot
    with pytest.raises(ValueError, match="boot source"):
        await driver.boot.set_boot_source(NODE, "usb")


async def test_verify_finds_a_storage_without_the_image() -> None:
    driver = load_driver("sensor", "sim").create(DriverOptions(sim=SimOptions(time_scale=0)))
    assert driver.image
    await driver.power.set_power(NODE, True)
    with pytest.raises(DriverError, match="does not hold img"):
        await driver.image.verify(NODE, IMAGE)


async def test_boot_time_and_copy_bandwidth_follow_time_scale() -> None:
    # 20 s netboot and 400 MB at 20 MB/s, times 0.005: 0.1 s each.
    driver = _pi(time_scale=0.005)
    assert driver.system and driver.boot and driver.image
    await driver.boot.set_boot_source(NODE, NETWORK)
    await driver.power.set_power(NODE, True)
    assert await driver.system.running_system(NODE) is None
    assert 0 < (driver.system.seconds_until_up(NODE) or 0) <= 0.1
    await asyncio.sleep(0.12)
    assert await driver.system.running_system(NODE) == MAINTENANCE
    big = Environment(name="big", image="/big", size_bytes=400_000_000)
    await driver.image.start_write(NODE, big, {})
    status = await driver.image.write_status(NODE, big)
    assert not status.done and status.running and 0 <= status.percent < 100
    assert status.eta is not None and status.eta > 0
    await asyncio.sleep(status.eta + 0.02)
    assert (await driver.image.write_status(NODE, big)).done


async def test_configure_lasts_its_parts_in_one_session() -> None:
    # Node: configure_host 5 s + configure_login 3 s = the former single 8 s configure;
    # raspberry: 3 s for the host part alone. Times 0.01.
    async def configure_seconds(create, **parts) -> float:
        driver = create(SimOptions(time_scale=0.01))
        await driver.boot.set_boot_source(NODE, NETWORK)
        await driver.power.set_power(NODE, True)
        await asyncio.sleep(1.0)  # 90 s POST of a server, times 0.01
        began = asyncio.get_running_loop().time()
        await driver.setup.configure(NODE, **parts)
        return asyncio.get_running_loop().time() - began

    both = await configure_seconds(
        sim_node.create, host=HostConfig("h", "pw"), login=LoginConfig("debian", "k")
    )
    host_only = await configure_seconds(sim_raspberry.create, host=HostConfig("h"))
    assert 0.08 <= both < 0.13
    assert 0.03 <= host_only < 0.08


async def test_commands_need_the_system_up() -> None:
    driver = _pi(time_scale=0)
    assert driver.setup
    with pytest.raises(DriverError, match="powered off"):
        await driver.setup.partition(NODE, "full")
    await driver.power.set_power(NODE, True)
    with pytest.raises(DriverError, match="network"):
        await driver.setup.partition(NODE, "full")


async def test_with_failure_rate_1_a_command_hangs_until_cancelled_and_boots_hang() -> None:
    hardware = SimHardware(sim_raspberry.PROFILE, SimOptions(time_scale=0, failure_rate=1.0, seed=3))
    driver = network_booted_driver(hardware)
    assert driver.system and driver.boot and driver.setup
    await driver.boot.set_boot_source(NODE, NETWORK)
    await driver.power.set_power(NODE, True)
    # The boot hung: nothing ever answers, whatever the time.
    assert await driver.system.running_system(NODE) is None
    assert driver.system.seconds_until_up(NODE) is None
    hardware.machine(NODE).boot_hangs = False
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(driver.setup.configure(NODE, host=HostConfig("h")), 0.2)


async def test_saved_machines_survive_a_restart_but_copies_do_not() -> None:
    saved: dict[str, dict] = {}

    def save(hardware_id, state):
        saved[hardware_id] = state

    driver = _pi(time_scale=0, save=save)
    assert driver.boot and driver.image and driver.setup
    await driver.boot.set_boot_source(NODE, NETWORK)
    await driver.power.set_power(NODE, True)
    await driver.image.start_write(NODE, IMAGE, {})
    await driver.image.write_status(NODE, IMAGE)
    await driver.setup.partition(NODE, "8G")
    assert saved["1a2b0001"]["disk_image"] == "img"

    restarted = _pi(time_scale=0, saved=dict(saved))
    assert restarted.system and restarted.image
    assert await restarted.power.is_powered(NODE)
    assert await restarted.system.running_system(NODE) == MAINTENANCE
    assert (await restarted.image.write_status(NODE, IMAGE)).done
    # A copy running when the agent died is gone: the resumed step starts it again.
    other = Environment(name="other", image="/o", size_bytes=10**12)
    await restarted.image.start_write(NODE, other, {})
    again = _pi(time_scale=0, saved=dict(saved))
    assert again.image
    assert not (await again.image.write_status(NODE, other)).running


async def test_renaming_a_node_keeps_its_hardware() -> None:
    driver = sim_node.create(SimOptions(time_scale=0))
    await driver.power.set_power(NodeRef("srv-001", {"serial": "SRV1"}), True)
    assert await driver.power.is_powered(NodeRef("renamed", {"serial": "SRV1"}))


async def test_a_command_in_hang_commands_hangs_every_time_even_after_a_power_cycle() -> None:
    """The test aid behind the end-to-end lost destroy: wipe never completes, other commands do."""
    hardware = SimHardware(sim_raspberry.PROFILE, SimOptions(time_scale=0, hang_commands=frozenset({"wipe"})))
    driver = network_booted_driver(hardware)
    assert driver.boot and driver.image and driver.setup
    await driver.boot.set_boot_source(NODE, NETWORK)
    await driver.power.set_power(NODE, True)
    for _ in range(2):
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(driver.image.wipe(NODE), 0.2)
        await driver.power.hard_reboot(NODE)
    await driver.setup.partition(NODE, "full")
    assert hardware.machine(NODE).disk_settings == {"partition_size": "full"}
