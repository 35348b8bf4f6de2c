"""The simulated servers: a BMC each for power and PXE, and a system disk."""

from __future__ import annotations

import ipaddress

from edgebed.nodetypes.drivers import DriverOptions, DriverPlugin
from edgebed.nodetypes.interfaces import Driver
from edgebed.nodetypes.sim.hardware import DISK, NETWORK, SimHardware, SimOptions, SimProfile
from edgebed.nodetypes.sim.interfaces import network_booted_driver

PROFILE = SimProfile(
    # Firmware POST of a rack server, then the PXE installer or the installed system.
    boot_seconds={NETWORK: 90.0, DISK: 100.0},
    write_bytes_per_second=150e6,
    power_seconds=2.0,
    command_seconds={
        "network_boot": 1.0,
        "partition": 10.0,
        # One 8 s configure when both parts run in one session, as the node type does.
        "configure_host": 5.0,
        "configure_login": 3.0,
        "verify": 20.0,
        "wipe": 60.0,
    },
)


def node_properties(index: int) -> dict[str, str]:
    return {
        "ip": str(ipaddress.IPv4Address("10.20.0.0") + index),
        "bmc_ip": str(ipaddress.IPv4Address("10.21.0.0") + index),
        "model": "Dell PowerEdge R650" if index % 2 else "HPE ProLiant DL360 Gen10",
        "serial": f"SRV{index:06d}",
        "cpus": "32",
        "memory_gb": "128",
    }


def create(options: SimOptions) -> Driver:
    return network_booted_driver(SimHardware(PROFILE, options))


def from_agent(options: DriverOptions) -> Driver:
    return create(options.sim)


PLUGIN = DriverPlugin(node_type="node", name="sim", create=from_agent, node_properties=node_properties)
