"""Long jobs on a node (an image copy, a full wipe) that outlive the SSH session that started them.

A job runs in its own folder, `<work_dir>/<serial>/<name>` on the maintenance system, detached
with setsid (shell/job-start.sh), and leaves everything the agent needs in files there: its
id, the boot it ran in, its pid, dd's progress lines, and at the end its exit code (`rc`), an
error line and a result (a sha256). The agent reads them with one command (shell/job-status.sh)
whenever it polls, also after its SSH connection dropped or the agent itself restarted; nothing
about a job lives only in the agent's memory.

A job is identified by its `job_id` (what it does: the image, its checksum, the device), so that
a start can tell the same job, running or finished, from another one. A job of an earlier boot
is `stale`: the card may have changed since, so it counts for nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from edgebed.nodetypes.base import DriverError, NodeRef
from edgebed.nodetypes.real.netboot import serial_of
from edgebed.nodetypes.real.scripts import script
from edgebed.nodetypes.real.ssh import SshPool, bash

NONE = "none"
STALE = "stale"
RUNNING = "running"
FINISHED = "finished"
DEAD = "dead"
STATES = (NONE, STALE, RUNNING, FINISHED, DEAD)

# Seconds for the start and status commands (each does a few file operations).
COMMAND_SECONDS = 60.0


@dataclass(frozen=True)
class JobStatus:
    """What a job's folder says. `state`: NONE (no job), STALE (a job of an earlier boot),
    RUNNING, FINISHED (exit_code set), DEAD (stopped without an exit code: killed).
    `progress`: stage -> bytes done (from STAGE.progress); `elapsed`: seconds since the start,
    from the node's time since boot (never its wall clock, which steps when NTP first answers a
    Pi without a clock battery); None when unknown."""

    state: str
    job_id: str = ""
    started: int = 0
    # With `started`, tells one run of a job from the next (two may start within a second).
    pid: int = 0
    exit_code: int | None = None
    result: str = ""
    error: str = ""
    # Bytes of the job's whole work when the job said (a full wipe: the card's size).
    total: int | None = None
    progress: Mapping[str, int] = field(default_factory=dict)
    elapsed: float | None = None

    @property
    def alive(self) -> bool:
        return self.state == RUNNING

    def succeeded(self) -> bool:
        return self.state == FINISHED and self.exit_code == 0

    def is_current(self, job_id: str) -> bool:
        """Whether this is job `job_id` of the running boot."""
        return self.state in (RUNNING, FINISHED, DEAD) and self.job_id == job_id


def parse_status(text: str) -> JobStatus:
    """Reads job-status.sh's key=value lines. Raises DriverError when they make no sense."""
    values: dict[str, str] = {}
    progress: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key.startswith("progress."):
            progress[key.removeprefix("progress.")] = int(value) if value.isdigit() else 0
        else:
            values[key] = value
    state = values.get("state", "")
    if state not in STATES:
        raise DriverError(f"the job status script answered no state: {text.strip()[:200]!r}")
    exit_code = values.get("rc", "")
    total = values.get("total", "")
    started = values.get("started", "")
    # Both readings are of the boot the job runs in (a job of another boot is STALE).
    elapsed = None
    uptime, started_uptime = _seconds(values.get("uptime", "")), _seconds(values.get("started_uptime", ""))
    if uptime is not None and started_uptime is not None:
        elapsed = max(0.0, uptime - started_uptime)
    return JobStatus(
        state=state,
        job_id=values.get("id", ""),
        started=int(started) if started.isdigit() else 0,
        pid=int(values["pid"]) if values.get("pid", "").isdigit() else 0,
        exit_code=int(exit_code) if exit_code.lstrip("-").isdigit() else None,
        result=values.get("result", ""),
        error=values.get("error", "").strip(),
        total=int(total) if total.isdigit() else None,
        progress=progress,
        elapsed=elapsed,
    )


def _seconds(text: str) -> float | None:
    """A /proc/uptime reading ("1234.56"), or None when it is not one."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


class NodeJobs:
    """Starts and reads jobs on nodes through `ssh`; `work_dir` is the folder on the maintenance
    system that holds one sub-folder per node, so that nodes sharing a file system
    (an NFS root, a lab) never mix their jobs. `key` names a node's sub-folder: a Pi's serial, a
    server's MAC address."""

    def __init__(self, ssh: SshPool, work_dir: str, maintenance_hostname: str, *,
                 key: Callable[[NodeRef], str] = serial_of) -> None:
        self._ssh = ssh
        self._key = key
        self._work_dir = work_dir.rstrip("/") or "/"
        self._maintenance = maintenance_hostname

    def folder(self, node: NodeRef, name: str) -> str:
        return f"{self._work_dir}/{self._key(node)}/{name}"

    async def start(self, node: NodeRef, name: str, job_id: str, job: str, *args: str) -> None:
        """Starts `job` (a script name, scripts.py) as job `name` with `args`, replacing any job
        of that name (stopped first when it runs). Raises DriverError when it cannot be
        started (not the maintenance system, SSH down)."""
        await self._ssh.run(
            node,
            bash(script("job-start"), self.folder(node, name), job_id, self._maintenance, *args,
                 name=f"edgebed-{name}"),
            input=script(job),
            timeout=COMMAND_SECONDS,
            what=f"starting the {name} job",
        )

    async def status(self, node: NodeRef, name: str) -> JobStatus:
        result = await self._ssh.run(
            node, bash(script("job-status"), self.folder(node, name)),
            timeout=COMMAND_SECONDS, what=f"reading the {name} job's status",
        )
        return parse_status(result.stdout)
