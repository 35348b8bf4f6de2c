"""The hardware a raspberry agent drives: PoE switch ports, network-boot files, SSH to the Pi.

A `real` driver (PoE over SNMP, TFTP/NFS network-boot files, SSH) implements this same protocol;
the executor and the step functions only ever see the protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from edgebed.nodetypes.base import CopyStatus, Environment, NodeRef

# What ssh_system reports: the network-booted maintenance system, or the system on the SD card.
NETBOOT = "netboot"
SDCARD = "sdcard"


@runtime_checkable
class RaspberryDriver(Protocol):
    async def set_network_boot(self, node: NodeRef, enabled: bool) -> None:
        """Installs (or removes) the node's network-boot files, so its next boot is from the
        network (or from its SD card)."""

    async def set_poe(self, node: NodeRef, on: bool) -> None:
        """Switches the node's PoE port on or off; nothing when it already is."""

    async def poe_is_on(self, node: NodeRef) -> bool: ...

    async def ssh_system(self, node: NodeRef) -> str | None:
        """NETBOOT or SDCARD: the system that answers on SSH; None when none does."""

    def seconds_until_ssh(self, node: NodeRef) -> float | None:
        """A hint for polling: seconds until the boot should end; None when unknown."""

    async def start_image_copy(self, node: NodeRef, environment: Environment) -> None:
        """Starts writing the image to the SD card from the network-booted system. Idempotent:
        a copy of the same image already running or finished is left alone."""

    async def image_copy_status(self, node: NodeRef, environment: Environment) -> CopyStatus: ...

    async def partition(self, node: NodeRef, partition_size: str) -> None:
        """Resizes the root partition ('full' = the whole card) and its file system."""

    async def configure_system(self, node: NodeRef, hostname: str, os_password: str) -> None:
        """Sets the host name and, when given, the password of the default user."""

    async def configure_user(self, node: NodeRef, user: str, ssh_keys: str) -> None:
        """Installs the SSH public keys for `user` and enables the SSH server."""

    async def wipe_card(self, node: NodeRef) -> None:
        """Erases the SD card from the network-booted system."""

    async def hard_reboot(self, node: NodeRef) -> None:
        """Power cycles the PoE port, whatever the node is doing."""
