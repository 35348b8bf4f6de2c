"""The raspberry processes: ordered states with their timeouts (seconds; 0 = none).

A deploy boots the Pi from the network into a maintenance system, writes the image to its SD
card, configures it, then boots it from the card. poe_off and poe_on appear twice in deploy and
destroy, which is why an action records state_idx.
"""

from __future__ import annotations

from edgebed.nodetypes.base import StateSpec, process

# State name -> (before_reboot, lost).
TIMEOUTS = {
    "netboot_on": (0, 120),
    "netboot_off": (0, 120),
    "poe_off": (0, 120),
    "poe_on": (0, 120),
    "wait_netboot_ssh": (120, 1200),
    "copy_image": (180, 3600),
    "partition": (120, 1200),
    "configure_system": (120, 1200),
    "configure_user": (120, 1200),
    "ssh_check": (150, 1500),
    "wipe_card": (300, 3000),
}


def _states(*names: str) -> list[StateSpec]:
    return [StateSpec(name, *TIMEOUTS.get(name, (0, 0))) for name in names]


PROCESSES = {
    "deploy": process(
        "deploy",
        *_states(
            "netboot_on", "poe_off", "poe_on", "wait_netboot_ssh", "copy_image", "partition",
            "configure_system", "configure_user", "netboot_off", "poe_off", "poe_on",
            "ssh_check", "deployed",
        ),
    ),
    "reboot": process("reboot", *_states("poe_off", "poe_on", "ssh_check", "rebooted")),
    "destroy": process(
        "destroy",
        *_states(
            "netboot_on", "poe_off", "poe_on", "wait_netboot_ssh", "wipe_card", "poe_off",
            "destroyed",
        ),
    ),
}
