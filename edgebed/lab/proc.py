"""Running the host's tools from the lab: argument lists only, never a shell.

Every child the lab starts carries the environment variable `EDGEBED_LAB_DIR=<lab directory>`,
so `down` can find what a killed `up` left behind without trusting pid files alone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

LAB_ENV = "EDGEBED_LAB_DIR"


class LabError(RuntimeError):
    """The lab cannot do what was asked; the message says what and why, in one line."""


def child_env(directory: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every child process: ours, plus the lab marker and `extra`."""
    env = dict(os.environ)
    env[LAB_ENV] = str(directory)
    if extra:
        env.update(extra)
    return env


async def run(*argv: str, check: bool = True, input: bytes | None = None,
              timeout: float = 60.0, env: dict[str, str] | None = None) -> str:
    """Runs argv, returns its stdout as text.

    Raises LabError with the command and its stderr when it exits non-zero (check=True) or does
    not finish within `timeout` seconds (it is killed then).
    """
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise LabError(f"{' '.join(argv)}: no answer within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} exited {proc.returncode}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


def run_sync(*argv: str, check: bool = True, timeout: float = 60.0) -> str:
    """The blocking twin of `run`, for `down` and the image builder's small steps."""
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)}: no answer within {timeout:.0f} s") from None
    if check and done.returncode != 0:
        raise LabError(f"{' '.join(argv)} exited {done.returncode}: "
                       f"{done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode(errors="replace")


def netns_pids(netns: str) -> list[int]:
    """Pids of every process in network namespace `netns` (empty when it does not exist)."""
    try:
        out = run_sync("ip", "netns", "pids", netns, check=False, timeout=10)
    except LabError:
        return []
    return [int(word) for word in out.split() if word.isdigit()]


def kill_netns(netns: str, within: float = 5.0) -> int:
    """A power cut: SIGKILL every process of `netns` until none is left (or `within` seconds).

    Loops because a process may fork while we kill its parent. Returns how many were killed.
    """
    killed: set[int] = set()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pids = [pid for pid in netns_pids(netns) if pid != os.getpid()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    return len(killed)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes: it holds no namespace, mount or device any more.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def marked_pids(directory: Path) -> list[int]:
    """Pids of processes started by the lab in `directory` (their environment has the marker),
    except this process and its ancestors (a `down` run from a lab shell must not kill itself)."""
    spare = {os.getpid()}
    pid = os.getpid()
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        spare.add(pid)
    marker = f"{LAB_ENV}={directory}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spare:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found
