"""PoE power over SNMP against a real SNMP agent (snmpsim), read back with Debian's snmpget."""

from __future__ import annotations

import time

import pytest
from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

from edgebed.nodetypes.base import DriverError, NodeRef
from edgebed.nodetypes.real.config import PETH_PSE_PORT_ADMIN_ENABLE, RealConfig, SwitchConfig
from edgebed.nodetypes.real.snmp import PoePower
from tests.agent.real.peers import free_port, read_port, require, snmp_switch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def switch(tmp_path_factory):
    require("snmpsim", "snmpget")
    with snmp_switch(tmp_path_factory.mktemp("switch")) as running:
        yield running


def config(switch, **overrides) -> SwitchConfig:
    host, _, port = switch.address.rpartition(":")
    values = dict(name="sw1", host=host, port=int(port), community=switch.community)
    values.update(overrides)
    return SwitchConfig(**values)


def pi(port: int, name: str = "rpi-001", switch_name: str = "sw1") -> NodeRef:
    return NodeRef(name, {"ip": "10.0.0.1", "serial": f"{port:08x}", "switch": switch_name,
                          "switch_port": str(port)})


@pytest.fixture
async def power(switch):
    changed: list[str] = []

    async def on_change(node: NodeRef) -> None:
        changed.append(node.name)

    driver = PoePower({"sw1": config(switch)}, min_off_seconds=0.6, on_change=on_change,
                      timeout=0.5, retries=0)
    driver.changed = changed
    yield driver
    driver.close()


async def test_on_and_off_are_set_and_read_back(switch, power) -> None:
    node = pi(1)
    await power.set_power(node, False)
    assert read_port(switch, 1) == "2" and not await power.is_powered(node)
    await power.set_power(node, True)
    assert read_port(switch, 1) == "1" and await power.is_powered(node)
    # Switching on again changes nothing, and tells nobody.
    before = list(power.changed)
    await power.set_power(node, True)
    assert power.changed == before and read_port(switch, 1) == "1"
    await power.set_power(node, False)
    assert read_port(switch, 1) == "2"


async def test_a_port_stays_off_long_enough_for_the_pi_to_notice(switch, power) -> None:
    node = pi(2)
    await power.set_power(node, True)
    await power.set_power(node, False)
    started = time.monotonic()
    await power.set_power(node, True)
    assert time.monotonic() - started >= 0.55
    assert read_port(switch, 2) == "1"
    # A hard reboot is off, the same wait, on; the SSH pool hears of both changes.
    power.changed.clear()
    started = time.monotonic()
    await power.hard_reboot(node)
    assert time.monotonic() - started >= 0.55
    assert read_port(switch, 2) == "1" and power.changed == ["rpi-001", "rpi-001"]


async def test_a_port_found_off_after_a_restart_gets_the_whole_off_time(switch) -> None:
    """A fresh driver (an agent restarted) cannot know since when the port is off."""
    node = pi(3)
    first = PoePower({"sw1": config(switch)}, min_off_seconds=0.6)
    await first.set_power(node, False)
    first.close()
    second = PoePower({"sw1": config(switch)}, min_off_seconds=0.6)
    started = time.monotonic()
    await second.set_power(node, True)
    assert time.monotonic() - started >= 0.55
    second.close()


def test_the_default_keeps_a_port_off_at_least_two_seconds() -> None:
    assert RealConfig.__dataclass_fields__["poe_off_seconds"].default >= 2.0


async def test_a_set_the_switch_ignores_is_an_error(switch, power) -> None:
    """snmpsim answers a SET on a read-only OID with noSuchInstance and no error status: only
    the value read back tells that the port did not change."""
    node = pi(switch.read_only_port)
    with pytest.raises(DriverError) as caught:
        await power.set_power(node, True)
    message = str(caught.value)
    assert "was not applied (it reads 2)" in message and "switch sw1" in message
    assert read_port(switch, switch.read_only_port) == "2"


async def test_a_wrong_community_times_out_with_an_error_that_does_not_show_it(switch) -> None:
    wrong = config(switch, community="not-the-community-42")
    power = PoePower({"sw1": wrong}, timeout=0.5, retries=0)
    try:
        with pytest.raises(DriverError) as caught:
            await power.set_power(pi(4), True)
    finally:
        power.close()
    message = str(caught.value)
    assert f"switch sw1 ({switch.address})" in message and "no answer" in message
    assert "community" in message and "not-the-community-42" not in message
    assert read_port(switch, 4) == "2"


async def test_a_switch_that_does_not_answer_is_an_error() -> None:
    silent = SwitchConfig(name="sw9", host="127.0.0.1", port=free_port(2), community="x")
    power = PoePower({"sw9": silent}, timeout=0.3, retries=0)
    try:
        with pytest.raises(DriverError, match=r"switch sw9 \(127\.0\.0\.1:\d+\) port 1: no answer"):
            await power.is_powered(pi(1, switch_name="sw9"))
    finally:
        power.close()


async def test_port_offset_and_unknown_switches(switch) -> None:
    # Port 5 of a switch whose OIDs count from 0 is .6 in the table.
    power = PoePower({"sw1": config(switch, port_offset=1)}, min_off_seconds=0)
    try:
        await power.set_power(pi(5), True)
        assert read_port(switch, 6) == "1" and read_port(switch, 5) == "2"
        await power.set_power(pi(5), False)
        with pytest.raises(DriverError, match="switch 'sw2' is not configured"):
            await power.is_powered(pi(1, switch_name="sw2"))
        with pytest.raises(DriverError, match="switch_port must be a port number"):
            await power.is_powered(NodeRef("x", {"switch": "sw1", "switch_port": "one"}))
    finally:
        power.close()


def test_the_default_oid_is_rfc_3621() -> None:
    assert SwitchConfig("s", "h", 161, "c").oid(7) == f"{PETH_PSE_PORT_ADMIN_ENABLE}.7"
    assert "c-secret" not in repr(SwitchConfig("s", "h", 161, "c-secret"))


async def test_warm_up_loads_what_the_first_request_needs_before_the_agent_serves(switch) -> None:
    """The first request of a fresh engine loads MIB modules on the event loop (seconds of CPU on
    a busy Pi, while the agent answers nobody); after warm_up (called by the drivers' create,
    before serving) a power call on a real switch loads none."""
    cold = PoePower({"sw1": config(switch)}, min_off_seconds=0, timeout=0.5, retries=0)
    try:
        await cold.is_powered(pi(5))
        loaded_by_first_request = set(cold._engine.get_mib_builder().mibSymbols)
    finally:
        cold.close()
    warm = PoePower({"sw1": config(switch)}, min_off_seconds=0, timeout=0.5, retries=0)
    try:
        fresh = set(SnmpEngine().get_mib_builder().mibSymbols)
        assert loaded_by_first_request - fresh, "a first request no longer loads anything: drop warm_up"
        await warm.warm_up()
        before = set(warm._engine.get_mib_builder().mibSymbols)
        await warm.set_power(pi(5), True)
        assert await warm.is_powered(pi(5))
        assert set(warm._engine.get_mib_builder().mibSymbols) - before == set()
    finally:
        warm.close()
