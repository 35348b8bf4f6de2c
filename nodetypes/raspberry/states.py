"""The raspberry states, each declared once with its step and timeouts (seconds; 0 = none), and
the processes made of them.

A deploy boots the Pi from the network into a maintenance system, writes the image to its SD
card, configures it, then boots it from the card. POE_OFF and POE_ON appear twice in deploy and
destroy, which is why an action records state_idx.
"""

from __future__ import annotations

from edgebed.nodetypes import steps
from edgebed.nodetypes.base import DEPLOYED, DESTROYED, REBOOTED, State, process
from edgebed.nodetypes.interfaces import INSTALLED, LOCAL, MAINTENANCE, NETWORK

NETBOOT_ON = State("netboot_on", steps.boot_from(NETWORK), lost=120)
NETBOOT_OFF = State("netboot_off", steps.boot_from(LOCAL), lost=120)
POE_OFF = State("poe_off", steps.power(False), lost=120)
POE_ON = State("poe_on", steps.power(True), lost=120)
WAIT_NETBOOT_SSH = State(
    "wait_netboot_ssh", steps.wait_for_system(MAINTENANCE), before_reboot=120, lost=1200
)
COPY_IMAGE = State("copy_image", steps.write_image(), before_reboot=180, lost=3600)
PARTITION = State("partition", steps.PARTITION, before_reboot=120, lost=1200)
CONFIGURE_SYSTEM = State(
    "configure_system", steps.configure(host=True, login=False), before_reboot=120, lost=1200
)
CONFIGURE_USER = State(
    "configure_user",
    steps.configure(host=False, login=True, fallback_user="pi"),
    before_reboot=120,
    lost=1200,
)
SSH_CHECK = State("ssh_check", steps.wait_for_system(INSTALLED), before_reboot=150, lost=1500)
WIPE_CARD = State("wipe_card", steps.WIPE, before_reboot=300, lost=3000)

STATES = (
    NETBOOT_ON, NETBOOT_OFF, POE_OFF, POE_ON, WAIT_NETBOOT_SSH, COPY_IMAGE, PARTITION,
    CONFIGURE_SYSTEM, CONFIGURE_USER, SSH_CHECK, WIPE_CARD,
)

PROCESSES = {
    proc.name: proc
    for proc in (
        process(
            "deploy",
            NETBOOT_ON, POE_OFF, POE_ON, WAIT_NETBOOT_SSH, COPY_IMAGE, PARTITION,
            CONFIGURE_SYSTEM, CONFIGURE_USER, NETBOOT_OFF, POE_OFF, POE_ON, SSH_CHECK, DEPLOYED,
        ),
        process("reboot", POE_OFF, POE_ON, SSH_CHECK, REBOOTED),
        process(
            "destroy",
            NETBOOT_ON, POE_OFF, POE_ON, WAIT_NETBOOT_SSH, WIPE_CARD, POE_OFF, DESTROYED,
        ),
    )
}
