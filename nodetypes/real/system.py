"""Which system answers on a Pi, and the setup of its card from the maintenance system
(SystemInterface, SetupInterface), over SSH as root with the agent's key.

The maintenance system is known by its host name (`netboot_hostname`): a node that answers SSH
with that name runs it, any other name is the card's system (and only servers with a pinned host
key get that far: ssh.py). A deployed card gets the agent's public key in root's
authorized_keys and a new host key, which the agent pins for the node (configure's host part),
so that the agent can tell after a reboot; a card whose system refuses the key, or shows
another host key, is an error, not a silent wait.

The setup scripts (shell/partition.sh, configure-*.sh) check first that they run on the
maintenance system, mount the card's root partition (its last one) under
`<work_dir>/<serial>/root`, and unmount it when they end.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from edgebed.nodetypes.base import DriverError, NodeRef
from edgebed.nodetypes.interfaces import INSTALLED, MAINTENANCE, HostConfig, LoginConfig
from edgebed.nodetypes.real.card import DeviceOf, sd_device
from edgebed.nodetypes.real.netboot import serial_of
from edgebed.nodetypes.real.passwords import sha512_crypt
from edgebed.nodetypes.real.scripts import script
from edgebed.nodetypes.real.ssh import (
    SshPool,
    Unreachable,
    bash,
    command,
    fingerprint,
    parse_public_keys,
)

log = logging.getLogger(__name__)

# Seconds for `uname -n`: a system that takes longer is not up yet.
PROBE_SECONDS = 10.0
# Growing a file system of a large card, mounting and editing it.
SETUP_SECONDS = 900.0

_SIZE = re.compile(r"([0-9]+)([KMGT]?)")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def partition_bytes(size: str) -> str:
    """'full', or a size such as '16G' (powers of 1024) as a byte count. ValueError otherwise."""
    if size == "full":
        return size
    match = _SIZE.fullmatch(size.strip().upper())
    if match is None:
        raise ValueError(f"partition size must be 'full' or a size such as '16G', got {size!r}")
    return str(int(match.group(1)) * _UNITS[match.group(2)])


class PiSystem:
    """SystemInterface: asks the node for its host name over SSH."""

    def __init__(self, ssh: SshPool, maintenance_hostname: str) -> None:
        self._ssh = ssh
        self._maintenance = maintenance_hostname
        # hardware id -> why nothing answered, last time: logged when it changes, so that a node
        # that never comes up says why once, not at every poll.
        self._silence: dict[str, str] = {}

    async def running_system(self, node: NodeRef) -> str | None:
        try:
            result = await self._ssh.run(node, command("uname", "-n"), timeout=PROBE_SECONDS,
                                         what="uname")
        except Unreachable as silence:
            reason = str(silence)
            if self._silence.get(node.hardware_id) != reason:
                self._silence[node.hardware_id] = reason
                log.info("no system answers yet: %s", reason)
            return None
        self._silence.pop(node.hardware_id, None)
        name = result.stdout.strip()
        return MAINTENANCE if name == self._maintenance else INSTALLED

    def seconds_until_up(self, node: NodeRef) -> float | None:
        # A Pi's boot time depends on its card and network; nothing tells.
        return None


class PiSetup:
    """SetupInterface: partitions and configures the written card from the maintenance system."""

    def __init__(self, ssh: SshPool, *, work_dir: str, maintenance_hostname: str,
                 device: DeviceOf = sd_device, key: Callable[[NodeRef], str] = serial_of) -> None:
        self._ssh = ssh
        self._device = device
        self._key = key
        self._work_dir = work_dir.rstrip("/") or "/"
        self._maintenance = maintenance_hostname

    def _mountpoint(self, node: NodeRef) -> str:
        return f"{self._work_dir}/{self._key(node)}/root"

    async def partition(self, node: NodeRef, partition_size: str) -> None:
        try:
            size = partition_bytes(partition_size)
        except ValueError as exc:
            raise DriverError(f"{node.name}: {exc}") from None
        await self._ssh.run(
            node,
            bash(script("partition"), self._maintenance, self._device(node), size,
                 self._mountpoint(node), name="edgebed-partition"),
            timeout=SETUP_SECONDS, what=f"resizing the root partition ({partition_size})",
        )
        log.info("%s: root partition grown (%s)", node.name, partition_size)

    async def configure(
        self, node: NodeRef, host: HostConfig | None = None, login: LoginConfig | None = None
    ) -> None:
        if host is not None:
            await self._configure_host(node, host)
        if login is not None:
            await self._configure_login(node, login)

    async def _configure_host(self, node: NodeRef, host: HostConfig) -> None:
        if host.hostname == self._maintenance:
            # The agent would take the deployed system for the maintenance one.
            raise DriverError(
                f"{node.name}: host name {host.hostname!r} is the maintenance system's; choose another"
            )
        # Only the hash leaves the agent, and only through stdin.
        password_hash = sha512_crypt(host.os_password) if host.os_password else ""
        result = await self._ssh.run(
            node,
            bash(script("configure-host"), self._maintenance, self._device(node),
                 self._mountpoint(node), host.hostname, self._ssh.public_key, host.user,
                 name="edgebed-configure-host"),
            input=password_hash,
            timeout=SETUP_SECONDS, what="configuring the host",
        )
        try:
            [card_key] = parse_public_keys(result.stdout)
        except ValueError as problem:
            raise DriverError(f"{node.name}: configuring the host gave no card host key: {problem}") from None
        # The only key the card's system will be trusted with from now on.
        await self._ssh.pin(node, card_key)
        log.info("%s: host name %s%s set on the card; its host key %s", node.name, host.hostname,
                 ", password" if password_hash else "", fingerprint(card_key))

    async def _configure_login(self, node: NodeRef, login: LoginConfig) -> None:
        keys = "\n".join(line.strip() for line in login.ssh_keys.splitlines() if line.strip())
        await self._ssh.run(
            node,
            bash(script("configure-login"), self._maintenance, self._device(node),
                 self._mountpoint(node), login.user, name="edgebed-configure-login"),
            input=keys,
            timeout=SETUP_SECONDS, what=f"configuring the login of {login.user}",
        )
        log.info("%s: %d key(s) for %s set on the card", node.name, len(keys.splitlines()), login.user)
