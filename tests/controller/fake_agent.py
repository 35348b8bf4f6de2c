"""A small synchronous fake agent for the controller's tests and benchmark.

A real gRPC server on a loopback port serving the edgebed.v1.Agent contract with in-memory
nodes and actions. Every action advances by one state on each GetActionState call, so a test
controls progress by polling. It counts the calls it receives, checks the bearer token, and can
be told to hang (accept calls and never answer in time) to play a lost agent, to answer
StartActions with UNIMPLEMENTED (`batch = False`) to play an agent older than the batch, or to tamper with
its replies (`tamper`: method -> a function that changes the reply it would send) to play a
misbehaving one; MisbehavingAgent is one whose every reply is bad once told to be.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc as pb_grpc

PROCESSES = {
    "deploy": ["netboot", "power_cycle", "wait_ssh", "copy_image", "configure", "boot_sd", "deployed"],
    "reboot": ["power_off", "power_on", "wait_ssh", "rebooted"],
    "destroy": ["netboot", "power_cycle", "wipe", "power_off", "destroyed"],
}
FINAL = ("deployed", "rebooted", "destroyed", "lost")


@dataclass
class FakeAction:
    node_name: str
    node_ip: str
    environment: str
    process: str
    state_idx: int
    updated_at: int
    properties: dict[str, str]
    action_id: int = 0
    # Ends in `lost` instead of its process's last state (a state outlived its timeout).
    lost: bool = False
    # Power cycles and duration it reports (once final).
    reboots: int = 0
    duration_seconds: float = 0.0

    @property
    def states(self) -> list[str]:
        return PROCESSES[self.process]

    @property
    def state(self) -> str:
        if self.lost and self.state_idx == len(self.states) - 1:
            return "lost"
        return self.states[self.state_idx]

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def to_pb(self) -> pb.ActionState:
        return pb.ActionState(
            node_name=self.node_name,
            node_ip=self.node_ip,
            environment=self.environment,
            process=self.process,
            state=self.state,
            state_idx=self.state_idx,
            updated_at=self.updated_at,
            progress=50 if self.state == "copy_image" else 0,
            state_count=len(self.states),
            final=self.final,
            action_id=self.action_id,
            reboots=self.reboots,
            duration_seconds=self.duration_seconds if self.final else 0.0,
        )


class FakeAgent(pb_grpc.AgentServicer):
    def __init__(
        self, name: str, *, type: str = "raspberry", nodes: int = 3, token: str = "secret-token"
    ) -> None:
        self.name = name
        self.type = type
        self.token = token
        self.nodes = {
            f"{name}-{i:03d}": {"ip": f"10.1.{i // 250}.{i % 250 + 1}", "model": "pi4"} for i in range(nodes)
        }
        self.environments = {
            "raspios-lite": pb.Environment(
                name="raspios-lite", description="Raspberry Pi OS Lite", image="/img/raspios.img",
                size_bytes=2_000_000_000, default_user="pi",
            ),
            "ubuntu-22.04": pb.Environment(
                name="ubuntu-22.04", description="Ubuntu 22.04", image="/img/ubuntu.img",
                size_bytes=3_000_000_000, default_user="ubuntu",
            ),
        }
        self.actions: dict[str, FakeAction] = {}
        self.calls: Counter[str] = Counter()
        self.started: list[tuple[str, str]] = []  # (node, process) accepted by StartAction
        self.state_requests: list[list[str]] = []
        self.lock = threading.Lock()
        # While `hang` is set, every call blocks until `release` is set (or 60 s pass).
        self.hang = threading.Event()
        self.release = threading.Event()
        # How many states each action advances per GetActionState call.
        self.steps_per_call = 1
        # method name -> a function given the reply about to be sent (a copy), returning the reply
        # to send instead: what a broken or hostile agent would answer.
        self.tamper: dict[str, Callable[[Any], Any]] = {}
        # Processes whose actions end `lost` (e.g. {"destroy"}: the wipe never completes).
        self.lose: set[str] = set()
        # node -> (lost, reboots, duration_seconds) of the actions it will be given from now on.
        self.outcomes: dict[str, tuple[bool, int, float]] = {}
        # Whether it serves StartActions (False: UNIMPLEMENTED, an older agent), and the number
        # of items of each StartActions call it served.
        self.batch = True
        self.batches: list[int] = []

    # -- plumbing ---------------------------------------------------------------------------

    def _enter(self, method: str, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.calls[method] += 1
        if self.hang.is_set():
            self.release.wait(60)
        metadata = dict(context.invocation_metadata())
        presented = metadata.get("authorization", "")
        if not hmac.compare_digest(presented.encode(), f"Bearer {self.token}".encode()):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")

    def _out(self, method: str, reply: Any) -> Any:
        change = self.tamper.get(method)
        if change is None:
            return reply
        copy = type(reply)()
        copy.CopyFrom(reply)
        return change(copy)

    def _node(self, name: str, context: grpc.ServicerContext) -> dict[str, str]:
        if not name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "node_name is empty")
        if name not in self.nodes:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no node named {name}")
        return self.nodes[name]

    # -- the service ------------------------------------------------------------------------

    def GetNodes(self, request, context):
        self._enter("GetNodes", context)
        with self.lock:
            names = list(request.node_names) or sorted(self.nodes)
            for name in names:
                self._node(name, context)
            reply = pb.GetNodesResponse(nodes=[pb.Node(name=n, properties=self.nodes[n]) for n in sorted(names)])
        return self._out("GetNodes", reply)

    def DescribeNodeType(self, request, context):
        self._enter("DescribeNodeType", context)
        reply = pb.DescribeNodeTypeResponse(
            agent_name=self.name,
            type=self.type,
            processes=[pb.Process(name=k, states=v) for k, v in PROCESSES.items()],
            properties=[
                pb.PropertySpec(
                    name="environment", required=True, values=sorted(self.environments), description="what to deploy"
                ),
                pb.PropertySpec(name="ssh_key", required=False, description="public key for the default user"),
                pb.PropertySpec(
                    name="os_password", required=False, secret=True, description="password of the default user"
                ),
                pb.PropertySpec(
                    name="partition_size", required=False, values=["8G", "16G", "all"], description="root partition"
                ),
            ],
            final_states=list(FINAL),
        )
        return self._out("DescribeNodeType", reply)

    def ListEnvironments(self, request, context):
        self._enter("ListEnvironments", context)
        with self.lock:
            reply = pb.ListEnvironmentsResponse(environments=[self.environments[n] for n in sorted(self.environments)])
        return self._out("ListEnvironments", reply)

    def PutEnvironment(self, request, context):
        self._enter("PutEnvironment", context)
        if not request.environment.name:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "environment.name is empty")
        with self.lock:
            self.environments[request.environment.name] = request.environment
        return self._out("PutEnvironment", pb.PutEnvironmentResponse(environment=request.environment))

    def RemoveEnvironment(self, request, context):
        self._enter("RemoveEnvironment", context)
        with self.lock:
            if request.name not in self.environments:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no environment named {request.name}")
            del self.environments[request.name]
        return pb.RemoveEnvironmentResponse()

    def AddNode(self, request, context):
        self._enter("AddNode", context)
        with self.lock:
            if request.node_name in self.nodes:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"node {request.node_name} exists")
            self.nodes[request.node_name] = dict(request.properties)
        return pb.AddNodeResponse(node=pb.Node(name=request.node_name, properties=request.properties))

    def RemoveNode(self, request, context):
        self._enter("RemoveNode", context)
        with self.lock:
            self._node(request.node_name, context)
            del self.nodes[request.node_name]
            self.actions.pop(request.node_name, None)
        return pb.RemoveNodeResponse()

    def RenameNode(self, request, context):
        self._enter("RenameNode", context)
        with self.lock:
            props = self._node(request.node_name, context)
            if request.new_name in self.nodes:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"node {request.new_name} exists")
            self.nodes[request.new_name] = self.nodes.pop(request.node_name)
        return pb.RenameNodeResponse(node=pb.Node(name=request.new_name, properties=props))

    def StartAction(self, request, context):
        self._enter("StartAction", context)
        with self.lock:
            code, message, action = self._start(request)
            if code != grpc.StatusCode.OK:
                context.abort(code, message)
            reply = pb.StartActionResponse(action=action)
        return self._out("StartAction", reply)

    def StartActions(self, request, context):
        """The batch: each item as StartAction would, one result per item in order. With
        `batch` False it answers UNIMPLEMENTED, as an agent older than the batch does."""
        self._enter("StartActions", context)
        if not self.batch:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")
        names = [item.node_name for item in request.actions]
        if len(names) > 1000 or len(set(names)) != len(names):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "over 1,000 items, or a node named twice")
        with self.lock:
            self.batches.append(len(names))
            results = []
            for item in request.actions:
                code, message, action = self._start(item)
                result = pb.StartActionResult(node_name=item.node_name, code=code.value[0], message=message)
                if action is not None:
                    result.action.CopyFrom(action)
                results.append(result)
            reply = pb.StartActionsResponse(results=results)
        return self._out("StartActions", reply)

    def _start(self, request: pb.StartActionRequest) -> tuple[grpc.StatusCode, str, pb.ActionState | None]:
        """Starts one action (the lock held): (OK, '', the action) or (code, why, None)."""
        if not request.node_name:
            return grpc.StatusCode.INVALID_ARGUMENT, "node_name is empty", None
        node = self.nodes.get(request.node_name)
        if node is None:
            return grpc.StatusCode.NOT_FOUND, f"no node named {request.node_name}", None
        if request.process not in PROCESSES:
            return grpc.StatusCode.INVALID_ARGUMENT, f"unknown process {request.process!r}", None
        if request.process == "deploy" and request.environment not in self.environments:
            return grpc.StatusCode.INVALID_ARGUMENT, f"unknown environment {request.environment!r}", None
        current = self.actions.get(request.node_name)
        if current is not None and not current.final:
            return (
                grpc.StatusCode.FAILED_PRECONDITION,
                f"node {request.node_name} is busy with {current.process} ({current.state})",
                None,
            )
        action = FakeAction(
            node_name=request.node_name,
            node_ip=node.get("ip", ""),
            environment=request.environment,
            process=request.process,
            state_idx=0,
            updated_at=int(time.time()),
            properties=dict(request.properties),
            action_id=len(self.started) + 1,
            lost=request.process in self.lose,
        )
        lost, action.reboots, action.duration_seconds = self.outcomes.get(request.node_name, (False, 0, 0.0))
        action.lost = action.lost or lost
        self.actions[request.node_name] = action
        self.started.append((request.node_name, request.process))
        return grpc.StatusCode.OK, "", action.to_pb()

    def GetActionState(self, request, context):
        self._enter("GetActionState", context)
        with self.lock:
            self.state_requests.append(list(request.node_names))
            names = list(request.node_names) or sorted(self.actions)
            result = []
            for name in names:
                action = self.actions.get(name)
                if action is None:
                    continue
                for _ in range(self.steps_per_call):
                    if not action.final:
                        action.state_idx += 1
                        action.updated_at = int(time.time())
                result.append(action.to_pb())
            reply = pb.GetActionStateResponse(actions=result)
        return self._out("GetActionState", reply)

    # -- test helpers -----------------------------------------------------------------------

    def finish_all(self) -> None:
        """Moves every action to its final state at once."""
        with self.lock:
            for action in self.actions.values():
                action.state_idx = len(action.states) - 1


class ServedAgent:
    """A FakeAgent on a real gRPC server bound to a free loopback port."""

    def __init__(self, fake: FakeAgent, *, workers: int = 8, port: int = 0) -> None:
        self.fake = fake
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        pb_grpc.add_AgentServicer_to_server(fake, self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    def stop(self) -> None:
        self.fake.release.set()
        self.server.stop(grace=None)


# In every bad reply of MisbehavingAgent, so a test can show that none of it reached the database.
MARK = "MISBEHAVING"


def _long(length: int) -> str:
    return (MARK + "-" + "x" * length)[:length]


def long_node_name(reply: pb.GetNodesResponse) -> pb.GetNodesResponse:
    """A 100-character node name (the store's column holds 64)."""
    reply.nodes.add(name=_long(100), properties={"ip": "10.66.0.1"})
    return reply


def newline_node_name(reply: pb.GetNodesResponse) -> pb.GetNodesResponse:
    """A second node that looks like the first: its name ends with a newline."""
    first = reply.nodes[0]
    reply.nodes.add(name=first.name + "\n", properties={"ip": "10.66.0.2", "mark": MARK})
    return reply


def long_state(reply: Any) -> Any:
    """Every action in a 100-character state, with negative progress and state_idx, a huge
    state_count and a date before 1970 (GetActionState, StartActions, or StartAction's one
    action)."""
    if isinstance(reply, pb.GetActionStateResponse):
        actions = list(reply.actions)
    elif isinstance(reply, pb.StartActionsResponse):
        actions = [result.action for result in reply.results if result.HasField("action")]
    else:
        actions = [reply.action]
    for action in actions:
        action.state = _long(100)
        action.progress = -5
        action.state_idx = -1
        action.state_count = 10**6
        action.updated_at = -1
    return reply


def long_description(reply: pb.ListEnvironmentsResponse) -> pb.ListEnvironmentsResponse:
    """An environment with a 10 KiB description (agents refuse more than 4 KiB)."""
    reply.environments.add(name="bloated", description=_long(10240), image="/img/x.img", size_bytes=1)
    return reply


def long_state_name_in_a_process(reply: pb.DescribeNodeTypeResponse) -> pb.DescribeNodeTypeResponse:
    """A process with a 100-character state."""
    reply.processes[0].states.insert(1, _long(100))
    return reply


class MisbehavingAgent(FakeAgent):
    """A deliberately misbehaving peer: honest until misbehave(), then every reply it sends is
    one the controller must refuse: over-long names and states, out-of-range numbers, a name
    with a trailing newline, a 10 KiB description. Its calls still succeed (status OK)."""

    def misbehave(self) -> None:
        self.tamper.update(
            {
                "GetNodes": lambda reply: newline_node_name(long_node_name(reply)),
                "DescribeNodeType": long_state_name_in_a_process,
                "ListEnvironments": long_description,
                "GetActionState": self._made_up_actions,
                "StartAction": long_state,
                "StartActions": long_state,
            }
        )

    def _made_up_actions(self, reply: pb.GetActionStateResponse) -> pb.GetActionStateResponse:
        """Reports an action for its first node even when none runs, all of them bad."""
        first = sorted(self.nodes)[0]
        if not any(action.node_name == first for action in reply.actions):
            reply.actions.add(node_name=first, node_ip=self.nodes[first]["ip"], process="deploy")
        return long_state(reply)
