"""The sensor processes: ordered states with their timeouts (seconds; 0 = none).

A deploy powers the board, flashes the firmware through the gateway's debug probe, reads it back,
and resets the board into it.
"""

from __future__ import annotations

from edgebed.nodetypes.base import StateSpec, process

# State name -> (before_reboot, lost).
TIMEOUTS = {
    "power_off": (0, 60),
    "power_on": (0, 60),
    "flash_firmware": (60, 900),
    "verify_firmware": (60, 600),
    "reset": (30, 300),
    "check_alive": (30, 300),
    "erase_flash": (60, 600),
}


def _states(*names: str) -> list[StateSpec]:
    return [StateSpec(name, *TIMEOUTS.get(name, (0, 0))) for name in names]


PROCESSES = {
    "deploy": process(
        "deploy",
        *_states(
            "power_off", "power_on", "flash_firmware", "verify_firmware", "reset", "check_alive",
            "deployed",
        ),
    ),
    "reboot": process("reboot", *_states("power_off", "power_on", "check_alive", "rebooted")),
    "destroy": process(
        "destroy", *_states("power_on", "erase_flash", "power_off", "destroyed")
    ),
}
