"""The node (server) processes: ordered states with their timeouts (seconds; 0 = none).

A deploy PXE-boots the server into an installer through IPMI, writes the image to its disk,
configures it, then boots it from the disk. power_off and power_on appear twice.
"""

from __future__ import annotations

from edgebed.nodetypes.base import StateSpec, process

# State name -> (before_reboot, lost). Servers take minutes to POST.
TIMEOUTS = {
    "bootdev_pxe": (0, 120),
    "bootdev_disk": (0, 120),
    "power_off": (0, 120),
    "power_on": (0, 120),
    "wait_pxe_ssh": (300, 1800),
    "write_image": (240, 3600),
    "partition": (180, 1800),
    "configure": (180, 1800),
    "ssh_check": (300, 1800),
    "wipe_disk": (600, 3600),
}


def _states(*names: str) -> list[StateSpec]:
    return [StateSpec(name, *TIMEOUTS.get(name, (0, 0))) for name in names]


PROCESSES = {
    "deploy": process(
        "deploy",
        *_states(
            "bootdev_pxe", "power_off", "power_on", "wait_pxe_ssh", "write_image", "partition",
            "configure", "bootdev_disk", "power_off", "power_on", "ssh_check", "deployed",
        ),
    ),
    "reboot": process("reboot", *_states("power_off", "power_on", "ssh_check", "rebooted")),
    "destroy": process(
        "destroy",
        *_states(
            "bootdev_pxe", "power_off", "power_on", "wait_pxe_ssh", "wipe_disk", "power_off",
            "destroyed",
        ),
    ),
}
