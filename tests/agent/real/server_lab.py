"""The hardware lab with servers (edgebed.lab.servers, docs/lab.md) as the end-to-end tests of the
real node (server) driver use it: a lab process with one server per BMC kind and no Pis, and
agent configurations of type `node` for it. The gRPC client (`Watch`) and what the agent
configurations share (`RealAgentConfig`) are the raspberry tests' (lab.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgebed.lab.description import LabDescription
from tests.agent.real.lab import RealAgentConfig
from tests.conftest import component_missing
from tests.labs import lab_up


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
    began = time.monotonic()
    with lab_up("edgebed.lab", directory, "--pis", "0", "--ipmi-servers", str(ipmi),
                "--redfish-servers", str(redfish), "--redfish-delay", *map(str, redfish_delay),
                "--boot-delay", str(boot_delay), ready_seconds=120, stop_seconds=60, down=True):
        yield LabDescription.load(directory.resolve()), time.monotonic() - began


@dataclass
class ServerAgentConfig(RealAgentConfig):
    """An agent of type `node` with driver = "real" for a lab with servers. `credentials`: extra
    [[real.bmc_credentials]] tables put before the lab's catch-all one (match, user, file)."""

    agent_type: ClassVar[str] = "node"

    lab: LabDescription
    folder: Path
    name: str = "servers"
    timeout_scale: float = 0.1
    image_url: str | None = None
    credentials: list[tuple[str, str, str]] = field(default_factory=list)

    def real(self) -> dict[str, Any]:
        lab = self.lab
        return {
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
            "bmc_credentials": [
                {"match": match, "user": user, "password_file": password_file}
                for match, user, password_file in [*self.credentials, ("*", lab.bmc_user, lab.bmc_password_file)]
            ],
        }
