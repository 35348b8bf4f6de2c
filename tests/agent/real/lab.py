"""The hardware lab (edgebed.lab, docs/lab.md) as the end-to-end tests of the real raspberry
driver use it: agent configurations for it and a gRPC client that watches actions. The lab itself
is the session's (the `lab` fixture of tests/labs.py); lab_process starts one of a test's own.
"""

from __future__ import annotations

import abc
import asyncio
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import grpc

from edgebed.lab.description import LabDescription
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from tests.agent.conftest import AUTH, TOKEN
from tests.labs import lab_process, require_lab  # noqa: F401  (also imported from here)
from tests.processes import AgentProcess, write_toml


class RealAgentConfig(abc.ABC):
    """What the lab agents' configurations share (AgentConfig, ServerAgentConfig,
    SensorAgentConfig): an agent `name` of `agent_type` with driver = "real", its file, database,
    log and stdout in `folder`, the tests' TOKEN; `real()` gives its [real] table."""

    agent_type: ClassVar[str]
    folder: Path
    name: str

    @property
    def database(self) -> Path:
        return self.folder / f"{self.name}.sqlite"

    @abc.abstractmethod
    def real(self) -> dict[str, Any]:
        """The [real] table: what this kind of agent needs of its lab."""

    def write(self) -> Path:
        """The agent's TOML file, `<folder>/<name>.toml`."""
        return write_toml(self.folder / f"{self.name}.toml", {
            "name": self.name, "type": self.agent_type, "listen": "127.0.0.1:0", "token": TOKEN,
            "database": str(self.database), "driver": "real", "real": self.real(),
        })

    def agent(self) -> AgentProcess:
        """An agent process with this configuration, not started yet."""
        return AgentProcess.from_config(self.write())


@dataclass
class AgentConfig(RealAgentConfig):
    """An agent with driver = "real" for a lab; `switches` beyond the lab's own (name -> a table
    overriding some of its keys) let nodes name a misbehaving one."""

    agent_type: ClassVar[str] = "raspberry"

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

    def real(self) -> dict[str, Any]:
        lab = self.lab
        lab_switch = {
            "address": lab.switch.address, "community": lab.switch.community,
            "poe_oid": lab.switch.poe_oid, "port_offset": lab.switch.port_offset,
        }
        return {
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
            "switches": [{"name": name, **lab_switch, **overrides}
                         for name, overrides in {lab.switch.name: {}, **self.switches}.items()],
        }


# Seconds per call: generous, for a loaded CI machine. (An agent's first SNMP request used to load
# pysnmp's MIB modules on its event loop, seconds during which it answered nothing; the drivers now
# do that at start-up, PoePower.warm_up.)
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
