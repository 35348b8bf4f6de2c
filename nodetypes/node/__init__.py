"""Servers with a BMC: IPMI power, PXE boot into an installer, an image written to the disk."""

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
from edgebed.nodetypes.node.sim import SimServerDriver
from edgebed.nodetypes.node.states import PROCESSES
from edgebed.nodetypes.node.steps import STEPS


def sim_node_properties(index: int) -> dict[str, str]:
    return {
        "ip": str(ipaddress.IPv4Address("10.20.0.0") + index),
        "bmc_ip": str(ipaddress.IPv4Address("10.21.0.0") + index),
        "model": "Dell PowerEdge R650" if index % 2 else "HPE ProLiant DL360 Gen10",
        "serial": f"SRV{index:06d}",
        "cpus": "32",
        "memory_gb": "128",
    }


NODE_TYPE = NodeType(
    name="node",
    processes=PROCESSES,
    steps=STEPS,
    properties=(
        PropertySpec("ssh_key", description="SSH public keys for the default user, one per line",
                     check=check_ssh_keys),
        PropertySpec("os_password", secret=True,
                     description="Password of the default user (8 to 128 characters)",
                     check=check_password),
        PropertySpec("partition_size", values=("full", "50G", "100G", "200G"),
                     description="Size of the root partition; full uses the whole disk"),
        PropertySpec("hostname", description="Host name of the deployed system (default: the node name)",
                     check=check_hostname),
    ),
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
    sim_node_properties=sim_node_properties,
    drivers={"sim": SimServerDriver},
    driver_note="IPMI power and boot device, PXE and SSH",
)
