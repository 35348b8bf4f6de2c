"""Raspberry Pi nodes behind a PoE switch, deployed by network boot and an SD card copy."""

from __future__ import annotations

from edgebed.nodetypes.base import Environment, NodeType, installed_system_properties
from edgebed.nodetypes.raspberry.states import PROCESSES, STATES

NODE_TYPE = NodeType(
    name="raspberry",
    states=STATES,
    processes=PROCESSES,
    properties=installed_system_properties(("full", "8G", "16G", "32G"), "SD card"),
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
    driver_note="PoE over SNMP, network-boot files and SSH",
)
