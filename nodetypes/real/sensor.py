"""The `real` sensor driver: boards plugged into the gateway the agent runs on, flashed, verified,
erased, reset and powered through the command templates of their model (`[[real.boards]]`,
boards.py), alive when their serial port shows a line matching the model's pattern.

    power   BoardPower   power_on / power_off templates (USB hub port, relay), or the node's PoE
                         switch port (the raspberry driver's SNMP code); hard_reboot: off,
                         power_off_seconds, on, then the reset template
    image   BoardImage   flash (a job that outlives the agent, boardjobs.py), verify, erase
    system  BoardSystem  the serial port, watched from just before each power on or reset

Settings: the `[real]` table of a sensor agent (boards.py). Nodes: added by an administrator
(AddNode) with the properties `model` (a `[[real.boards]]` model), `port` (the board's debug
port: a probe's serial number, a device, a debug server's host:port) and whatever else the
model's templates name (`console`, `hub`, ...); `check_node` refuses a node missing one.

Power cannot be read back from a command: is_powered is what the driver last switched, kept in
the agent's database so that a restarted agent knows it too. A board powered from a PoE switch
port (its model has no power commands, or the node names a `switch`) is switched and read back
over SNMP, as a Pi is.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from pathlib import Path

from edgebed.config import KeyProblem
from edgebed.nodetypes.base import CopyStatus, DriverError, Environment, NodeRef
from edgebed.nodetypes.drivers import DriverOptions, DriverPlugin, LoadState, SaveState
from edgebed.nodetypes.interfaces import INSTALLED, Driver, PowerInterface
from edgebed.nodetypes.real.boardjobs import DEAD, BoardJob, BoardJobs
from edgebed.nodetypes.real.boards import (
    FIRMWARE,
    FIRMWARE_URL,
    NODE,
    BoardModel,
    SensorRealConfig,
    TemplateError,
    fill,
    fill_argv,
)
from edgebed.nodetypes.real.images import ImageCatalog, ImageFile
from edgebed.nodetypes.real.serialwatch import SerialWatch

log = logging.getLogger(__name__)

REQUIRED_PROPERTIES = ("model", "port")
POWER_STATE_KEY = "real.board_power"
FLASH = "flash"

NOT_RUNNING = CopyStatus(done=False, running=False, percent=0, eta=None)
DONE = CopyStatus(done=True, running=False, percent=100, eta=0.0)


class Boards:
    """What the interfaces share: the models, the jobs, the firmware catalog."""

    def __init__(self, config: SensorRealConfig, jobs: BoardJobs, catalog: ImageCatalog) -> None:
        self.config = config
        self.jobs = jobs
        self.catalog = catalog

    def model(self, node: NodeRef) -> BoardModel:
        name = node.properties.get("model", "")
        board = self.config.board(name)
        if board is None:
            known = ", ".join(self.config.models)
            raise DriverError(f"{node.name}: model {name!r} is no [[real.boards]] model of this agent ({known})")
        return board

    def values(self, node: NodeRef, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**node.properties, NODE: node.name, **(extra or {})}

    def argv(self, node: NodeRef, command: str, extra: Mapping[str, str] | None = None) -> list[str]:
        board = self.model(node)
        try:
            return fill_argv(board.template(command), self.values(node, extra))
        except TemplateError as exc:
            raise DriverError(f"{node.name}: {command} of model {board.model}: {exc}") from None

    async def run(self, node: NodeRef, command: str, extra: Mapping[str, str] | None = None) -> BoardJob:
        """Runs the model's `command` for the board and waits for it; DriverError unless it
        exits 0."""
        board = self.model(node)
        status = await self.jobs.run(node, command, self.argv(node, command, extra), board.command_timeout)
        if not status.succeeded():
            raise DriverError(f"{node.name}: {status.problem()}")
        return status

    def firmware(self, node: NodeRef, environment: Environment) -> tuple[ImageFile, dict[str, str]]:
        """The environment's firmware file and the placeholders naming it."""
        image = self.catalog.locate(environment)
        if image.compression != "raw":
            raise DriverError(
                f"{node.name}: firmware {image.relative} is compressed ({image.compression}); a board "
                "is flashed from the file itself: put the .elf, .hex or .bin in image_dir"
            )
        values = {FIRMWARE: str(image.path)}
        if self.config.image_url:
            values[FIRMWARE_URL] = image.url
        return image, values


class BoardSystem:
    """SystemInterface: INSTALLED once the board's serial port showed a line matching its
    model's alive_pattern after its last power on or reset (`arm`); DriverError when
    alive_timeout passed without one (the next poll watches again, without a reset)."""

    def __init__(self, boards: Boards) -> None:
        self._boards = boards
        self._watches: dict[str, SerialWatch] = {}

    def _url(self, node: NodeRef, board: BoardModel) -> str:
        try:
            return fill(board.serial, self._boards.values(node))
        except TemplateError as exc:
            raise DriverError(f"{node.name}: serial of model {board.model}: {exc}") from None

    async def _drop(self, node: NodeRef) -> None:
        watch = self._watches.pop(node.hardware_id, None)
        if watch is not None:
            await asyncio.to_thread(watch.close)

    async def arm(self, node: NodeRef) -> None:
        """Starts watching the board's serial port anew: called just before the board is powered
        on or reset, so that the firmware's first line is seen. A port that cannot be opened is
        not the power's failure: running_system reports it."""
        await self._drop(node)
        board = self._boards.model(node)
        watch = SerialWatch(self._url(node, board), board.alive_pattern, baudrate=board.baudrate)
        self._watches[node.hardware_id] = watch
        try:
            await asyncio.to_thread(watch.open)
        except DriverError as exc:
            watch.error = str(exc)

    def started(self, node: NodeRef) -> None:
        """The command that starts the board (power on, reset) is done: alive_timeout counts
        from now."""
        watch = self._watches.get(node.hardware_id)
        if watch is not None:
            watch.started()

    async def disarm(self, node: NodeRef) -> None:
        await self._drop(node)

    async def running_system(self, node: NodeRef) -> str | None:
        board = self._boards.model(node)
        watch = self._watches.get(node.hardware_id)
        if watch is None:
            # No power on or reset was watched (an agent restarted since): watch from now.
            await self.arm(node)
            return None
        if watch.matched:
            await self._drop(node)
            log.info("%s: alive: %s", node.name, watch.matched_line)
            return INSTALLED
        if watch.error is not None:
            await self._drop(node)
            raise DriverError(f"{node.name}: {watch.error}")
        if watch.waited() >= board.alive_timeout:
            await self._drop(node)
            seen = " / ".join(watch.last_lines) or "nothing"
            if len(seen) > 300:
                seen = "..." + seen[-297:]
            raise DriverError(
                f"{node.name}: no line matching '{board.alive_pattern}' on {watch.url} within "
                f"{board.alive_timeout:g} s of its reset (last lines: {seen})"
            )
        return None

    def seconds_until_up(self, node: NodeRef) -> float | None:
        watch = self._watches.get(node.hardware_id)
        return 0.1 if watch is not None else None

    def close(self) -> None:
        for watch in self._watches.values():
            watch.close()
        self._watches.clear()


class BoardPower:
    """PowerInterface through the model's power_on and power_off templates, or, for a node that
    names a PoE switch (`switch`, `switch_port`), through that port (`poe`: the raspberry
    driver's PoePower)."""

    def __init__(self, boards: Boards, system: BoardSystem, *, min_off_seconds: float,
                 load_state: LoadState, save_state: SaveState, poe: PowerInterface | None = None) -> None:
        self._boards = boards
        self._system = system
        self._min_off = min_off_seconds
        self._load = load_state
        self._save = save_state
        self._poe = poe
        self._states: dict[str, bool] | None = None
        self._lock = asyncio.Lock()

    def _switched(self, node: NodeRef) -> PowerInterface | None:
        """The PoE power of a node that names a switch; None for one powered by its templates.
        DriverError for a node that has neither."""
        if node.properties.get("switch"):
            if self._poe is None:
                raise DriverError(f"{node.name}: property 'switch' names a PoE switch, but this agent "
                                  "has no [[real.switches]]")
            return self._poe
        if not self._boards.model(node).power_templates:
            raise DriverError(f"{node.name}: model {self._boards.model(node).model} has no power_on "
                              "and power_off, and the node names no PoE switch")
        return None

    async def _known(self) -> dict[str, bool]:
        if self._states is None:
            saved = await self._load(POWER_STATE_KEY)
            try:
                loaded = json.loads(saved) if saved else {}
            except ValueError:
                loaded = {}
            self._states = {str(k): bool(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
        return self._states

    async def _record(self, node: NodeRef, on: bool) -> None:
        async with self._lock:
            states = await self._known()
            states[node.hardware_id] = on
            await self._save(POWER_STATE_KEY, json.dumps(states, sort_keys=True))

    async def set_power(self, node: NodeRef, on: bool) -> None:
        poe = self._switched(node)
        if on:
            await self._system.arm(node)
        else:
            await self._system.disarm(node)
        if poe is not None:
            await poe.set_power(node, on)
        else:
            # The command runs whatever the recorded state: it cannot be read back, and
            # switching a hub port or a relay to what it already is does no harm.
            await self._boards.run(node, "power_on" if on else "power_off")
            await self._record(node, on)
        if on:
            self._system.started(node)
        log.info("%s: power %s", node.name, "on" if on else "off")

    async def is_powered(self, node: NodeRef) -> bool:
        poe = self._switched(node)
        if poe is not None:
            return await poe.is_powered(node)
        return (await self._known()).get(node.hardware_id, False)

    async def hard_reboot(self, node: NodeRef) -> None:
        """Off, `min_off_seconds`, on, then the reset template: a probe may hold the core
        halted after power comes back, and the reset starts the firmware either way."""
        await self.set_power(node, False)
        await asyncio.sleep(self._min_off)
        await self.set_power(node, True)
        await self._boards.run(node, "reset")
        self._system.started(node)


class BoardImage:
    """ImageInterface: flash as a job that outlives the agent, verify and erase as commands."""

    def __init__(self, boards: Boards) -> None:
        self._boards = boards
        # hardware id -> the options of the flash start_write last asked for (write_status gets
        # none; the executor always runs the step's start_write first, also after a restart).
        self._options: dict[str, Mapping[str, str]] = {}
        # hardware id -> (job id, start) of the failed flash last reported: each failure is
        # one error, then the step starts a new flash.
        self._reported: dict[str, tuple[str, float]] = {}

    async def _flash_job(self, node: NodeRef, environment: Environment,
                         options: Mapping[str, str]) -> tuple[str, ImageFile, list[str]]:
        image, values = self._boards.firmware(node, environment)
        digest = await self._boards.catalog.digest(image)
        argv = self._boards.argv(node, FLASH, {**options, **values})
        job_id = f"flash {image.relative} {digest.sha256} {json.dumps(dict(options), sort_keys=True)}"
        return job_id, image, argv

    async def start_write(self, node: NodeRef, environment: Environment, options: Mapping[str, str]) -> None:
        self._options[node.hardware_id] = dict(options)
        job_id, image, argv = await self._flash_job(node, environment, options)
        status = await self._boards.jobs.status(node)
        if status.is_current(job_id) and (status.alive or status.succeeded()):
            # The same flash, started before (by an agent killed since): never a second one.
            if status.alive:
                log.info("%s: the flash of %s is still running; waiting for it", node.name, image.relative)
            else:
                log.info("%s: the flash of %s is over already (exit 0)", node.name, image.relative)
            return
        await self._boards.jobs.start(node, job_id, FLASH, argv, self._boards.model(node).command_timeout)
        log.info("%s: flashing %s", node.name, image.relative)

    async def write_status(self, node: NodeRef, environment: Environment) -> CopyStatus:
        options = self._options.get(node.hardware_id, {})
        job_id, image, _ = await self._flash_job(node, environment, options)
        status = await self._boards.jobs.status(node)
        if not status.is_current(job_id) or status.state == DEAD:
            return NOT_RUNNING
        if status.alive:
            return CopyStatus(done=False, running=True, percent=status.percent(), eta=None)
        if status.succeeded():
            return DONE
        instance = (job_id, status.started)
        if self._reported.get(node.hardware_id) != instance:
            self._reported[node.hardware_id] = instance
            raise DriverError(f"{node.name}: flashing {image.relative} failed: {status.problem()}")
        return NOT_RUNNING

    async def verify(self, node: NodeRef, environment: Environment) -> None:
        image, values = self._boards.firmware(node, environment)
        board = self._boards.model(node)
        status = await self._boards.jobs.run(node, "verify", self._boards.argv(node, "verify", values),
                                             board.command_timeout)
        if not status.succeeded():
            raise DriverError(f"{node.name}: the board does not hold firmware {image.relative}: "
                              f"{status.problem()}")
        log.info("%s: verified %s", node.name, image.relative)

    async def wipe(self, node: NodeRef) -> None:
        await self._boards.run(node, "erase")
        log.info("%s: flash erased", node.name)


def _settings(options: DriverOptions) -> SensorRealConfig:
    if not isinstance(options.real, SensorRealConfig):
        raise KeyProblem("real", "is missing: driver = \"real\" needs a [real] table")
    return options.real


async def create(options: DriverOptions) -> Driver:
    """The driver from the [real] settings. Raises KeyProblem naming the key the machine finds
    wrong: image_dir not a folder, work_dir not writable."""
    real = _settings(options)
    if not Path(real.image_dir).is_dir():
        raise KeyProblem("real.image_dir", f"is {real.image_dir!r}, which is not a folder")
    jobs = BoardJobs(real.work_dir)
    try:
        await asyncio.to_thread(jobs.prepare)
    except OSError as exc:
        raise KeyProblem("real.work_dir", f"is {real.work_dir!r}, which the agent cannot use: "
                                          f"{exc.strerror or exc}") from None
    catalog = ImageCatalog(real.image_dir, real.image_url, load_state=options.load_state,
                           save_state=options.save_state)
    boards = Boards(real, jobs, catalog)
    system = BoardSystem(boards)
    options.closing.callback(system.close)
    poe: PowerInterface | None = None
    if real.switches:
        # Imported here: pysnmp is only loaded by an agent that has switches.
        from edgebed.nodetypes.real.snmp import PoePower

        switch_power = PoePower({switch.name: switch for switch in real.switches},
                                min_off_seconds=real.power_off_seconds)
        options.closing.callback(switch_power.close)
        await switch_power.warm_up()
        poe = switch_power
    power = BoardPower(boards, system, min_off_seconds=real.power_off_seconds,
                       load_state=options.load_state, save_state=options.save_state, poe=poe)
    return Driver(power=power, image=BoardImage(boards), system=system)


def check_node(options: DriverOptions, properties: Mapping[str, str]) -> str | None:
    """What keeps a node with these AddNode properties from being driven, or None."""
    for name in REQUIRED_PROPERTIES:
        if not properties.get(name, "").strip():
            return (f"property {name!r} is missing: a real sensor node needs "
                    f"{', '.join(REQUIRED_PROPERTIES)}")
    real = options.real
    if not isinstance(real, SensorRealConfig):
        return None
    board = real.board(properties["model"])
    if board is None:
        return (f"property 'model' names an unknown board model {properties['model']!r}; this "
                f"agent has {', '.join(real.models)}")
    switch = properties.get("switch", "").strip()
    if switch or not board.power_templates:
        if not switch:
            return (f"property 'switch' is missing: model {board.model} has no power_on and "
                    "power_off, so its boards are powered from a PoE switch port")
        if real.switch(switch) is None:
            known = ", ".join(item.name for item in real.switches) or "none"
            return f"property 'switch' names an unknown switch {switch!r}; this agent has {known}"
        port = properties.get("switch_port", "").strip()
        if not port.isdigit() or int(port) < 1:
            return f"property 'switch_port' must be a port number (1, 2, ...), got {port!r}"
    for name in board.properties_needed():
        value = properties.get(name, "")
        if not value.strip():
            return f"property {name!r} is missing: the commands of model {board.model} name {{{name}}}"
        # Each value is one argument, never split; but a tool would read a leading '-' as an
        # option of its own.
        if value.startswith("-"):
            return f"property {name!r} must not start with '-' (a command would take it for an option)"
        if any(ord(char) < 32 for char in value):
            return f"property {name!r} must not contain control characters"
    return None


PLUGIN = DriverPlugin(node_type="sensor", name="real", create=create, check_node=check_node)
