"""Servers with a BMC: IPMI power, PXE boot into an installer, an image written to the disk."""

from __future__ import annotations

from edgebed.nodetypes.base import Environment, NodeType, installed_system_properties
from edgebed.nodetypes.node.states import PROCESSES, STATES

NODE_TYPE = NodeType(
    name="node",
    states=STATES,
    processes=PROCESSES,
    properties=installed_system_properties(("full", "50G", "100G", "200G"), "disk"),
    default_environments=(
        Environment(
            name="debian-12",
            description="Debian 12 bookworm, generic cloud image",
            image="/srv/edgebed/images/debian-12-generic-amd64.raw",
            size_bytes=2_147_483_648,
            default_user="debian",
            properties={"arch": "amd64"},
        ),
        Environment(
            name="ubuntu-24.04",
            description="Ubuntu Server 24.04 LTS, cloud image",
            image="/srv/edgebed/images/ubuntu-24.04-server-cloudimg-amd64.raw",
            size_bytes=3_758_096_384,
            default_user="ubuntu",
            properties={"arch": "amd64"},
        ),
    ),
    driver_note="IPMI power and boot device, PXE and SSH",
)
