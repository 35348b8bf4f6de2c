"""The lab's sensor boards (edgebed.lab.boards, docs/lab.md) as the real sensor driver's end-to-end
tests use them: the boards in a process of their own (`python -m edgebed.lab.boards up`), sensor
agent configurations with driver = "real" for them, and a look at a board's flash through gdb.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgebed.lab.boards import GDB, BoardsDescription, missing_prerequisites
from tests.agent.real.lab import RealAgentConfig
from tests.conftest import component_missing
from tests.labs import lab_up


def require_boards() -> None:
    missing = missing_prerequisites()
    if missing:
        component_missing("the lab boards' programs (" + ", ".join(missing) + ")")


@contextmanager
def boards_process(directory: Path, boards: int) -> Iterator[BoardsDescription]:
    """`python -m edgebed.lab.boards up` in `directory` until its `ready:` line; SIGTERM after."""
    require_boards()
    with lab_up("edgebed.lab.boards", directory, "--boards", str(boards), ready_seconds=60, stop_seconds=30,
                down=False) as up:
        print(f"\nFIGURE boards up: {up.printed_before_ready()}", flush=True)
        yield BoardsDescription.load(directory.resolve())


@dataclass
class SensorAgentConfig(RealAgentConfig):
    """A sensor agent with driver = "real" for the lab boards; `models` are [[real.boards]]
    tables (BoardsDescription.board_table)."""

    agent_type: ClassVar[str] = "sensor"

    boards: BoardsDescription
    folder: Path
    name: str = "sensors"
    timeout_scale: float = 0.1
    models: list[Mapping[str, object]] = field(default_factory=list)

    def real(self) -> dict[str, Any]:
        return {
            "image_dir": self.boards.firmware_dir,
            "work_dir": str(self.folder / f"{self.name}-jobs"),
            "power_off_seconds": 0.2,
            "timeout_scale": self.timeout_scale,
            "boards": list(self.models or [self.boards.board_table()]),
        }


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
