"""The hardware a sensor agent drives from its gateway: the boards' power and their debug probes.

A `real` driver (a USB power hub or relay board, OpenOCD or a vendor flasher on the debug probe,
the serial console) implements this same protocol; the executor only ever sees the protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from edgebed.nodetypes.base import CopyStatus, Environment, NodeRef


@runtime_checkable
class SensorDriver(Protocol):
    async def set_power(self, node: NodeRef, on: bool) -> None:
        """Powers the board on or off; nothing when it already is."""

    async def power_is_on(self, node: NodeRef) -> bool: ...

    async def start_flash(self, node: NodeRef, firmware: Environment, radio_channel: str) -> None:
        """Starts writing the firmware through the debug probe; idempotent."""

    async def flash_status(self, node: NodeRef, firmware: Environment) -> CopyStatus: ...

    async def verify_firmware(self, node: NodeRef, firmware: Environment) -> None:
        """Reads the flash back and compares it; raises DriverError on a mismatch."""

    async def reset(self, node: NodeRef) -> None:
        """Resets the microcontroller so it starts the flashed firmware."""

    async def is_alive(self, node: NodeRef) -> bool:
        """True when the firmware answers on the serial console."""

    def seconds_until_alive(self, node: NodeRef) -> float | None:
        """A hint for polling; None when unknown."""

    async def erase_flash(self, node: NodeRef) -> None: ...

    async def hard_reboot(self, node: NodeRef) -> None:
        """Power cycles the board, whatever it is doing."""
