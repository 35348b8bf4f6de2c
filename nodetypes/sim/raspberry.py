"""The simulated raspberry testbed: Pis on PoE switch ports, network boot, SD cards."""

from __future__ import annotations

import ipaddress

from edgebed.nodetypes.drivers import DriverOptions, DriverPlugin
from edgebed.nodetypes.interfaces import Driver
from edgebed.nodetypes.sim.hardware import DISK, NETWORK, SimHardware, SimOptions, SimProfile
from edgebed.nodetypes.sim.interfaces import network_booted_driver

PROFILE = SimProfile(
    boot_seconds={NETWORK: 20.0, DISK: 30.0},
    # A class 10 SD card written from a network-booted Pi.
    write_bytes_per_second=20e6,
    power_seconds=1.0,
    command_seconds={
        "network_boot": 0.5,
        "partition": 6.0,
        "configure_host": 3.0,
        "configure_login": 2.0,
        # Reading a 2.7 GB card back.
        "verify": 120.0,
        "wipe": 20.0,
    },
)

PORTS_PER_SWITCH = 48


def node_properties(index: int) -> dict[str, str]:
    return {
        "ip": str(ipaddress.IPv4Address("10.10.0.0") + index),
        "model": "Raspberry Pi 4 Model B" if index % 4 else "Raspberry Pi 3 Model B+",
        "serial": f"{0x1A2B0000 + index:08x}",
        "switch": f"poe-switch-{(index - 1) // PORTS_PER_SWITCH + 1}",
        "switch_port": str((index - 1) % PORTS_PER_SWITCH + 1),
    }


def create(options: SimOptions) -> Driver:
    return network_booted_driver(SimHardware(PROFILE, options))


def from_agent(options: DriverOptions) -> Driver:
    return create(options.sim)


PLUGIN = DriverPlugin(node_type="raspberry", name="sim", create=from_agent, node_properties=node_properties)
