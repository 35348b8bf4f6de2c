"""The hardware a node (server) agent drives: IPMI on the BMC for power and boot device, SSH.

A `real` driver (ipmitool or Redfish, a PXE server, SSH) implements this same protocol; the
executor and the step functions only ever see the protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from edgebed.nodetypes.base import CopyStatus, Environment, NodeRef

PXE = "pxe"
DISK = "disk"


@runtime_checkable
class ServerDriver(Protocol):
    async def set_boot_device(self, node: NodeRef, device: str) -> None:
        """PXE or DISK for the next boots (IPMI chassis bootdev, persistent)."""

    async def set_power(self, node: NodeRef, on: bool) -> None:
        """IPMI chassis power on/off; nothing when it already is."""

    async def power_is_on(self, node: NodeRef) -> bool: ...

    async def ssh_system(self, node: NodeRef) -> str | None:
        """PXE (the network-booted installer) or DISK (the installed system) when SSH answers."""

    def seconds_until_ssh(self, node: NodeRef) -> float | None:
        """A hint for polling: seconds until the boot should end; None when unknown."""

    async def start_image_write(self, node: NodeRef, environment: Environment) -> None:
        """Starts writing the image to the system disk from the PXE-booted installer; idempotent."""

    async def image_write_status(self, node: NodeRef, environment: Environment) -> CopyStatus: ...

    async def partition(self, node: NodeRef, partition_size: str) -> None:
        """Resizes the root partition and file system ('full' = the whole disk)."""

    async def configure(
        self, node: NodeRef, hostname: str, os_password: str, user: str, ssh_keys: str
    ) -> None:
        """Host name, default user's password and SSH keys, on the written disk."""

    async def wipe_disk(self, node: NodeRef) -> None:
        """Erases the system disk from the PXE-booted installer."""

    async def hard_reboot(self, node: NodeRef) -> None:
        """IPMI power cycle, whatever the node is doing."""
