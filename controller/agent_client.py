"""The controller's side of the gRPC contract: the only code that touches the generated stubs.

One grpc.aio channel per agent. Every call carries the deadline (settings.call_timeout_seconds,
6 s by default) and `authorization: Bearer <token>`. Outcomes:

- UNAVAILABLE or DEADLINE_EXCEEDED: the agent is flagged `disconnected` (with last_error) and is
  not called again until an administrator reconnects it; AgentUnavailable is raised.
- UNAUTHENTICATED: the agent answered, so it is not lost; last_error becomes "wrong token" and
  AgentRejectedToken is raised. The status is left as it is.
- NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION/ALREADY_EXISTS: NotFound, InvalidInput,
  Conflict with the agent's message.

Each raised ServiceError carries the gRPC code name in `.code` so the scheduler can branch on it.
Calls to different agents run concurrently (`gather_agents`). Protobuf messages are converted
to domain types here and go no further.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import grpc

from edgebed.controller.domain import (
    CONNECTED,
    DISCONNECTED,
    ActionState,
    AgentRecord,
    Environment,
    NodeTypeInfo,
    PropertySpec,
)
from edgebed.controller.errors import (
    AgentRejectedToken,
    AgentUnavailable,
    Conflict,
    InvalidInput,
    NotFound,
    ServiceError,
)
from edgebed.controller.metrics import Metrics
from edgebed.controller.store import Store
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

T = TypeVar("T")

WRONG_TOKEN = "wrong token"
# last_error texts this module writes; a later successful call clears them.
_CLIENT_ERROR_PREFIXES = (WRONG_TOKEN, "no answer", "unavailable", "agent error")


def _is_client_error(text: str) -> bool:
    return text.startswith(_CLIENT_ERROR_PREFIXES)


# -- protobuf -> domain ---------------------------------------------------------------------


def action_from_pb(msg: pb.ActionState) -> ActionState:
    return ActionState(
        node_name=msg.node_name,
        node_ip=msg.node_ip,
        environment=msg.environment,
        process=msg.process,
        state=msg.state,
        state_idx=msg.state_idx,
        updated_at=msg.updated_at,
        progress=msg.progress,
        state_count=msg.state_count,
        final=msg.final,
        reboots=msg.reboots,
        action_id=msg.action_id,
    )


def node_type_from_pb(msg: pb.DescribeNodeTypeResponse) -> NodeTypeInfo:
    return NodeTypeInfo(
        type=msg.type,
        processes={p.name: list(p.states) for p in msg.processes},
        properties=[
            PropertySpec(
                name=p.name,
                required=p.required,
                values=list(p.values),
                secret=p.secret,
                description=p.description,
            )
            for p in msg.properties
        ],
        final_states=list(msg.final_states),
    )


def environment_from_pb(msg: pb.Environment, agent: str = "", type_: str = "") -> Environment:
    return Environment(
        name=msg.name,
        description=msg.description,
        image=msg.image,
        size_bytes=msg.size_bytes,
        default_user=msg.default_user,
        properties=dict(msg.properties),
        agent=agent,
        type=type_,
    )


def environment_to_pb(env: Environment) -> pb.Environment:
    return pb.Environment(
        name=env.name,
        description=env.description,
        image=env.image,
        size_bytes=env.size_bytes,
        default_user=env.default_user,
        properties=dict(env.properties),
    )


class _Connection:
    def __init__(self, address: str) -> None:
        self.address = address
        # A channel of its own subchannels: from gRPC's shared pool, a new channel would inherit
        # the reconnect back-off of an earlier channel to the same address, and refuse an agent
        # that has just come back (a reconnect right after the agent was started).
        self.channel = grpc.aio.insecure_channel(
            address, options=(("grpc.use_local_subchannel_pool", 1),)
        )
        self.stub = pb_grpc.AgentStub(self.channel)


class AgentClient:
    def __init__(self, store: Store, metrics: Metrics, *, timeout: float = 6.0) -> None:
        self._store = store
        self._metrics = metrics
        self.timeout = timeout
        self._connections: dict[str, _Connection] = {}
        # Agents this client flagged since their record was read, so a poll that already holds
        # an old record does not call them again.
        self._flagged: set[str] = set()

    async def close(self) -> None:
        connections, self._connections = self._connections, {}
        await asyncio.gather(*(c.channel.close() for c in connections.values()))

    async def forget(self, name: str) -> None:
        """Closes the channel of an agent that was deleted or changed address."""
        connection = self._connections.pop(name, None)
        self._flagged.discard(name)
        if connection is not None:
            await connection.channel.close()

    def _stub(self, agent: AgentRecord) -> pb_grpc.AgentStub:
        connection = self._connections.get(agent.name)
        if connection is None or connection.address != agent.address:
            if connection is not None:
                # The address changed: the old channel closes in the background.
                asyncio.get_running_loop().create_task(connection.channel.close())
            connection = _Connection(agent.address)
            self._connections[agent.name] = connection
        return connection.stub

    def usable(self, agent: AgentRecord) -> bool:
        return agent.status == CONNECTED and agent.name not in self._flagged

    async def _call(self, agent: AgentRecord, method: str, request: Any, *, force: bool = False) -> Any:
        if not force and not self.usable(agent):
            raise AgentUnavailable(
                f"agent {agent.name} is disconnected; an administrator can reconnect it",
                code="UNAVAILABLE",
            )
        rpc = getattr(self._stub(agent), method)
        started = time.monotonic()
        try:
            response = await rpc(
                request,
                timeout=self.timeout,
                metadata=(("authorization", f"Bearer {agent.token}"),),
            )
        except grpc.aio.AioRpcError as exc:
            self._metrics.record_call(
                agent.name, method, exc.code().name.lower(), time.monotonic() - started
            )
            raise await self._failure(agent, method, exc) from None
        self._metrics.record_call(agent.name, method, "ok", time.monotonic() - started)
        if _is_client_error(agent.last_error) and not force:
            await self._store.agents.set_agent_status(agent.name, last_error="")
        return response

    async def _failure(self, agent: AgentRecord, method: str, exc: grpc.aio.AioRpcError) -> ServiceError:
        code = exc.code()
        details = exc.details() or code.name
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                reason = f"no answer within {self.timeout:g} s ({method})"
            else:
                reason = f"unavailable: {details}"[:500]
            self._flagged.add(agent.name)
            await self._store.agents.set_agent_status(agent.name, status=DISCONNECTED, last_error=reason)
            log.warning("agent %s flagged disconnected: %s", agent.name, reason)
            return AgentUnavailable(
                f"agent {agent.name} did not answer ({reason}); it is now disconnected",
                code=code.name,
            )
        if code is grpc.StatusCode.UNAUTHENTICATED:
            # Reported once, not at every poll while the token stays wrong.
            if agent.last_error != WRONG_TOKEN:
                await self._store.agents.set_agent_status(agent.name, last_error=WRONG_TOKEN)
                log.warning("agent %s rejected the controller's token", agent.name)
            return AgentRejectedToken(
                f"agent {agent.name} rejected the controller's token (wrong token)",
                code=code.name,
            )
        if code is grpc.StatusCode.NOT_FOUND:
            return NotFound(details, code=code.name)
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
            return InvalidInput(details, code=code.name)
        if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS):
            return Conflict(details, code=code.name)
        reason = f"agent error: {code.name}: {details}"[:500]
        if agent.last_error != reason:
            await self._store.agents.set_agent_status(agent.name, last_error=reason)
            log.warning("agent %s: %s failed: %s", agent.name, method, reason)
        return AgentUnavailable(f"agent {agent.name} failed: {code.name}: {details}", code=code.name)

    # -- connecting ----------------------------------------------------------------------

    async def probe(self, agent: AgentRecord) -> tuple[AgentRecord, NodeTypeInfo | None]:
        """One call (DescribeNodeType), whatever the status: sets connected when it answers.

        Returns the updated record and the node type description (None when it did not answer).
        """
        # A fresh channel: the old one may sit in gRPC's reconnect back-off after failures,
        # and would refuse at once an agent that has just come back.
        await self.forget(agent.name)
        try:
            response = await self._call(agent, "DescribeNodeType", pb.DescribeNodeTypeRequest(), force=True)
        except AgentUnavailable:
            # _failure recorded the reason (no answer, or "wrong token" with the status kept).
            record = await self._store.agents.get_agent(agent.name)
            if record is None:
                raise NotFound(f"no agent named {agent.name}") from None
            return record, None
        info = node_type_from_pb(response)
        last_error = ""
        if info.type and info.type != agent.type:
            last_error = (
                f"registered as type {agent.type} but the agent says it manages {info.type} nodes"
            )
        await self._store.agents.set_agent_status(agent.name, status=CONNECTED, last_error=last_error)
        record = await self._store.agents.get_agent(agent.name)
        if record is None:
            raise NotFound(f"no agent named {agent.name}")
        return record, info

    # -- the calls -------------------------------------------------------------------------

    async def get_nodes(self, agent: AgentRecord) -> dict[str, dict[str, str]]:
        response = await self._call(agent, "GetNodes", pb.GetNodesRequest())
        return {node.name: dict(node.properties) for node in response.nodes}

    async def describe(self, agent: AgentRecord) -> NodeTypeInfo:
        response = await self._call(agent, "DescribeNodeType", pb.DescribeNodeTypeRequest())
        return node_type_from_pb(response)

    async def environments(self, agent: AgentRecord) -> list[Environment]:
        response = await self._call(agent, "ListEnvironments", pb.ListEnvironmentsRequest())
        return [environment_from_pb(e, agent.name, agent.type) for e in response.environments]

    async def action_states(self, agent: AgentRecord, nodes: Iterable[str]) -> dict[str, ActionState]:
        """The current action of each named node that has one: ONE call for all of them."""
        request = pb.GetActionStateRequest(node_names=sorted(set(nodes)))
        response = await self._call(agent, "GetActionState", request)
        return {msg.node_name: action_from_pb(msg) for msg in response.actions}

    async def start_action(
        self,
        agent: AgentRecord,
        node: str,
        process: str,
        *,
        environment: str = "",
        properties: Mapping[str, str] | None = None,
    ) -> ActionState:
        request = pb.StartActionRequest(
            node_name=node, process=process, environment=environment, properties=dict(properties or {})
        )
        response = await self._call(agent, "StartAction", request)
        return action_from_pb(response.action)

    async def put_environment(self, agent: AgentRecord, env: Environment) -> Environment:
        response = await self._call(
            agent, "PutEnvironment", pb.PutEnvironmentRequest(environment=environment_to_pb(env))
        )
        return environment_from_pb(response.environment, agent.name, agent.type)

    async def remove_environment(self, agent: AgentRecord, name: str) -> None:
        await self._call(agent, "RemoveEnvironment", pb.RemoveEnvironmentRequest(name=name))

    async def add_node(self, agent: AgentRecord, node: str, properties: Mapping[str, str]) -> None:
        await self._call(
            agent, "AddNode", pb.AddNodeRequest(node_name=node, properties=dict(properties))
        )

    async def remove_node(self, agent: AgentRecord, node: str) -> None:
        await self._call(agent, "RemoveNode", pb.RemoveNodeRequest(node_name=node))

    async def rename_node(self, agent: AgentRecord, node: str, new_name: str) -> None:
        await self._call(agent, "RenameNode", pb.RenameNodeRequest(node_name=node, new_name=new_name))


async def gather_agents(
    agents: Iterable[AgentRecord], call: Callable[[AgentRecord], Awaitable[T]]
) -> dict[str, T | ServiceError]:
    """Runs `call` on every agent concurrently; each agent's result or its ServiceError.

    One hung agent costs the whole gather one deadline, never one per agent.
    """
    agents = list(agents)

    async def one(agent: AgentRecord) -> T | ServiceError:
        try:
            return await call(agent)
        except ServiceError as exc:
            return exc

    results = await asyncio.gather(*(one(agent) for agent in agents))
    return {agent.name: result for agent, result in zip(agents, results)}
