"""Board commands on the gateway as jobs that outlive the agent: one command at a time per board.

Every command the real sensor driver runs (flash, verify, erase, reset, power) runs through
boardjob.py, detached in a session of its own, in the board's folder `<work_dir>/<board>/`:

    job.json   {"id": what the job does, "name": flash|verify|..., "argv": [...], "started": epoch s,
                "started_monotonic": the host's CLOCK_MONOTONIC at the start}
    pid        the wrapper's pid and start time (so a reused pid is never taken for it)
    log        the command's output
    rc         its exit code, once over

Nothing about a job lives only in the agent's memory: an agent killed during a flash finds, once
restarted, the same flash running (and waits for it) or over (and reads its exit code). A board
has one debug probe, so starting a command first stops whatever command of that board still runs
(a leftover verify holding the debug server, a flash that a power cycle interrupts).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edgebed.nodetypes.base import DriverError, NodeRef

log = logging.getLogger(__name__)

NONE = "none"
RUNNING = "running"
FINISHED = "finished"
DEAD = "dead"

RUNNER = Path(__file__).with_name("boardjob.py")
# Seconds a started wrapper may take to write its pid file before the job counts as dead.
START_GRACE = 10.0
# Seconds between two looks at a job the agent waits for.
WAIT_POLL = 0.05
# How much of a job's log a status reads (its end): enough for a tool's last lines.
LOG_TAIL = 4096
_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PERCENT = re.compile(rb"(\d{1,3}(?:\.\d+)?)\s*%")


@dataclass(frozen=True)
class BoardJob:
    """What a board's folder says. `state`: NONE, RUNNING, FINISHED (exit_code set), DEAD
    (stopped without an exit code: its wrapper was killed). `output`: the end of its log;
    `elapsed`: seconds since it started, on the host's monotonic clock."""

    state: str
    job_id: str = ""
    name: str = ""
    exit_code: int | None = None
    output: str = ""
    elapsed: float | None = None
    # Epoch seconds of its start: with job_id, tells one run of a job from the next.
    started: float = 0.0

    @property
    def alive(self) -> bool:
        return self.state == RUNNING

    def succeeded(self) -> bool:
        return self.state == FINISHED and self.exit_code == 0

    def is_current(self, job_id: str) -> bool:
        return self.state != NONE and self.job_id == job_id

    def percent(self) -> int:
        """The last percentage the tool printed (openocd's and pyocd's progress), 0..99; 0 when
        it printed none."""
        found = _PERCENT.findall(self.output.encode()[-512:])
        if not found:
            return 0
        return max(0, min(99, int(float(found[-1]))))

    def problem(self) -> str:
        """One line on why the job failed: its last output lines and exit code."""
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        said = " / ".join(lines[-3:])
        if len(said) > 300:
            said = "..." + said[-297:]
        if self.state == DEAD:
            return f"{self.name} stopped without an exit code{': ' + said if said else ''}"
        code = {124: " (timed out)", 127: " (could not be started)"}.get(self.exit_code or 0, "")
        return f"{self.name} exited {self.exit_code}{code}{': ' + said if said else ''}"


def board_folder_name(node: NodeRef) -> str:
    """The board's folder name: its hardware id when that is a safe file name, else a hash."""
    hardware = node.hardware_id
    if _SAFE.fullmatch(hardware) and hardware not in (".", ".."):
        return hardware
    return "board-" + hashlib.sha256(hardware.encode()).hexdigest()[:16]


def _start_ticks(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return fields[19]


class BoardJobs:
    """Jobs of every board of one agent under `work_dir`."""

    def __init__(self, work_dir: str) -> None:
        self._root = Path(work_dir)
        # The wrappers this agent started, reaped when seen over (none after a restart: init
        # reaps the earlier agent's).
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def prepare(self) -> None:
        """Creates work_dir (mode 0700). Raises OSError when it cannot."""
        self._root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not os.access(self._root, os.W_OK | os.X_OK):
            raise PermissionError(f"{self._root} is not writable")

    def folder(self, node: NodeRef) -> Path:
        return self._root / board_folder_name(node)

    def _lock(self, node: NodeRef) -> asyncio.Lock:
        return self._locks.setdefault(board_folder_name(node), asyncio.Lock())

    # Status.

    def _read(self, folder: Path) -> BoardJob:
        try:
            meta = json.loads((folder / "job.json").read_text())
        except FileNotFoundError:
            return BoardJob(NONE)
        except (OSError, ValueError):
            return BoardJob(DEAD, name="unknown", output="unreadable job.json")
        job_id, name = str(meta.get("id", "")), str(meta.get("name", ""))
        since = meta.get("started_monotonic")
        elapsed = time.monotonic() - since if isinstance(since, (int, float)) else None
        started = float(meta["started"]) if isinstance(meta.get("started"), (int, float)) else 0.0
        output = self._tail(folder / "log")
        try:
            rc = (folder / "rc").read_text().strip()
        except FileNotFoundError:
            rc = None
        except OSError:
            rc = ""
        if rc is not None:
            code = int(rc) if re.fullmatch(r"-?\d+", rc) else -1
            return BoardJob(FINISHED, job_id, name, code, output, elapsed, started)
        pid, ticks = self._pid(folder)
        if pid is not None:
            child = self._children.get(pid)
            if child is not None and child.poll() is not None:
                del self._children[pid]
            if _start_ticks(pid) == ticks:
                return BoardJob(RUNNING, job_id, name, None, output, elapsed, started)
            # Over without an rc: the rc may have been written between the two reads.
            if (folder / "rc").exists():
                return self._read(folder)
            return BoardJob(DEAD, job_id, name, None, output, elapsed, started)
        if elapsed is not None and elapsed < START_GRACE:
            return BoardJob(RUNNING, job_id, name, None, output, elapsed, started)
        return BoardJob(DEAD, job_id, name, None, output, elapsed, started)

    @staticmethod
    def _pid(folder: Path) -> tuple[int | None, str | None]:
        try:
            pid, ticks = (folder / "pid").read_text().split()
            return int(pid), ticks
        except (OSError, ValueError):
            return None, None

    @staticmethod
    def _tail(path: Path) -> str:
        try:
            with path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - LOG_TAIL))
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    async def status(self, node: NodeRef) -> BoardJob:
        return await asyncio.to_thread(self._read, self.folder(node))

    # Start and stop.

    def _stop_running(self, folder: Path) -> None:
        pid, ticks = self._pid(folder)
        if pid is None or _start_ticks(pid) != ticks:
            return
        # The wrapper leads its own session: its process group is the command's too.
        for signum, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(pid, signum)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                child = self._children.get(pid)
                if child is not None:
                    child.poll()
                if _start_ticks(pid) != ticks:
                    return
                time.sleep(0.02)

    def _start(self, folder: Path, job_id: str, name: str, argv: list[str], timeout: float) -> None:
        folder.mkdir(mode=0o700, exist_ok=True)
        self._stop_running(folder)
        for entry in ("job.json", "pid", "rc", "log", "job.json.tmp", "pid.tmp", "rc.tmp"):
            (folder / entry).unlink(missing_ok=True)
        program = argv[0]
        if "/" not in program and shutil.which(program) is None:
            raise DriverError(f"{name}: the program {program!r} is not installed on the gateway (not on PATH)")
        meta = {"id": job_id, "name": name, "argv": argv, "started": time.time(),
                "started_monotonic": time.monotonic()}
        tmp = folder / "job.json.tmp"
        tmp.write_text(json.dumps(meta) + "\n")
        os.replace(tmp, folder / "job.json")
        try:
            child = subprocess.Popen(
                [sys.executable, "-I", str(RUNNER), str(folder), f"{timeout:g}", *argv],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True)
        except OSError as exc:
            (folder / "job.json").unlink(missing_ok=True)
            raise DriverError(f"{name}: cannot start the job runner: {exc.strerror or exc}") from None
        self._children[child.pid] = child

    async def start(self, node: NodeRef, job_id: str, name: str, argv: list[str], timeout: float) -> None:
        """Starts `argv` as the board's job `job_id`, first stopping any job of the board that
        still runs. Raises DriverError when it cannot be started."""
        async with self._lock(node):
            await asyncio.to_thread(self._start, self.folder(node), job_id, name, argv, timeout)

    async def stop(self, node: NodeRef) -> None:
        """Stops the board's running job, if any."""
        async with self._lock(node):
            await asyncio.to_thread(self._stop_running, self.folder(node))

    async def run(self, node: NodeRef, name: str, argv: list[str], timeout: float) -> BoardJob:
        """Runs `argv` as a job of the board and waits until it is over (a cancelled wait stops
        it): its final status, FINISHED or DEAD."""
        job_id = f"{name} {time.time_ns()}"
        await self.start(node, job_id, name, argv, timeout)
        try:
            while True:
                status = await self.status(node)
                if not status.is_current(job_id):
                    raise DriverError(f"{name}: another command replaced it on the board")
                if not status.alive:
                    return status
                await asyncio.sleep(WAIT_POLL)
        except asyncio.CancelledError:
            await asyncio.shield(self.stop(node))
            raise
