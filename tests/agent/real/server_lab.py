"""The hardware lab with servers (edgebed.lab.servers, docs/lab.md) as the end-to-end tests of the
real node (server) driver use it: a lab process with one server per BMC kind and no Pis, and
agent configurations of type `node` for it. The gRPC client (`Watch`) and the agent process
(`RealAgent`) are the raspberry tests' (lab.py)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from edgebed.lab.description import LabDescription
from tests.agent.conftest import TOKEN
from tests.agent.real.lab import RealAgent, _toml
from tests.conftest import component_missing
from tests.processes import REPO, ChildProcess


def require_server_lab() -> None:
    from edgebed.lab import missing_prerequisites

    missing = missing_prerequisites(("ipmi", "redfish"))
    if missing:
        component_missing("the hardware lab's prerequisites for servers: " + ", ".join(missing))


@contextmanager
def server_lab_process(directory: Path, *, ipmi: int = 1, redfish: int = 1, boot_delay: float = 0.5,
                       redfish_delay: tuple[int, int] = (1, 2)) -> Iterator[tuple[LabDescription, float]]:
    """`python -m edgebed.lab up` with servers and no Pis, until its `ready:` line; down afterwards.
    Yields the description and the seconds `up` took."""
    require_server_lab()
    directory.mkdir(parents=True, exist_ok=True)
    log = (directory.parent / f"{directory.name}-up.log").open("ab")
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "edgebed.lab", "up", "--dir", str(directory), "--pis", "0",
         "--ipmi-servers", str(ipmi), "--redfish-servers", str(redfish),
         "--redfish-delay", *map(str, redfish_delay), "--boot-delay", str(boot_delay)],
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 120
        printed = b""
        assert process.stdout is not None
        while b"\nready:" not in b"\n" + printed:
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(f"the lab did not come up (exit {process.poll()}); see {log.name}")
            ready, _, _ = select.select([process.stdout], [], [], 0.5)
            if ready:
                printed += os.read(process.stdout.fileno(), 4096)
        yield LabDescription.load(directory.resolve()), time.monotonic() - began
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        subprocess.run([sys.executable, "-m", "edgebed.lab", "down", "--dir", str(directory)],
                       cwd=REPO, capture_output=True, check=False, timeout=120)
        log.close()


@dataclass
class ServerAgentConfig:
    """An agent of type `node` with driver = "real" for a lab with servers. `credentials`: extra
    [[real.bmc_credentials]] tables put before the lab's catch-all one (match, user, file)."""

    lab: LabDescription
    folder: Path
    name: str = "servers"
    timeout_scale: float = 0.1
    image_url: str | None = None
    credentials: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def database(self) -> Path:
        return self.folder / f"{self.name}.sqlite"

    def agent(self) -> ServerAgent:
        return ServerAgent(self)

    def write(self) -> Path:
        lab = self.lab
        self.folder.mkdir(parents=True, exist_ok=True)
        real = {
            "ssh_key": lab.ssh_key,
            "tftp_root": lab.tftp_root,
            "netboot_script": lab.netboot_script,
            "netboot_hostname": lab.server_hostname,
            "netboot_known_hosts": lab.netboot_host_key,
            "image_dir": lab.image_dir,
            "image_url": self.image_url or lab.image_url,
            "wipe": "quick",
            "work_dir": f"/tmp/edgebed-{self.name}",
            "bmc_timeout": 5.0,
            "power_off_seconds": 0.5,
            "timeout_scale": self.timeout_scale,
        }
        lines = [
            f"name = {_toml(self.name)}", 'type = "node"', 'listen = "127.0.0.1:0"',
            f"token = {_toml(TOKEN)}", f"database = {_toml(str(self.database))}",
            'driver = "real"', "", "[real]",
        ]
        lines += [f"{key} = {_toml(value)}" for key, value in real.items()]
        for match, user, password_file in [*self.credentials, ("*", lab.bmc_user, lab.bmc_password_file)]:
            lines += ["", "[[real.bmc_credentials]]", f"match = {_toml(match)}", f"user = {_toml(user)}",
                      f"password_file = {_toml(password_file)}"]
        path = self.folder / f"{self.name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path


class ServerAgent(RealAgent):
    """`edgebed agent` of type node with a ServerAgentConfig's file."""

    def __init__(self, config: ServerAgentConfig) -> None:
        ChildProcess.__init__(self, config.folder, config.name)
        self.type = "node"
        self.token = TOKEN
        self.database = config.database
        self.config_path = config.write()
        self.keys = {}
        self.host = ""
        self.port = 0
