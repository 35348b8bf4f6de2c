"""Raspberry Pi nodes behind a PoE switch, deployed by network boot and an SD card copy."""

from __future__ import annotations

import ipaddress

from edgebed.nodetypes.base import (
    Environment,
    NodeType,
    PropertySpec,
    check_hostname,
    check_password,
    check_ssh_keys,
)
from edgebed.nodetypes.raspberry.sim import SimRaspberryDriver
from edgebed.nodetypes.raspberry.states import PROCESSES
from edgebed.nodetypes.raspberry.steps import STEPS

PORTS_PER_SWITCH = 48


def sim_node_properties(index: int) -> dict[str, str]:
    return {
        "ip": str(ipaddress.IPv4Address("10.10.0.0") + index),
        "model": "Raspberry Pi 4 Model B" if index % 4 else "Raspberry Pi 3 Model B+",
        "serial": f"{0x1A2B0000 + index:08x}",
        "switch": f"poe-switch-{(index - 1) // PORTS_PER_SWITCH + 1}",
        "switch_port": str((index - 1) % PORTS_PER_SWITCH + 1),
    }


NODE_TYPE = NodeType(
    name="raspberry",
    processes=PROCESSES,
    steps=STEPS,
    properties=(
        PropertySpec("ssh_key", description="SSH public keys for the default user, one per line",
                     check=check_ssh_keys),
        PropertySpec("os_password", secret=True,
                     description="Password of the default user (8 to 128 characters)",
                     check=check_password),
        PropertySpec("partition_size", values=("full", "8G", "16G", "32G"),
                     description="Size of the root partition; full uses the whole SD card"),
        PropertySpec("hostname", description="Host name of the deployed system (default: the node name)",
                     check=check_hostname),
    ),
    default_environments=(
        Environment(
            name="raspios-lite-arm64",
            description="Raspberry Pi OS Lite 64-bit (Debian 12 bookworm)",
            image="/srv/edgebed/images/raspios-bookworm-arm64-lite.img",
            size_bytes=2_700_000_000,
            default_user="pi",
            properties={"arch": "arm64"},
        ),
        Environment(
            name="ubuntu-24.04-arm64",
            description="Ubuntu Server 24.04 LTS for Raspberry Pi",
            image="/srv/edgebed/images/ubuntu-24.04-preinstalled-server-arm64+raspi.img",
            size_bytes=3_600_000_000,
            default_user="ubuntu",
            properties={"arch": "arm64"},
        ),
    ),
    sim_node_properties=sim_node_properties,
    drivers={"sim": SimRaspberryDriver},
    driver_note="PoE over SNMP, network-boot files and SSH",
)
