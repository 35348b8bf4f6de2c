"""Simulated hardware under the `sim` driver's interfaces, shared by every node type.

A simulated machine has a power state, boots (from the network or from its disk, SD card or
flash) in a set time, accepts commands once it is up, and takes an image at a set bandwidth. With
`failure_rate` > 0 a boot, a command or an image transfer hangs until the machine is power
cycled, which is what the executor's hard reboot does. `time_scale` multiplies every duration.

`hang_commands` (a test aid) names commands that hang every time, whatever `failure_rate`
says: `wipe` makes every destroy end `lost` once its wipe state outlives its timeout, which is how
the end-to-end tests show what the controller does with a node whose wipe never completed.

What real hardware keeps across an agent restart (power, network-boot setting, disk contents) is
saved through `save` after each change; what dies with the agent (an image transfer run over SSH)
is kept in memory only, so a resumed action starts it again. `save` only queues the write: the
agent commits it with, or before, the next state it records, so a recorded state never runs ahead
of the machine it describes, and a step does not wait a commit for each change (real hardware
keeps its state without one).

Durations (a boot, a command, a copy) are measured on a monotonic clock (`SimOptions.monotonic`),
never on the wall clock: a wall-clock step backwards would otherwise make a copy's progress
negative and a boot last an hour longer. The wall clock only stamps what is saved. A monotonic
reading means nothing to the next agent process, so a machine saves the wall time of its last
power-on, and a restarted agent takes the wall time since then (never less than 0) as the time
its boot has run: a wall step while the agent was down at worst starts that boot over or ends
it, and never makes a duration negative.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from edgebed.nodetypes.base import CopyStatus, DriverError, NodeRef

NETWORK = "network"
DISK = "disk"

# save(hardware id, Machine.to_saved()): queues the save (see the module docstring).
SaveFunction = Callable[[str, dict], None]

# The commands a simulated machine runs (SimHardware.command): the names `hang_commands` takes.
COMMANDS = ("configure", "partition", "verify", "wipe")


@dataclass(frozen=True)
class SimOptions:
    """The `[sim]` settings and the saved machines, handed to a driver factory at start-up."""

    time_scale: float = 1.0
    failure_rate: float = 0.0
    # Seeds each machine's own random generator (with its hardware id); None: unpredictable.
    seed: int | None = None
    # Commands (of COMMANDS) that hang every time on every machine: a test aid.
    hang_commands: frozenset[str] = frozenset()
    # hardware id -> saved state, as written by `save` during an earlier run.
    saved: Mapping[str, dict] = field(default_factory=dict)
    save: SaveFunction | None = None
    # Stamps the saved power-on time (see the module docstring); never measures a duration.
    wall_clock: Callable[[], float] = time.time
    # Measures every duration: boots, commands, copies (real seconds).
    monotonic: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class SimProfile:
    """Durations (seconds, before time_scale) of one kind of machine."""

    boot_seconds: Mapping[str, float]
    write_bytes_per_second: float
    power_seconds: float
    command_seconds: Mapping[str, float]


@dataclass
class Machine:
    """The part of a simulated machine that survives an agent restart."""

    powered: bool = False
    # Wall time (epoch seconds) of the last power-on: only read back by a restarted agent.
    powered_at: float = 0.0
    # What started at the last power on: NETWORK, DISK, or "" when nothing was bootable.
    booted_from: str = ""
    boot_hangs: bool = False
    network_boot: bool = False
    # The complete image on the disk / SD card / flash; "" while empty or half written.
    disk_image: str = ""
    # What commands left on the disk: partition_size, hostname, user, keys, ...
    disk_settings: dict[str, str] = field(default_factory=dict)

    def to_saved(self) -> dict:
        # Cheaper than dataclasses.asdict, which deep-copies: this runs on every change.
        return {
            "powered": self.powered,
            "powered_at": self.powered_at,
            "booted_from": self.booted_from,
            "boot_hangs": self.boot_hangs,
            "network_boot": self.network_boot,
            "disk_image": self.disk_image,
            "disk_settings": dict(self.disk_settings),
        }

    @classmethod
    def from_saved(cls, saved: Mapping) -> Machine:
        known = {name: saved[name] for name in cls.__dataclass_fields__ if name in saved}
        return cls(**known)


@dataclass
class Transfer:
    image: str
    # On the monotonic clock.
    started_at: float
    duration: float
    # Fraction at which the transfer stalls, None when it completes.
    stalls_at: float | None


class SimHardware:
    def __init__(self, profile: SimProfile, options: SimOptions) -> None:
        self._profile = profile
        self._options = options
        self._machines = {hw: Machine.from_saved(state) for hw, state in options.saved.items()}
        self._transfers: dict[str, Transfer] = {}
        self._randoms: dict[str, random.Random] = {}
        # hardware id -> monotonic time of the last power-on, and how many power-ons so far:
        # this process's view, rebuilt from the saved wall time for the machines found saved.
        self._booted_at: dict[str, float] = {}
        self._power_ons: dict[str, int] = {}
        now, wall = self._now(), options.wall_clock()
        for hardware_id, machine in self._machines.items():
            if machine.powered:
                self._booted_at[hardware_id] = now - max(0.0, wall - machine.powered_at)

    @property
    def profile(self) -> SimProfile:
        return self._profile

    # Time and chance.

    def _now(self) -> float:
        """Monotonic seconds, only ever compared with each other."""
        return self._options.monotonic()

    def scaled(self, seconds: float) -> float:
        return seconds * self._options.time_scale

    async def _spend(self, seconds: float) -> None:
        await asyncio.sleep(self.scaled(seconds))

    def _fails(self, hardware_id: str) -> bool:
        if self._options.failure_rate <= 0:
            return False
        rng = self._randoms.get(hardware_id)
        if rng is None:
            seed = self._options.seed
            rng = random.Random(f"{seed}:{hardware_id}") if seed is not None else random.Random()
            self._randoms[hardware_id] = rng
        return rng.random() < self._options.failure_rate

    # State.

    def machine(self, node: NodeRef) -> Machine:
        hardware_id = node.hardware_id
        machine = self._machines.get(hardware_id)
        if machine is None:
            machine = self._machines[hardware_id] = Machine()
        return machine

    def _save(self, node: NodeRef) -> None:
        if self._options.save is not None:
            self._options.save(node.hardware_id, self.machine(node).to_saved())

    # Power and boot.

    async def set_power(self, node: NodeRef, on: bool) -> None:
        await self._spend(self._profile.power_seconds)
        machine = self.machine(node)
        if machine.powered == on:
            return
        self._power(node, machine, on)
        self._save(node)

    async def power_cycle(self, node: NodeRef) -> None:
        await self._spend(2 * self._profile.power_seconds)
        machine = self.machine(node)
        self._power(node, machine, False)
        self._power(node, machine, True)
        self._save(node)

    def _power(self, node: NodeRef, machine: Machine, on: bool) -> None:
        self._transfers.pop(node.hardware_id, None)
        machine.powered = on
        if not on:
            machine.booted_from = ""
            machine.boot_hangs = False
            return
        self._booted_at[node.hardware_id] = self._now()
        self._power_ons[node.hardware_id] = self._power_ons.get(node.hardware_id, 0) + 1
        machine.powered_at = self._options.wall_clock()
        if machine.network_boot:
            machine.booted_from = NETWORK
        elif machine.disk_image:
            machine.booted_from = DISK
        else:
            machine.booted_from = ""
        machine.boot_hangs = self._fails(node.hardware_id)

    def is_powered(self, node: NodeRef) -> bool:
        return self.machine(node).powered

    def running_system(self, node: NodeRef) -> str | None:
        """NETWORK or DISK when a system has booted and answers, None otherwise."""
        machine = self.machine(node)
        if not machine.powered or not machine.booted_from or machine.boot_hangs:
            return None
        if self.seconds_until_up(node) > 0:
            return None
        return machine.booted_from

    def seconds_until_up(self, node: NodeRef) -> float:
        """Real seconds until the current boot ends (0 when up or when it never will)."""
        machine = self.machine(node)
        if not machine.powered or not machine.booted_from or machine.boot_hangs:
            return 0.0
        boot = self.scaled(self._profile.boot_seconds[machine.booted_from])
        booted_at = self._booted_at.get(node.hardware_id, self._now())
        return max(0.0, booted_at + boot - self._now())

    async def set_network_boot(self, node: NodeRef, enabled: bool) -> None:
        await self._spend(self._profile.command_seconds.get("network_boot", 0.5))
        machine = self.machine(node)
        if machine.network_boot != enabled:
            machine.network_boot = enabled
            self._save(node)

    # Commands on the running system (SSH, or the debug probe for a sensor).

    async def command(
        self,
        node: NodeRef,
        name: str,
        *,
        needs: str | None,
        change: Callable[[Machine], None],
        seconds: float | None = None,
    ) -> None:
        """Runs command `name` on the machine, for the profile's command_seconds[name] or
        `seconds` (before time_scale); `needs` is the system that must be up (None: the
        machine only needs power). May hang forever (failure_rate, or always when `name` is in
        hang_commands), like a stuck SSH session."""
        machine = self.machine(node)
        self._require(node, needs)
        if name in self._options.hang_commands or self._fails(node.hardware_id):
            await asyncio.Event().wait()
        power_ons = self._power_ons.get(node.hardware_id, 0)
        await self._spend(self._profile.command_seconds[name] if seconds is None else seconds)
        if not machine.powered or self._power_ons.get(node.hardware_id, 0) != power_ons:
            raise DriverError(f"{node.name}: {name}: the machine was power cycled meanwhile")
        change(machine)
        self._save(node)

    def _require(self, node: NodeRef, needs: str | None) -> None:
        machine = self.machine(node)
        if not machine.powered:
            raise DriverError(f"{node.name}: the machine is powered off")
        if needs is not None and self.running_system(node) != needs:
            raise DriverError(f"{node.name}: no {needs}-booted system answers")

    # Image transfers (SD card copy, disk write, firmware flash).

    async def start_transfer(self, node: NodeRef, image: str, size_bytes: int, *, needs: str | None) -> None:
        machine = self.machine(node)
        current = self._transfers.get(node.hardware_id)
        if current is not None and current.image == image:
            return
        # A fresh copy of this image that no later step has touched: the copy already ended
        # before the agent could record it.
        if machine.disk_image == image and not machine.disk_settings:
            return
        self._require(node, needs)
        duration = self.scaled(size_bytes / self._profile.write_bytes_per_second)
        stalls_at = None
        if self._fails(node.hardware_id):
            stalls_at = self._randoms[node.hardware_id].uniform(0.05, 0.95)
        self._transfers[node.hardware_id] = Transfer(image, self._now(), duration, stalls_at)
        # The old contents are gone as soon as writing starts.
        machine.disk_image = ""
        machine.disk_settings = {}
        self._save(node)

    async def transfer_status(self, node: NodeRef, image: str) -> CopyStatus:
        machine = self.machine(node)
        if machine.disk_image == image:
            return CopyStatus(done=True, running=False, percent=100, eta=0.0)
        transfer = self._transfers.get(node.hardware_id)
        if transfer is None or transfer.image != image:
            return CopyStatus(done=False, running=False, percent=0, eta=None)
        elapsed = max(0.0, self._now() - transfer.started_at)
        fraction = 1.0 if transfer.duration <= 0 else min(1.0, elapsed / transfer.duration)
        if transfer.stalls_at is not None and fraction >= transfer.stalls_at:
            return CopyStatus(False, True, int(transfer.stalls_at * 100), None)
        if fraction >= 1.0:
            del self._transfers[node.hardware_id]
            machine.disk_image = image
            self._save(node)
            return CopyStatus(done=True, running=False, percent=100, eta=0.0)
        eta = transfer.duration - elapsed
        return CopyStatus(False, True, int(fraction * 100), eta)

    async def wipe(self, node: NodeRef, name: str, *, needs: str | None) -> None:
        def erase(machine: Machine) -> None:
            machine.disk_image = ""
            machine.disk_settings = {}

        self._transfers.pop(node.hardware_id, None)
        await self.command(node, name, needs=needs, change=erase)
