"""The hardware lab (edgebed.lab, docs/lab.md) as the end-to-end tests of the real raspberry
driver use it: a lab in a process of its own (`python -m edgebed.lab up`), so that nothing a
test does in its own event loop can slow the lab's firmware; agent configurations for it; a gRPC
client that watches actions.
"""

from __future__ import annotations

import asyncio
import json
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

import grpc

from edgebed.lab.description import LabDescription
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from tests.agent.conftest import AUTH, TOKEN
from tests.conftest import component_missing
from tests.processes import REPO, AgentProcess, ChildProcess


def require_lab() -> None:
    from edgebed.lab import missing_prerequisites

    missing = missing_prerequisites()
    if missing:
        component_missing("the hardware lab's prerequisites: " + ", ".join(missing))


@contextmanager
def lab_process(directory: Path, pis: int, boot_delay: float = 0.5) -> Iterator[LabDescription]:
    """`python -m edgebed.lab up` in `directory` until the `ready:` line; down afterwards."""
    require_lab()
    directory.mkdir(parents=True, exist_ok=True)
    log = (directory.parent / f"{directory.name}-up.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "edgebed.lab", "up", "--dir", str(directory), "--pis", str(pis),
         "--boot-delay", str(boot_delay)],
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 120
        printed = b""
        assert process.stdout is not None
        # Read unbuffered: the lab prints its lines at once, and a buffered readline would keep
        # the last ones where select cannot see them.
        while b"\nready:" not in b"\n" + printed:
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(f"the lab did not come up (exit {process.poll()}); see {log.name}")
            ready, _, _ = select.select([process.stdout], [], [], 0.5)
            if ready:
                printed += os.read(process.stdout.fileno(), 4096)
        yield LabDescription.load(directory.resolve())
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


def _toml(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string for these values
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


@dataclass
class AgentConfig:
    """An agent with driver = "real" for a lab; `switches` beyond the lab's own (name -> a table
    overriding some of its keys) let nodes name a misbehaving one."""

    lab: LabDescription
    folder: Path
    name: str = "lab"
    timeout_scale: float = 0.1
    poe_off_seconds: float = 0.5
    image_dir: str | None = None
    image_url: str | None = None
    ssh_key: str | None = None
    # The maintenance system's host keys the agent trusts (default: the lab's).
    netboot_known_hosts: str | None = None
    switches: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def database(self) -> Path:
        return self.folder / f"{self.name}.sqlite"

    def agent(self) -> RealAgent:
        """An agent process with this configuration, not started yet."""
        return RealAgent(self)

    def write(self) -> Path:
        lab = self.lab
        self.folder.mkdir(parents=True, exist_ok=True)
        real = {
            "ssh_key": self.ssh_key or lab.ssh_key,
            "tftp_root": lab.tftp_root,
            "netboot_dir": lab.netboot_dir,
            "netboot_hostname": lab.netboot_hostname,
            "netboot_known_hosts": self.netboot_known_hosts or lab.netboot_host_key,
            "image_dir": self.image_dir or lab.image_dir,
            "image_url": self.image_url or lab.image_url,
            "wipe": "quick",
            # Each agent its own folder on the Pis: two agents' tests never share job files.
            "work_dir": f"/tmp/edgebed-{self.name}",
            "poe_off_seconds": self.poe_off_seconds,
            "timeout_scale": self.timeout_scale,
        }
        lab_switch = {
            "address": lab.switch.address, "community": lab.switch.community,
            "poe_oid": lab.switch.poe_oid, "port_offset": lab.switch.port_offset,
        }
        lines = [
            f"name = {_toml(self.name)}", 'type = "raspberry"', 'listen = "127.0.0.1:0"',
            f"token = {_toml(TOKEN)}", f"database = {_toml(str(self.database))}",
            'driver = "real"', "", "[real]",
        ]
        lines += [f"{key} = {_toml(value)}" for key, value in real.items()]
        for name, overrides in {lab.switch.name: {}, **self.switches}.items():
            lines += ["", "[[real.switches]]", f"name = {_toml(name)}"]
            lines += [f"{key} = {_toml(value)}" for key, value in {**lab_switch, **overrides}.items()]
        path = self.folder / f"{self.name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path


class RealAgent(AgentProcess):
    """`edgebed agent` with an AgentConfig's file (the harness's AgentProcess writes sim
    configurations only): its log, stdout, restarts and transition log as the harness has them."""

    def __init__(self, config: AgentConfig) -> None:
        ChildProcess.__init__(self, config.folder, config.name)
        self.type = "raspberry"
        self.token = TOKEN
        self.database = config.database
        self.config_path = config.write()
        self.keys = {}
        self.host = ""
        self.port = 0


# Seconds per call. An agent's first SNMP request loads pysnmp on its event loop (about a second
# on an idle machine, over ten under a load average of 12 on 2 cores), during which it answers
# nothing: a call made then waits for it.
CALL_SECONDS = 30


class Watch:
    """A gRPC client of one agent: nodes, environments, actions, and every state each action was
    seen in."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = agent_pb2_grpc.AgentStub(self.channel)
        self.seen: dict[str, list[str]] = {}

    async def close(self) -> None:
        await self.channel.close()

    async def add_node(self, name: str, properties: dict[str, str]) -> None:
        await self.stub.AddNode(pb.AddNodeRequest(node_name=name, properties=properties),
                                metadata=AUTH, timeout=CALL_SECONDS)

    async def put_environment(self, name: str, image: str, default_user: str = "pi") -> None:
        environment = pb.Environment(name=name, image=image, default_user=default_user,
                                     description=f"{image} from the lab")
        await self.stub.PutEnvironment(pb.PutEnvironmentRequest(environment=environment),
                                       metadata=AUTH, timeout=CALL_SECONDS)

    async def start(self, node: str, process: str, environment: str = "", **properties: str) -> None:
        self.seen[node] = []
        await self.stub.StartAction(
            pb.StartActionRequest(node_name=node, process=process, environment=environment,
                                  properties=properties), metadata=AUTH, timeout=CALL_SECONDS)

    async def states(self, *nodes: str) -> dict[str, pb.ActionState]:
        reply = await self.stub.GetActionState(pb.GetActionStateRequest(node_names=list(nodes)),
                                               metadata=AUTH, timeout=CALL_SECONDS)
        actions = {action.node_name: action for action in reply.actions}
        for name, action in actions.items():
            seen = self.seen.setdefault(name, [])
            if not seen or seen[-1] != action.state:
                seen.append(action.state)
        return actions

    async def until(self, node: str, predicate, within: float, every: float = 0.1) -> pb.ActionState:  # type: ignore[no-untyped-def]
        """Polls `node`'s action until predicate(action) is true; AssertionError after `within` s."""
        deadline = time.monotonic() + within
        while True:
            action = (await self.states(node))[node]
            if predicate(action):
                return action
            if time.monotonic() > deadline:
                raise AssertionError(f"{node}: still {action.state} after {within:g} s "
                                     f"(seen {self.seen.get(node)})")
            await asyncio.sleep(every)

    async def final(self, node: str, within: float) -> pb.ActionState:
        return await self.until(node, lambda action: action.final, within)


def pids_in(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]
