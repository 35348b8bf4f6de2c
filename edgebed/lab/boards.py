"""The hardware lab's sensor boards: BBC micro:bits (nRF51) emulated by `qemu-system-arm -M
microbit`, flashed and checked through QEMU's gdb server with `gdb-multiarch`, their UART on a TCP
port, their power switched through QEMU's monitor. No root needed.

    python -m edgebed.lab.boards up --dir var/boards --boards 2   # until SIGINT/SIGTERM
    python -m edgebed.lab.boards power --dir var/boards --board 1 on|off
    python -m edgebed.lab.boards agent-config --dir var/boards    # a sensor agent for them

Each board N (folder `boards/board<N>/`): its gdb server `127.0.0.1:<gdb port>` (the node's
`port`), its UART as a TCP server `socket://127.0.0.1:<serial port>` (the node's `console`; a
line printed while no one is connected is lost, as on a real UART), its monitor on
`127.0.0.1:<monitor port>`, its power in `power` (on/off), QEMU's output in `qemu.log`.

Power: off is the monitor's `stop` (the CPU halts, the UART is silent); on is `system_reset` then
`cont` (the firmware in flash starts). QEMU ends itself (a "Lockup" abort) when a board runs
what is not a program, such as an erased flash: the lab then starts it again, halted and with an
empty flash, at the same ports, as a locked-up board that waits for its next reset. The flash
keeps its contents across power cycles and resets, not across such a restart.

The firmware (`firmware/`, built from sensor_firmware.S at `up` with binutils-arm-none-eabi):
`hello.elf` prints `edgebed-sensor hello ready`, `other.elf` `edgebed-sensor other ready`,
`silent.elf` nothing, `uicr.elf` prints like hello but carries a UICR word the board does not take
(its verify fails); `erased.bin` is 256 KiB of 0xFF, the lab's erase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from edgebed.lab import board_power
from edgebed.lab.proc import LabError, child_env
from edgebed.stopsignals import stop_on_signals

log = logging.getLogger("edgebed.lab.boards")

DESCRIPTION_FILE = "boards.json"
QEMU = "qemu-system-arm"
GDB = "gdb-multiarch"
AS = "arm-none-eabi-as"
LD = "arm-none-eabi-ld"
TOOLS = (QEMU, GDB, AS, LD)
MODEL = "microbit"
FLASH_BYTES = 256 * 1024
UICR_ADDRESS = "0x10001080"
ALIVE_PATTERN = r"^edgebed-sensor \S+ ready$"
# (file stem, the name it prints or None, assembler symbols)
FIRMWARE = (
    ("hello", "hello", ()),
    ("other", "other", ()),
    ("silent", None, ("SILENT",)),
    ("uicr", "uicr", ("UICR",)),
)
# Seconds before a QEMU that ended is started again.
RESTART_DELAY = 0.1


def missing_prerequisites() -> list[str]:
    """The programs this machine lacks to run the boards (Debian: qemu-system-arm, gdb-multiarch,
    binutils-arm-none-eabi); empty when none."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def build_firmware(folder: Path) -> dict[str, Path]:
    """Builds the lab's firmware from sensor_firmware.S into `folder` (blocking); returns stem ->
    ELF path, plus "erased" -> erased.bin. Raises LabError when a tool fails."""
    folder.mkdir(parents=True, exist_ok=True)
    source = resources.files("edgebed.lab").joinpath("sensor_firmware.S").read_text()
    (folder / "sensor_firmware.S").write_text(source)
    built: dict[str, Path] = {}
    for stem, name, symbols in FIRMWARE:
        work = folder / f"{stem}.build"
        work.mkdir(exist_ok=True)
        line = f"edgebed-sensor {name} ready\\r\\n" if name else ""
        (work / "message.inc").write_text(f'.ascii "{line}"\n')
        defsyms = [arg for symbol in symbols for arg in ("--defsym", f"{symbol}=1")]
        obj, elf = work / "firmware.o", folder / f"{stem}.elf"
        for argv in ([AS, "-I", str(work), *defsyms, "-o", str(obj), str(folder / "sensor_firmware.S")],
                     [LD, "-Ttext=0", f"--section-start=.uicr={UICR_ADDRESS}", "-e", "reset",
                      "-o", str(elf), str(obj)]):
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise LabError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
        shutil.rmtree(work)
        built[stem] = elf
    erased = folder / "erased.bin"
    erased.write_bytes(b"\xff" * FLASH_BYTES)
    built["erased"] = erased
    return built


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Board:
    """One lab board: `index` 1..N, its folder, and the TCP ports of its gdb server, UART and
    monitor (all on 127.0.0.1)."""

    index: int
    name: str
    folder: str
    gdb_port: int
    serial_port: int
    monitor_port: int

    @property
    def port(self) -> str:
        """The node's `port` property: the gdb server's address."""
        return f"127.0.0.1:{self.gdb_port}"

    @property
    def console(self) -> str:
        """The node's `console` property: the UART as a pyserial URL."""
        return f"socket://127.0.0.1:{self.serial_port}"


@dataclass(frozen=True)
class BoardsDescription:
    directory: str
    boards: tuple[Board, ...]
    firmware_dir: str
    erased: str
    model: str = MODEL

    def save(self) -> None:
        path = Path(self.directory) / DESCRIPTION_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, directory: Path) -> BoardsDescription:
        """Raises FileNotFoundError when no boards were brought up in `directory`."""
        data = json.loads((directory / DESCRIPTION_FILE).read_text())
        data["boards"] = tuple(Board(**board) for board in data["boards"])
        return cls(**data)

    def board(self, index: int) -> Board:
        for board in self.boards:
            if board.index == index:
                return board
        raise LabError(f"no board {index} in {self.directory} (1..{len(self.boards)})")

    def node_properties(self, board: Board) -> dict[str, str]:
        """The AddNode properties of a sensor node for this board (its `ip`: the gateway's, here
        the host's loopback, since a board is reached through the gateway)."""
        return {"ip": "127.0.0.1", "model": self.model, "port": board.port, "console": board.console,
                "lab_board": board.folder, "serial": f"MICROBIT{board.index:04d}"}

    def board_table(self, *, model: str = MODEL, flash_extra: tuple[str, ...] = (),
                    alive_timeout: float = 5.0, command_timeout: float = 60.0) -> dict[str, object]:
        """A `[[real.boards]]` table driving these boards with gdb-multiarch and this module's
        power command. `flash_extra`: gdb commands run before the `load` (a slow probe: a
        Python sleep)."""
        # Quiet: a failed command's own message is then the last line of the output.
        gdb = [GDB, "-nx", "-batch", "-ex", "set confirm off", "-ex", "set print inferior-events off",
               "-ex", "target remote {port}"]
        verify = ("python out = gdb.execute('compare-sections', to_string=True); print(out, end=''); "
                  "assert 'MIS-MATCHED' not in out, 'the board does not hold the firmware'")
        power = [sys.executable, "-I", "-S", str(Path(board_power.__file__).resolve()), "{lab_board}"]
        extra = [arg for command in flash_extra for arg in ("-ex", command)]
        return {
            "model": model,
            "flash": [*gdb, *extra, "-ex", "load", "{firmware}"],
            "verify": [*gdb, "-ex", verify, "{firmware}"],
            "erase": [*gdb, "-ex", f"restore {self.erased} binary 0"],
            "reset": [*gdb, "-ex", "monitor system_reset"],
            "power_on": [*power, "on"],
            "power_off": [*power, "off"],
            "serial": "{console}",
            "alive_pattern": ALIVE_PATTERN,
            "alive_timeout": alive_timeout,
            "command_timeout": command_timeout,
        }

    def agent_config(self) -> str:
        """A TOML sensor agent configuration with driver = "real" for these boards, then each
        board's AddNode properties as comments."""
        def value(item: object) -> str:
            if isinstance(item, list):
                return "[" + ", ".join(value(element) for element in item) + "]"
            return json.dumps(item)  # a TOML basic string or number is JSON for these values

        lab = Path(self.directory)
        lines = [
            f"# edgebed sensor agent for the lab boards in {self.directory}",
            'name = "boards"', 'type = "sensor"', 'listen = "127.0.0.1:50052"',
            'token = "lab-token-change-me"', f"database = {json.dumps(str(lab / 'agent.sqlite'))}",
            'driver = "real"', "", "[real]",
            f"image_dir = {json.dumps(self.firmware_dir)}",
            f"work_dir = {json.dumps(str(lab / 'jobs'))}",
            "power_off_seconds = 0.2", "", "[[real.boards]]",
        ]
        lines += [f"{key} = {value(item)}" for key, item in self.board_table().items()]
        lines += ["", "# Nodes (AddNode properties):"]
        lines += [f"# lab-{board.name} {json.dumps(self.node_properties(board))}" for board in self.boards]
        return "\n".join(lines) + "\n"


# -- the boards' QEMU processes -------------------------------------------------------------------


def _qemu_argv(board: Board) -> list[str]:
    return [QEMU, "-M", MODEL, "-display", "none", "-nodefaults", "-S",
            "-gdb", f"tcp:127.0.0.1:{board.gdb_port}",
            "-serial", f"tcp:127.0.0.1:{board.serial_port},server=on,wait=off",
            "-monitor", f"tcp:127.0.0.1:{board.monitor_port},server=on,wait=off"]


async def _supervise(board: Board, directory: Path, stopping: asyncio.Event) -> None:
    """Runs the board's QEMU, and starts it again (halted) whenever it ends by itself."""
    folder = Path(board.folder)
    starts = 0
    while not stopping.is_set():
        with (folder / "qemu.log").open("ab") as out:
            out.write(f"[{time.strftime('%H:%M:%S')} lab] starting QEMU (halted)\n".encode())
            out.flush()
            process = await asyncio.create_subprocess_exec(
                *_qemu_argv(board), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=child_env(directory), start_new_session=True)
        starts += 1
        (folder / "qemu.pid").write_text(f"{process.pid}\n")
        (folder / "starts").write_text(f"{starts}\n")
        waiting = asyncio.create_task(process.wait())
        stop = asyncio.create_task(stopping.wait())
        await asyncio.wait({waiting, stop}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.is_set():
            stop.cancel()
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(waiting, 5)
                except TimeoutError:
                    process.kill()
                    await waiting
            return
        stop.cancel()
        with (folder / "qemu.log").open("ab") as out:
            out.write(f"[{time.strftime('%H:%M:%S')} lab] QEMU ended (exit {process.returncode}); "
                      "the board is dark until its next power on\n".encode())
        await asyncio.sleep(RESTART_DELAY)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _up(directory: Path, count: int) -> None:
    missing = missing_prerequisites()
    if missing:
        raise LabError("the lab's boards need " + ", ".join(missing)
                       + " (Debian: qemu-system-arm gdb-multiarch binutils-arm-none-eabi)")
    began = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    firmware_dir = directory / "firmware"
    built = await asyncio.to_thread(build_firmware, firmware_dir)
    built_at = time.monotonic()
    boards = []
    for index in range(1, count + 1):
        folder = directory / "boards" / f"board{index}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "power").write_text("off\n")
        board = Board(index=index, name=f"board{index}", folder=str(folder),
                      gdb_port=_free_port(), serial_port=_free_port(), monitor_port=_free_port())
        (folder / "board.json").write_text(json.dumps(asdict(board)) + "\n")
        boards.append(board)
    description = BoardsDescription(directory=str(directory), boards=tuple(boards),
                                    firmware_dir=str(firmware_dir), erased=str(built["erased"]))
    stopping = asyncio.Event()
    stop_on_signals(stopping)
    tasks = [asyncio.create_task(_supervise(board, directory, stopping)) for board in boards]
    try:
        deadline = time.monotonic() + 30
        while not all(_listening(board.gdb_port) and _listening(board.monitor_port) for board in boards):
            if time.monotonic() > deadline or any(task.done() for task in tasks):
                raise LabError(f"the boards' QEMU did not start: see {directory}/boards/*/qemu.log")
            await asyncio.sleep(0.05)
        description.save()
        for board in boards:
            print(f"{board.name}: gdb {board.port} console {board.console} "
                  f"monitor 127.0.0.1:{board.monitor_port}")
        print(f"firmware: {firmware_dir} ({', '.join(sorted(built))})")
        print(f"timings: firmware {built_at - began:.2f} s, boards {time.monotonic() - built_at:.2f} s")
        print(f"ready: {directory / DESCRIPTION_FILE}", flush=True)
        await stopping.wait()
    finally:
        stopping.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        (directory / DESCRIPTION_FILE).unlink(missing_ok=True)
    print("down", flush=True)


# -- power, through QEMU's monitor (board_power.py) -------------------------------------------


def power(description: BoardsDescription, index: int, on: bool) -> None:
    """Switches board `index` on (reset, run) or off (halt). Raises LabError when its QEMU does
    not answer."""
    try:
        board_power.switch(Path(description.board(index).folder), on)
    except (board_power.PowerError, OSError) as exc:
        raise LabError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgebed.lab.boards",
                                     description=(__doc__ or "").split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="start the boards and keep them until SIGINT/SIGTERM")
    switch = commands.add_parser("power", help="switch a board's power on or off")
    config = commands.add_parser("agent-config", help="a sensor agent TOML and node properties")
    for sub in (up, switch, config):
        sub.add_argument("--dir", type=Path, default=Path("var/boards"), help="lab directory (var/boards)")
    up.add_argument("--boards", type=int, default=2, help="number of boards (2)")
    switch.add_argument("--board", type=int, required=True, help="board number, from 1")
    switch.add_argument("state", choices=("on", "off"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    directory = args.dir.resolve()
    try:
        if args.command == "up":
            if not 1 <= args.boards <= 64:
                raise LabError(f"--boards must be within 1..64, not {args.boards}")
            asyncio.run(_up(directory, args.boards))
            return 0
        try:
            description = BoardsDescription.load(directory)
        except FileNotFoundError:
            raise LabError(f"no boards are up in {directory} (run up first)") from None
        if args.command == "power":
            power(description, args.board, args.state == "on")
        else:
            print(description.agent_config(), end="")
        return 0
    except LabError as error:
        print(f"python -m edgebed.lab.boards: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
