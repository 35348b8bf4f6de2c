"""The sensor states, each declared once with its step and timeouts (seconds; 0 = none), and the
processes made of them.

A deploy powers the board, flashes the firmware through the gateway's debug probe (an image
write), reads it back, and resets the board into it. Sensors have no boot source to choose and
nothing to set up on the firmware: their steps use the power, image and system interfaces only.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgebed.nodetypes import steps
from edgebed.nodetypes.base import DEPLOYED, DESTROYED, REBOOTED, State, StepContext, process
from edgebed.nodetypes.interfaces import INSTALLED

DEFAULT_RADIO_CHANNEL = "26"


def radio_channel(ctx: StepContext) -> Mapping[str, str]:
    """The option written with the firmware: the IEEE 802.15.4 channel it uses."""
    return {"radio_channel": ctx.prop("radio_channel", DEFAULT_RADIO_CHANNEL)}


POWER_OFF = State("power_off", steps.power(False), lost=60)
POWER_ON = State("power_on", steps.power(True), lost=60)
FLASH_FIRMWARE = State(
    "flash_firmware", steps.write_image(radio_channel), before_reboot=60, lost=900
)
# A read-back of a sensor's flash (at most a few MiB over SWD) takes seconds; a verify that keeps
# failing is a firmware the board does not take, lost after 5 minutes rather than 10.
VERIFY_FIRMWARE = State("verify_firmware", steps.VERIFY_IMAGE, before_reboot=60, lost=300)
# A power cycle starts the flashed firmware.
RESET = State("reset", steps.HARD_REBOOT, before_reboot=30, lost=300)
# Alive: the firmware answers on the serial console, seconds after its reset; one silent through
# a retry, two resets and a power cut (the ladder) is given up after 2 minutes.
CHECK_ALIVE = State("check_alive", steps.wait_for_system(INSTALLED), before_reboot=30, lost=120)
ERASE_FLASH = State("erase_flash", steps.WIPE, before_reboot=60, lost=600)

STATES = (POWER_OFF, POWER_ON, FLASH_FIRMWARE, VERIFY_FIRMWARE, RESET, CHECK_ALIVE, ERASE_FLASH)

PROCESSES = {
    proc.name: proc
    for proc in (
        process(
            "deploy",
            POWER_OFF, POWER_ON, FLASH_FIRMWARE, VERIFY_FIRMWARE, RESET, CHECK_ALIVE, DEPLOYED,
        ),
        process("reboot", POWER_OFF, POWER_ON, CHECK_ALIVE, REBOOTED),
        process("destroy", POWER_ON, ERASE_FLASH, POWER_OFF, DESTROYED),
    )
}
