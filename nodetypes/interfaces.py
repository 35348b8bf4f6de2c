"""The capability interfaces a driver is made of, shared by every node type (after Ironic's split
of a driver into power, boot, deploy and management interfaces, ironic/drivers/base.py).

    power   switch a node on or off, tell whether it is on, power cycle it whatever it does
    boot    choose what the next boots start: the network (a maintenance system) or local storage
    image   write an image or firmware with progress, verify it, wipe it
    system  which system answers on the node (maintenance, installed, none) and when it should
    setup   partition and configure the written system before its first boot (host name,
            password, login keys); a sensor's firmware has none of these, so it is its own
            interface rather than part of `system`

A node type's driver is a `Driver`: one implementation per interface, of which only power is
mandatory (the executor's hard reboot needs it). A node type declares which interfaces its steps
use (`NodeType.needs`); the agent refuses at start-up a driver that lacks one, so a real driver
can be written one interface at a time and tried on the type whose steps it covers.

Every method takes the node as a `NodeRef`; a hardware failure raises `DriverError`, which the
executor retries until the state's timeouts decide on a hard reboot or on `lost`. Calls may hang
(a stuck SSH session): the executor cancels them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from edgebed.nodetypes.base import CopyStatus, Environment, NodeRef

# Interface names, as Driver fields and in NodeType.needs.
POWER = "power"
BOOT = "boot"
IMAGE = "image"
SYSTEM = "system"
SETUP = "setup"

# Boot sources (BootInterface.set_boot_source).
NETWORK = "network"
LOCAL = "local"
BOOT_SOURCES = (NETWORK, LOCAL)

# Systems that answer (SystemInterface.running_system): the network-booted maintenance system
# (installer, netboot image), or the system installed on the node's own storage (SD card, disk,
# flash).
MAINTENANCE = "maintenance"
INSTALLED = "installed"


@runtime_checkable
class PowerInterface(Protocol):
    async def set_power(self, node: NodeRef, on: bool) -> None:
        """Switches the node on or off (PoE port, IPMI chassis power, relay); nothing when it
        already is."""

    async def is_powered(self, node: NodeRef) -> bool:
        """True when the node has power."""

    async def hard_reboot(self, node: NodeRef) -> None:
        """Power cycles the node, whatever it is doing (the executor's cure for a hung state)."""


@runtime_checkable
class BootInterface(Protocol):
    async def set_boot_source(self, node: NodeRef, source: str) -> None:
        """NETWORK or LOCAL for the next boots, persistently (network-boot files, IPMI bootdev).
        Raises ValueError for another source."""


@runtime_checkable
class ImageInterface(Protocol):
    async def start_write(
        self, node: NodeRef, environment: Environment, options: Mapping[str, str]
    ) -> None:
        """Starts writing `environment`'s image to the node's storage (from its maintenance
        system, or through a debug probe); `options` are type-specific settings written with it
        (a sensor's radio_channel). Idempotent: a write of the same image already running or
        finished is left alone."""

    async def write_status(self, node: NodeRef, environment: Environment) -> CopyStatus:
        """Where the write of `environment` stands; running=False and done=False when no write
        runs (it died with a reboot or an agent restart) and it must be started again."""

    async def verify(self, node: NodeRef, environment: Environment) -> None:
        """Reads the storage back and compares it with the image; DriverError on a mismatch."""

    async def wipe(self, node: NodeRef) -> None:
        """Erases the node's storage (SD card, system disk, flash)."""


@runtime_checkable
class WipeProgress(Protocol):
    """What an ImageInterface adds when its wipe runs on its own on the node (a whole card
    overwritten takes minutes): `wipe` then only starts it, idempotently, and the wipe step polls
    this until done, with progress. Optional: a driver without it is done when `wipe` returns."""

    async def wipe_status(self, node: NodeRef) -> CopyStatus:
        """Where the wipe stands; running=False and done=False when none runs (it died with a
        reboot) and it must be started again. DriverError when it failed."""


@runtime_checkable
class SystemInterface(Protocol):
    async def running_system(self, node: NodeRef) -> str | None:
        """MAINTENANCE or INSTALLED: the system that answers (SSH, serial console); None when
        none does (off, booting, hung)."""

    def seconds_until_up(self, node: NodeRef) -> float | None:
        """A polling hint: seconds until the current boot should be over; None when unknown."""


@dataclass(frozen=True)
class HostConfig:
    """What SetupInterface.configure sets on the host."""

    hostname: str
    # The default user's password; "" keeps the image's. Out of repr(): it reaches logs.
    os_password: str = field(default="", repr=False)
    # Whose password that is: the environment's default user; "" lets the driver find the
    # image's default user itself.
    user: str = ""


@dataclass(frozen=True)
class LoginConfig:
    """Who may log in: `user` (the image's default user) with these OpenSSH public keys, one a
    line; the SSH server is enabled."""

    user: str
    ssh_keys: str = ""


@runtime_checkable
class SetupInterface(Protocol):
    async def partition(self, node: NodeRef, partition_size: str) -> None:
        """Resizes the written root partition and its file system: 'full' (the whole storage)
        or a size such as '16G'."""

    async def configure(
        self, node: NodeRef, host: HostConfig | None = None, login: LoginConfig | None = None
    ) -> None:
        """Configures the written system from the maintenance system, in one session: the host
        part, the login part, or both; a part given as None is left alone."""


# Interface name -> the protocol its implementation must follow.
INTERFACES: Mapping[str, type] = {
    POWER: PowerInterface,
    BOOT: BootInterface,
    IMAGE: ImageInterface,
    SYSTEM: SystemInterface,
    SETUP: SetupInterface,
}


@dataclass(frozen=True)
class Driver:
    """A node type's driver: an implementation of each interface it has. Power is mandatory:
    the executor hard reboots through it; the others are used by the steps that need them."""

    power: PowerInterface
    boot: BootInterface | None = None
    image: ImageInterface | None = None
    system: SystemInterface | None = None
    setup: SetupInterface | None = None

    def missing(self, needed: Iterable[str]) -> list[str]:
        """The names in `needed` that this driver has no (or no conforming) implementation of,
        in INTERFACES order. Raises ValueError for a name that is no interface."""
        wanted = set(needed)
        unknown = wanted - INTERFACES.keys()
        if unknown:
            raise ValueError(f"no such driver interface: {', '.join(sorted(unknown))}")
        return [
            name
            for name, protocol in INTERFACES.items()
            if name in wanted and not isinstance(getattr(self, name), protocol)
        ]
