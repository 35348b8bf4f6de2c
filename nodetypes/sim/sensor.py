"""The simulated sensor boards: power, a debug probe that flashes at low speed, a serial console.

A board has no boot source to choose and nothing to set up: its driver has power, image (the
flash, written through the probe, which needs only power) and system (the firmware answering on
the console).
"""

from __future__ import annotations

import ipaddress

from edgebed.nodetypes.drivers import DriverOptions, DriverPlugin
from edgebed.nodetypes.interfaces import Driver
from edgebed.nodetypes.sim.hardware import DISK, SimHardware, SimOptions, SimProfile
from edgebed.nodetypes.sim.interfaces import SimImage, SimPower, SimSystem

PROFILE = SimProfile(
    boot_seconds={DISK: 2.0},
    # SWD flashing through a debug probe.
    write_bytes_per_second=20_000,
    power_seconds=0.5,
    command_seconds={"verify": 3.0, "wipe": 5.0},
)


def node_properties(index: int) -> dict[str, str]:
    return {
        "ip": str(ipaddress.IPv4Address("10.30.0.0") + index),
        "model": "nRF52840-DK" if index % 2 else "IoT-LAB M3",
        "serial": f"SNS{index:06d}",
        "probe": f"/dev/ttyACM{index - 1}",
        "radio": "802.15.4",
    }


def create(options: SimOptions) -> Driver:
    hardware = SimHardware(PROFILE, options)
    return Driver(
        power=SimPower(hardware), image=SimImage(hardware, needs=None), system=SimSystem(hardware)
    )


def from_agent(options: DriverOptions) -> Driver:
    return create(options.sim)


PLUGIN = DriverPlugin(node_type="sensor", name="sim", create=from_agent, node_properties=node_properties)
