"""The simulated sensor boards: power, a debug probe that flashes at low speed, a serial console."""

from __future__ import annotations

from edgebed.nodetypes.base import CopyStatus, DriverError, Environment, NodeRef
from edgebed.nodetypes.sim import DISK, Machine, SimHardware, SimOptions, SimProfile

PROFILE = SimProfile(
    boot_seconds={DISK: 2.0},
    # SWD flashing through a debug probe.
    write_bytes_per_second=20_000,
    power_seconds=0.5,
    command_seconds={"verify_firmware": 3.0, "erase_flash": 5.0, "network_boot": 0.0},
)


class SimSensorDriver:
    def __init__(self, options: SimOptions) -> None:
        self.hardware = SimHardware(PROFILE, options)

    async def set_power(self, node: NodeRef, on: bool) -> None:
        await self.hardware.set_power(node, on)

    async def power_is_on(self, node: NodeRef) -> bool:
        return self.hardware.is_powered(node)

    async def start_flash(self, node: NodeRef, firmware: Environment, radio_channel: str) -> None:
        await self.hardware.start_transfer(node, firmware.name, firmware.size_bytes, needs=None)

    async def flash_status(self, node: NodeRef, firmware: Environment) -> CopyStatus:
        return await self.hardware.transfer_status(node, firmware.name)

    async def verify_firmware(self, node: NodeRef, firmware: Environment) -> None:
        def compare(machine: Machine) -> None:
            if machine.disk_image != firmware.name:
                raise DriverError(f"{node.name}: the flash does not hold {firmware.name}")
            machine.disk_settings["verified"] = firmware.name

        await self.hardware.command(node, "verify_firmware", needs=None, change=compare)

    async def reset(self, node: NodeRef) -> None:
        await self.hardware.power_cycle(node)

    async def is_alive(self, node: NodeRef) -> bool:
        return self.hardware.running_system(node) == DISK

    def seconds_until_alive(self, node: NodeRef) -> float | None:
        return self.hardware.seconds_until_up(node) or None

    async def erase_flash(self, node: NodeRef) -> None:
        await self.hardware.wipe(node, "erase_flash", needs=None)

    async def hard_reboot(self, node: NodeRef) -> None:
        await self.hardware.power_cycle(node)
