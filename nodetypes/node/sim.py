"""The simulated servers: a BMC each, PXE boot and a system disk."""

from __future__ import annotations

from edgebed.nodetypes.base import CopyStatus, Environment, NodeRef
from edgebed.nodetypes.node import driver as server_driver
from edgebed.nodetypes.sim import DISK, NETWORK, Machine, SimHardware, SimOptions, SimProfile

PROFILE = SimProfile(
    # Firmware POST of a rack server, then the PXE installer or the installed system.
    boot_seconds={NETWORK: 90.0, DISK: 100.0},
    write_bytes_per_second=150e6,
    power_seconds=2.0,
    command_seconds={"network_boot": 1.0, "partition": 10.0, "configure": 8.0, "wipe_disk": 60.0},
)

_SYSTEMS = {NETWORK: server_driver.PXE, DISK: server_driver.DISK}


class SimServerDriver:
    def __init__(self, options: SimOptions) -> None:
        self.hardware = SimHardware(PROFILE, options)

    async def set_boot_device(self, node: NodeRef, device: str) -> None:
        await self.hardware.set_network_boot(node, device == server_driver.PXE)

    async def set_power(self, node: NodeRef, on: bool) -> None:
        await self.hardware.set_power(node, on)

    async def power_is_on(self, node: NodeRef) -> bool:
        return self.hardware.is_powered(node)

    async def ssh_system(self, node: NodeRef) -> str | None:
        return _SYSTEMS.get(self.hardware.running_system(node) or "")

    def seconds_until_ssh(self, node: NodeRef) -> float | None:
        return self.hardware.seconds_until_up(node) or None

    async def start_image_write(self, node: NodeRef, environment: Environment) -> None:
        await self.hardware.start_transfer(
            node, environment.name, environment.size_bytes, needs=NETWORK
        )

    async def image_write_status(self, node: NodeRef, environment: Environment) -> CopyStatus:
        return await self.hardware.transfer_status(node, environment.name)

    async def partition(self, node: NodeRef, partition_size: str) -> None:
        def resize(machine: Machine) -> None:
            machine.disk_settings["partition_size"] = partition_size

        await self.hardware.command(node, "partition", needs=NETWORK, change=resize)

    async def configure(
        self, node: NodeRef, hostname: str, os_password: str, user: str, ssh_keys: str
    ) -> None:
        def configure(machine: Machine) -> None:
            machine.disk_settings.update(
                hostname=hostname,
                password_set="yes" if os_password else "no",
                user=user,
                ssh_keys=str(len(ssh_keys.splitlines())),
            )

        await self.hardware.command(node, "configure", needs=NETWORK, change=configure)

    async def wipe_disk(self, node: NodeRef) -> None:
        await self.hardware.wipe(node, "wipe_disk", needs=NETWORK)

    async def hard_reboot(self, node: NodeRef) -> None:
        await self.hardware.power_cycle(node)
