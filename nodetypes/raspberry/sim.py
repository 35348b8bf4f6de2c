"""The simulated raspberry hardware: a PoE switch, network-boot files and Pis with SD cards."""

from __future__ import annotations

from edgebed.nodetypes.base import CopyStatus, Environment, NodeRef
from edgebed.nodetypes.raspberry.driver import NETBOOT, SDCARD
from edgebed.nodetypes.sim import DISK, NETWORK, Machine, SimHardware, SimOptions, SimProfile

PROFILE = SimProfile(
    boot_seconds={NETWORK: 20.0, DISK: 30.0},
    # A class 10 SD card written from a network-booted Pi.
    write_bytes_per_second=20e6,
    power_seconds=1.0,
    command_seconds={
        "network_boot": 0.5,
        "partition": 6.0,
        "configure_system": 3.0,
        "configure_user": 2.0,
        "wipe_card": 20.0,
    },
)

_SYSTEMS = {NETWORK: NETBOOT, DISK: SDCARD}


class SimRaspberryDriver:
    def __init__(self, options: SimOptions) -> None:
        self.hardware = SimHardware(PROFILE, options)

    async def set_network_boot(self, node: NodeRef, enabled: bool) -> None:
        await self.hardware.set_network_boot(node, enabled)

    async def set_poe(self, node: NodeRef, on: bool) -> None:
        await self.hardware.set_power(node, on)

    async def poe_is_on(self, node: NodeRef) -> bool:
        return self.hardware.is_powered(node)

    async def ssh_system(self, node: NodeRef) -> str | None:
        return _SYSTEMS.get(self.hardware.running_system(node) or "")

    def seconds_until_ssh(self, node: NodeRef) -> float | None:
        return self.hardware.seconds_until_up(node) or None

    async def start_image_copy(self, node: NodeRef, environment: Environment) -> None:
        await self.hardware.start_transfer(
            node, environment.name, environment.size_bytes, needs=NETWORK
        )

    async def image_copy_status(self, node: NodeRef, environment: Environment) -> CopyStatus:
        return await self.hardware.transfer_status(node, environment.name)

    async def partition(self, node: NodeRef, partition_size: str) -> None:
        def resize(machine: Machine) -> None:
            machine.disk_settings["partition_size"] = partition_size

        await self.hardware.command(node, "partition", needs=NETWORK, change=resize)

    async def configure_system(self, node: NodeRef, hostname: str, os_password: str) -> None:
        def configure(machine: Machine) -> None:
            machine.disk_settings["hostname"] = hostname
            # The simulation keeps whether a password was set, never the password.
            machine.disk_settings["password_set"] = "yes" if os_password else "no"

        await self.hardware.command(node, "configure_system", needs=NETWORK, change=configure)

    async def configure_user(self, node: NodeRef, user: str, ssh_keys: str) -> None:
        def configure(machine: Machine) -> None:
            machine.disk_settings["user"] = user
            machine.disk_settings["ssh_keys"] = str(len(ssh_keys.splitlines()))

        await self.hardware.command(node, "configure_user", needs=NETWORK, change=configure)

    async def wipe_card(self, node: NodeRef) -> None:
        await self.hardware.wipe(node, "wipe_card", needs=NETWORK)

    async def hard_reboot(self, node: NodeRef) -> None:
        await self.hardware.power_cycle(node)
