"""Per-server network-boot entries: iPXE scripts named after the server's MAC address.

A site's PXE chain ends in iPXE, whose first script (the site's own) chains to the entry of the
booting machine, with `${mac:hexhyp}` spelling its MAC:

    #!ipxe
    chain ${mac:hexhyp}.ipxe || exit        # no entry: back to the firmware, which boots the disk

The agent owns `tftp_root` and writes there, per server:

    network boot on   <tftp_root>/<aa-bb-cc-dd-ee-ff>.ipxe  holds `netboot_script` (the iPXE script
                      that boots the maintenance system) behind a comment naming the node
    network boot off  <tftp_root>/<aa-bb-cc-dd-ee-ff>.ipxe  is absent

An entry is written under a temporary name and renamed into place, so a server booting meanwhile
reads either the old entry or the new one. A file there that does not start with the agent's
marker is someone else's (an administrator's hand-made entry): reported, never replaced.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from edgebed.nodetypes.base import DriverError, NodeRef

# Six pairs of hex digits, separated by ':' or '-' (used with fullmatch).
MAC_PATTERN = re.compile(r"[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}")
MARKER = "# edgebed boot entry"
# An iPXE script must begin with this line.
IPXE_MAGIC = "#!ipxe"


def mac_of(node: NodeRef) -> str:
    """The node's `mac` property as iPXE's ${mac:hexhyp} spells it: aa-bb-cc-dd-ee-ff."""
    mac = node.properties.get("mac", "").strip()
    if not MAC_PATTERN.fullmatch(mac):
        raise DriverError(f"{node.name}: property mac must be a MAC address such as "
                          f"52:54:00:12:34:56, got {mac!r}")
    return mac.lower().replace(":", "-")


def read_netboot_script(path: str) -> str:
    """The maintenance system's iPXE script. Raises ValueError saying why it cannot be used."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    if not text.startswith(IPXE_MAGIC):
        raise ValueError(f"is not an iPXE script (its first line must be {IPXE_MAGIC})")
    return text


class PxeEntries:
    """The network-boot half of a server's BootInterface (servers.py adds the BMC's boot device):
    `<tftp_root>/<mac>.ipxe` present or absent."""

    def __init__(self, tftp_root: str, netboot_script: str) -> None:
        self._root = Path(tftp_root)
        # Read once: an entry is a copy, so that a server booting while the operator edits the
        # script never reads half of it.
        self._script = read_netboot_script(netboot_script)
        self._body = self._script.split("\n", 1)[1] if "\n" in self._script else ""

    def path(self, node: NodeRef) -> Path:
        return self._root / f"{mac_of(node)}.ipxe"

    def text(self, node: NodeRef) -> str:
        """The entry of `node`: the iPXE magic, the marker naming the node, the script's body."""
        return f"{IPXE_MAGIC}\n{MARKER} for {node.name}: boots the maintenance system\n{self._body}"

    def network_boot(self, node: NodeRef) -> bool:
        """Whether the node's entry is there (its next PXE boot starts the maintenance system)."""
        return self.path(node).exists()

    async def set(self, node: NodeRef, network: bool) -> None:
        """Writes (network) or removes (local) the node's entry. DriverError when the folder
        refuses, or when the file there is not the agent's."""
        path = self.path(node)
        # A file system call may block (an NFS-mounted TFTP root): off the event loop.
        await asyncio.to_thread(self._set, node, path, network)

    def _set(self, node: NodeRef, path: Path, network: bool) -> None:
        try:
            current = path.read_text(encoding="utf-8", errors="replace") if path.exists() else None
        except OSError as exc:
            raise DriverError(f"{node.name}: cannot read {path}: {exc.strerror}") from None
        if current is not None and not _ours(current):
            raise DriverError(
                f"{node.name}: {path} is a boot entry edgebed did not write; remove it so that "
                "network boot can be switched"
            )
        try:
            if not network:
                path.unlink(missing_ok=True)
                return
            wanted = self.text(node)
            if current == wanted:
                return
            temporary = path.with_name(f".{path.name}.edgebed-{os.getpid()}")
            temporary.write_text(wanted, encoding="utf-8")
            temporary.chmod(0o644)  # the TFTP server reads it, whoever it runs as
            os.replace(temporary, path)
        except OSError as exc:
            raise DriverError(
                f"{node.name}: cannot switch network boot {'on' if network else 'off'} in "
                f"{self._root}: {exc.strerror}"
            ) from None


def _ours(text: str) -> bool:
    lines = text.split("\n", 2)
    return len(lines) >= 2 and lines[0] == IPXE_MAGIC and lines[1].startswith(MARKER)
