"""The lab's sensor boards (edgebed.lab.boards, docs/lab.md) as the real sensor driver's end-to-end
tests use them: the boards in a process of their own (`python -m edgebed.lab.boards up`), sensor
agent configurations with driver = "real" for them, and a look at a board's flash through gdb.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from edgebed.lab.boards import GDB, BoardsDescription, missing_prerequisites
from tests.agent.conftest import TOKEN
from tests.conftest import component_missing
from tests.processes import REPO, AgentProcess, ChildProcess, toml_value


def require_boards() -> None:
    missing = missing_prerequisites()
    if missing:
        component_missing("the lab boards' programs (" + ", ".join(missing) + ")")


@contextmanager
def boards_process(directory: Path, boards: int) -> Iterator[BoardsDescription]:
    """`python -m edgebed.lab.boards up` in `directory` until its `ready:` line; SIGTERM after."""
    require_boards()
    directory.mkdir(parents=True, exist_ok=True)
    log = (directory.parent / f"{directory.name}-up.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "edgebed.lab.boards", "up", "--dir", str(directory), "--boards", str(boards)],
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        printed = b""
        assert process.stdout is not None
        while b"\nready:" not in b"\n" + printed:
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(f"the boards did not come up (exit {process.poll()}); see {log.name}")
            ready, _, _ = select.select([process.stdout], [], [], 0.5)
            if ready:
                printed += os.read(process.stdout.fileno(), 4096)
        print(f"\nFIGURE boards up: {printed.decode(errors='replace').strip().splitlines()[-2]}", flush=True)
        yield BoardsDescription.load(directory.resolve())
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


@dataclass
class SensorAgentConfig:
    """A sensor agent with driver = "real" for the lab boards; `models` are [[real.boards]]
    tables (BoardsDescription.board_table)."""

    boards: BoardsDescription
    folder: Path
    name: str = "sensors"
    timeout_scale: float = 0.1
    models: list[Mapping[str, object]] = field(default_factory=list)

    @property
    def database(self) -> Path:
        return self.folder / f"{self.name}.sqlite"

    def agent(self) -> SensorAgent:
        return SensorAgent(self)

    def write(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = [
            f"name = {toml_value(self.name)}", 'type = "sensor"', 'listen = "127.0.0.1:0"',
            f"token = {toml_value(TOKEN)}", f"database = {toml_value(str(self.database))}",
            'driver = "real"', "", "[real]",
            f"image_dir = {toml_value(self.boards.firmware_dir)}",
            f"work_dir = {toml_value(str(self.folder / f'{self.name}-jobs'))}",
            "power_off_seconds = 0.2",
            f"timeout_scale = {self.timeout_scale!r}",
        ]
        for model in self.models or [self.boards.board_table()]:
            lines += ["", "[[real.boards]]"]
            for key, value in model.items():
                if isinstance(value, list):
                    lines.append(f"{key} = [{', '.join(toml_value(item) for item in value)}]")
                else:
                    lines.append(f"{key} = {toml_value(value)}")
        path = self.folder / f"{self.name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path


class SensorAgent(AgentProcess):
    """`edgebed agent` with a SensorAgentConfig's file."""

    def __init__(self, config: SensorAgentConfig) -> None:
        ChildProcess.__init__(self, config.folder, config.name)
        self.type = "sensor"
        self.token = TOKEN
        self.database = config.database
        self.config_path = config.write()
        self.keys = {}
        self.host = ""
        self.port = 0


def flash_words(port: str, address: int = 0, count: int = 2) -> list[int]:
    """`count` words of a board's memory at `address`, read through its gdb server: what the
    board holds, seen independently of the driver."""
    done = subprocess.run(
        [GDB, "-nx", "-batch", "-ex", f"target remote {port}", "-ex", f"x/{count}wx {address}"],
        capture_output=True, text=True, timeout=60, check=True)
    for line in done.stdout.splitlines():
        # "0x0:\t0x20004000\t0x00000009" (a symbol may follow the address: "0x0 <vectors>:")
        found = re.match(rf"0x{address:x}( <[^>]*>)?:\s+(.*)", line)
        if found:
            return [int(word, 16) for word in found.group(2).split()]
    raise AssertionError(f"gdb showed no memory: {done.stdout} {done.stderr}")


def elf_words(path: Path, count: int = 2) -> list[int]:
    """The first `count` words the ELF puts at address 0 (its vector table)."""
    data = path.read_bytes()
    # ELF32 little-endian: the program headers say where the segment loaded at 0 lies.
    phoff = int.from_bytes(data[28:32], "little")
    phentsize = int.from_bytes(data[42:44], "little")
    phnum = int.from_bytes(data[44:46], "little")
    for index in range(phnum):
        entry = data[phoff + index * phentsize: phoff + (index + 1) * phentsize]
        kind, offset, vaddr = (int.from_bytes(entry[i:i + 4], "little") for i in (0, 4, 8))
        if kind == 1 and vaddr == 0:
            return [int.from_bytes(data[offset + 4 * i: offset + 4 * i + 4], "little") for i in range(count)]
    raise AssertionError(f"{path} has no segment at address 0")
