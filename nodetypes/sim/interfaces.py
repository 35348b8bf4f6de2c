"""The capability interfaces (nodetypes/interfaces.py) implemented on simulated hardware.

One SimHardware holds a driver's machines; each class here is one interface over it, so a type's
sim driver is a composition, as a real one will be. The simulated machine boots from the network
(NETWORK) into the maintenance system or from its storage (DISK) into the installed one.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgebed.nodetypes.base import CopyStatus, DriverError, Environment, NodeRef
from edgebed.nodetypes.interfaces import (
    BOOT_SOURCES,
    INSTALLED,
    MAINTENANCE,
    Driver,
    HostConfig,
    LoginConfig,
)
from edgebed.nodetypes.interfaces import NETWORK as NETWORK_SOURCE
from edgebed.nodetypes.sim.hardware import DISK, NETWORK, Machine, SimHardware

# What the simulated machine booted -> the system that answers.
_SYSTEMS = {NETWORK: MAINTENANCE, DISK: INSTALLED}


class SimPower:
    def __init__(self, hardware: SimHardware) -> None:
        self.hardware = hardware

    async def set_power(self, node: NodeRef, on: bool) -> None:
        await self.hardware.set_power(node, on)

    async def is_powered(self, node: NodeRef) -> bool:
        return self.hardware.is_powered(node)

    async def hard_reboot(self, node: NodeRef) -> None:
        await self.hardware.power_cycle(node)


class SimBoot:
    def __init__(self, hardware: SimHardware) -> None:
        self.hardware = hardware

    async def set_boot_source(self, node: NodeRef, source: str) -> None:
        if source not in BOOT_SOURCES:
            raise ValueError(f"boot source must be one of {', '.join(BOOT_SOURCES)}, got {source!r}")
        await self.hardware.set_network_boot(node, source == NETWORK_SOURCE)


class SimImage:
    """Writes through the system `needs` (NETWORK: from the maintenance system over SSH; None: a
    debug probe that only needs power)."""

    def __init__(self, hardware: SimHardware, *, needs: str | None) -> None:
        self.hardware = hardware
        self._needs = needs

    async def start_write(
        self, node: NodeRef, environment: Environment, options: Mapping[str, str]
    ) -> None:
        # The options (a sensor's radio channel) change nothing the simulation measures.
        await self.hardware.start_transfer(
            node, environment.name, environment.size_bytes, needs=self._needs
        )

    async def write_status(self, node: NodeRef, environment: Environment) -> CopyStatus:
        return await self.hardware.transfer_status(node, environment.name)

    async def verify(self, node: NodeRef, environment: Environment) -> None:
        def compare(machine: Machine) -> None:
            if machine.disk_image != environment.name:
                raise DriverError(f"{node.name}: the storage does not hold {environment.name}")
            machine.disk_settings["verified"] = environment.name

        await self.hardware.command(node, "verify", needs=self._needs, change=compare)

    async def wipe(self, node: NodeRef) -> None:
        await self.hardware.wipe(node, "wipe", needs=self._needs)


class SimSystem:
    def __init__(self, hardware: SimHardware) -> None:
        self.hardware = hardware

    async def running_system(self, node: NodeRef) -> str | None:
        return _SYSTEMS.get(self.hardware.running_system(node) or "")

    def seconds_until_up(self, node: NodeRef) -> float | None:
        return self.hardware.seconds_until_up(node) or None


class SimSetup:
    """Runs from the network-booted maintenance system. A configure call is one command (one
    chance to hang) lasting the sum of its parts' command_seconds (configure_host,
    configure_login)."""

    def __init__(self, hardware: SimHardware) -> None:
        self.hardware = hardware

    async def partition(self, node: NodeRef, partition_size: str) -> None:
        def resize(machine: Machine) -> None:
            machine.disk_settings["partition_size"] = partition_size

        await self.hardware.command(node, "partition", needs=NETWORK, change=resize)

    async def configure(
        self, node: NodeRef, host: HostConfig | None = None, login: LoginConfig | None = None
    ) -> None:
        seconds = self.hardware.profile.command_seconds

        def configure(machine: Machine) -> None:
            if host is not None:
                machine.disk_settings["hostname"] = host.hostname
                # The simulation keeps whether a password was set, never the password.
                machine.disk_settings["password_set"] = "yes" if host.os_password else "no"
            if login is not None:
                machine.disk_settings["user"] = login.user
                machine.disk_settings["ssh_keys"] = str(len(login.ssh_keys.splitlines()))

        duration = (seconds["configure_host"] if host is not None else 0.0) + (
            seconds["configure_login"] if login is not None else 0.0
        )
        await self.hardware.command(
            node, "configure", needs=NETWORK, change=configure, seconds=duration
        )


def network_booted_driver(hardware: SimHardware) -> Driver:
    """A machine installed from a network-booted maintenance system (a Pi, a server): every
    interface, the image written over the network."""
    return Driver(
        power=SimPower(hardware),
        boot=SimBoot(hardware),
        image=SimImage(hardware, needs=NETWORK),
        system=SimSystem(hardware),
        setup=SimSetup(hardware),
    )
