"""The node (server) states, each declared once with its step and timeouts (seconds; 0 = none),
and the processes made of them.

A deploy PXE-boots the server into an installer through its BMC, writes the image to its disk,
configures it, then boots it from the disk. POWER_OFF and POWER_ON appear twice. The steps are
raspberry's; servers take minutes to POST, hence longer timeouts.
"""

from __future__ import annotations

from edgebed.nodetypes import steps
from edgebed.nodetypes.base import DEPLOYED, DESTROYED, REBOOTED, State, process
from edgebed.nodetypes.interfaces import INSTALLED, LOCAL, MAINTENANCE, NETWORK

BOOTDEV_PXE = State("bootdev_pxe", steps.boot_from(NETWORK), lost=120)
BOOTDEV_DISK = State("bootdev_disk", steps.boot_from(LOCAL), lost=120)
POWER_OFF = State("power_off", steps.power(False), lost=120)
POWER_ON = State("power_on", steps.power(True), lost=120)
WAIT_PXE_SSH = State(
    "wait_pxe_ssh", steps.wait_for_system(MAINTENANCE), before_reboot=300, lost=1800
)
WRITE_IMAGE = State("write_image", steps.write_image(), before_reboot=240, lost=3600)
PARTITION = State("partition", steps.PARTITION, before_reboot=180, lost=1800)
CONFIGURE = State(
    "configure", steps.configure(host=True, login=True, fallback_user="root"),
    before_reboot=180, lost=1800,
)
SSH_CHECK = State("ssh_check", steps.wait_for_system(INSTALLED), before_reboot=300, lost=1800)
WIPE_DISK = State("wipe_disk", steps.WIPE, before_reboot=600, lost=3600)

STATES = (
    BOOTDEV_PXE, BOOTDEV_DISK, POWER_OFF, POWER_ON, WAIT_PXE_SSH, WRITE_IMAGE, PARTITION,
    CONFIGURE, SSH_CHECK, WIPE_DISK,
)

PROCESSES = {
    proc.name: proc
    for proc in (
        process(
            "deploy",
            BOOTDEV_PXE, POWER_OFF, POWER_ON, WAIT_PXE_SSH, WRITE_IMAGE, PARTITION, CONFIGURE,
            BOOTDEV_DISK, POWER_OFF, POWER_ON, SSH_CHECK, DEPLOYED,
        ),
        process("reboot", POWER_OFF, POWER_ON, SSH_CHECK, REBOOTED),
        process(
            "destroy",
            BOOTDEV_PXE, POWER_OFF, POWER_ON, WAIT_PXE_SSH, WIPE_DISK, POWER_OFF, DESTROYED,
        ),
    )
}
