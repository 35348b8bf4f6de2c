"""The boot source of a Raspberry Pi 4 whose boot order tries the network first.

At each boot such a Pi asks TFTP for `<serial>/start4.elf` and the rest of its boot files; when
`<tftp_root>/<serial>/` holds them it boots the maintenance system, otherwise its SD card. So:

    network boot on   <tftp_root>/<serial>  is a symbolic link to netboot_dir (the maintenance
                      system's boot files, shared by every Pi)
    network boot off  <tftp_root>/<serial>  is absent

The link is relative when netboot_dir is inside tftp_root (a TFTP server confined to its root
follows it), absolute otherwise. It is made under a temporary name and renamed into place, so a
Pi booting meanwhile sees either the old state or the new one. A real folder found there is
someone else's (an administrator's hand-made boot folder): it is reported, never deleted.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from edgebed.nodetypes.base import DriverError, NodeRef
from edgebed.nodetypes.interfaces import BOOT_SOURCES, NETWORK


def serial_of(node: NodeRef) -> str:
    """The node's serial as its TFTP requests spell it (8 lowercase hex digits)."""
    serial = node.properties.get("serial", "").strip().lower()
    if len(serial) != 8 or any(char not in "0123456789abcdef" for char in serial):
        raise DriverError(f"{node.name}: property serial must be 8 hex digits, got {serial!r}")
    return serial


class NetbootFolders:
    """BootInterface over `<tftp_root>/<serial>` links to `netboot_dir`."""

    def __init__(self, tftp_root: str, netboot_dir: str) -> None:
        self._root = Path(tftp_root)
        self._netboot = Path(netboot_dir)
        root, netboot = os.path.abspath(tftp_root), os.path.abspath(netboot_dir)
        if os.path.commonpath([root, netboot]) == root:
            self._target = os.path.relpath(netboot, root)
        else:
            self._target = netboot

    def folder(self, node: NodeRef) -> Path:
        return self._root / serial_of(node)

    async def set_boot_source(self, node: NodeRef, source: str) -> None:
        if source not in BOOT_SOURCES:
            raise ValueError(f"boot source must be one of {', '.join(BOOT_SOURCES)}, got {source!r}")
        folder = self.folder(node)
        # A file system call may block (an NFS-mounted TFTP root): off the event loop.
        await asyncio.to_thread(self._set, node, folder, source == NETWORK)

    def network_boot(self, node: NodeRef) -> bool:
        """Whether the node's next boot is from the network."""
        return os.path.lexists(self.folder(node))

    def _set(self, node: NodeRef, folder: Path, network: bool) -> None:
        if folder.is_dir() and not folder.is_symlink():
            raise DriverError(
                f"{node.name}: {folder} is a folder edgebed did not make; remove it (or make it a "
                f"link to {self._netboot}) so that network boot can be switched"
            )
        try:
            if not network:
                folder.unlink(missing_ok=True)
                return
            if folder.is_symlink() and os.readlink(folder) == self._target:
                return
            temporary = folder.with_name(f".{folder.name}.edgebed-{os.getpid()}")
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(self._target)
            os.replace(temporary, folder)
        except OSError as exc:
            raise DriverError(
                f"{node.name}: cannot switch network boot {'on' if network else 'off'} in "
                f"{self._root}: {exc.strerror}"
            ) from None
