"""The controller's side of the gRPC contract: the only code that touches the generated stubs.

One grpc.aio channel per agent, with its own subchannel pool: a TLS channel when the agent's
record has a CA (`ca_pem`: its certificate must chain to it and name the agent's ip), presenting
the controller's client identity (settings.client_identity()) to agents that ask for one; else a
plaintext one. A client interceptor on that
channel (`BearerDeadline`) attaches `authorization: Bearer <token>` and the deadline
(settings.call_timeout_seconds, 6 s by default) to every call; the calls themselves are the
stub's typed methods.

Each call's outcome (agent, method, status code, latency) is reported to the `CallObserver` the
client was built with, and awaited before the call returns or raises, so what the observer
records (metrics, the agent's status and last_error: controller.agents.AgentCallRecorder) is in
place when the caller sees the result. This module writes nothing itself. Failures are raised as:

- UNAVAILABLE or DEADLINE_EXCEEDED: AgentUnavailable; the agent is lost, and this client does
  not call it again until it is probed (an administrator reconnects it) or forgotten.
  A failed TLS handshake is UNAVAILABLE too; its reason says so ("TLS handshake failed: ...").
- UNAUTHENTICATED: AgentRejectedToken (the agent answered, so it is not lost).
- NOT_FOUND, INVALID_ARGUMENT/OUT_OF_RANGE, FAILED_PRECONDITION/ALREADY_EXISTS: NotFound,
  InvalidInput, Conflict with the agent's message.
- anything else: AgentUnavailable naming the code.
- a reply that fails the checks of controller/replies.py: BadReply (a subclass of
  AgentUnavailable) naming what is wrong; the outcome's code is BAD_REPLY, and nothing of the
  reply goes further. Actions are checked against the agent's node type description, which this
  client keeps from the last DescribeNodeType (asked first when it has none).

Each raised ServiceError carries the gRPC code name in `.code` so the scheduler can branch on it.
Calls to different agents run concurrently (`gather_agents`). Protobuf messages are converted
to domain types here, checked (controller/replies.py), and go no further.

Admission: at most `max_calls` calls are in flight in all and `max_calls_per_agent` per agent;
a call beyond either waits in this process's queue (first come, first served) before it is
sent. Its deadline starts only when it is sent (the interceptor sets it then), so a call that
waited behind the controller's own load never runs out of time there, and never gets the agent
flagged: only a deadline that expired on the wire counts against the agent. The bound also
keeps the controller's event loop from taking on more replies at once than it can read within
a deadline.

StartActions: the scheduler starts each agent's actions with one StartActions call (chunks of
at most MAX_START_BATCH items) and gets one result per item; an agent that answers
UNIMPLEMENTED (an older agent) is remembered and sent StartAction per node instead, until it
is probed again (a reconnect) or forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from edgebed.controller import replies
from edgebed.controller.domain import (
    CONNECTED,
    ActionState,
    AgentRecord,
    Environment,
    NodeTypeInfo,
    PropertySpec,
)
from edgebed.controller.errors import (
    AgentRejectedToken,
    AgentUnavailable,
    BadReply,
    Conflict,
    InvalidInput,
    NotFound,
    ServiceError,
)
from edgebed.tls import Identity
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc as pb_grpc

T = TypeVar("T")
R = TypeVar("R")

# Items per StartActions call: the contract's limit (protos/edgebed/v1/agent.proto).
MAX_START_BATCH = 1000
# Calls in flight, in all and per agent, unless the settings say otherwise
# ([agents] max_calls, max_calls_per_agent).
MAX_CALLS = 64
MAX_CALLS_PER_AGENT = 4

OK = "OK"
# Not a gRPC code: the call succeeded but its reply failed the checks of controller/replies.py.
BAD_REPLY = "BAD_REPLY"
BAD_REPLY_PREFIX = "bad reply to "
WRONG_TOKEN = "wrong token"
# Codes after which the agent is taken as lost (flagged disconnected).
LOST_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})
# Codes by which the agent answers about the request itself: the agent is fine.
_REQUEST_ERRORS: dict[str, type[ServiceError]] = {
    "NOT_FOUND": NotFound,
    "INVALID_ARGUMENT": InvalidInput,
    "OUT_OF_RANGE": InvalidInput,
    "FAILED_PRECONDITION": Conflict,
    "ALREADY_EXISTS": Conflict,
}
# Beginnings of the texts CallOutcome.reason gives; a later successful call clears them.
TLS_FAILED = "TLS handshake failed"
_REASON_PREFIXES = (WRONG_TOKEN, "no answer", "unavailable", "agent error", TLS_FAILED, BAD_REPLY_PREFIX)
_MAX_REASON = 500


def is_call_error(text: str) -> bool:
    """Whether an agent's last_error is one that CallOutcome.reason wrote (and a success clears)."""
    return text.startswith(_REASON_PREFIXES)


# A good reply to the key also clears a bad reply to these: they report the same things (an
# action StartAction started is reported by GetActionState, an environment PutEnvironment stored
# is listed by ListEnvironments).
_ALSO_CLEARS = {
    "GetActionState": ("StartAction", "StartActions"),
    "StartActions": ("StartAction",),
    "ListEnvironments": ("PutEnvironment",),
}


def cleared_by(text: str, method: str) -> bool:
    """Whether a successful call of `method` clears the agent's last_error `text`: any success
    clears a failed call's reason, but a bad reply is cleared only by a good reply to the same
    method (or to one that reports the same things, _ALSO_CLEARS): a good GetNodes says nothing
    about GetActionState."""
    if text.startswith(BAD_REPLY_PREFIX):
        return any(text.startswith(f"{BAD_REPLY_PREFIX}{m}:") for m in (method, *_ALSO_CLEARS.get(method, ())))
    return is_call_error(text)


@dataclass(frozen=True)
class CallOutcome:
    """How one call to an agent ended, as the transport reports it to its observer.

    agent: the record the call was made with (status and last_error as read before the call).
    method: the RPC name, e.g. "GetNodes".
    code: the gRPC status code name: "OK", "UNAVAILABLE", "DEADLINE_EXCEEDED", ..., or BAD_REPLY
      when the call succeeded but its reply failed the checks.
    details: the status details from the agent or from gRPC, or what is wrong with the reply
      ("" when OK).
    seconds: the call's latency on the monotonic clock.
    timeout: the deadline the call had, in seconds.
    probe: True for a reconnect's probe, which was made whatever the agent's status.
    """

    agent: AgentRecord
    method: str
    code: str
    details: str
    seconds: float
    timeout: float
    probe: bool = False

    @property
    def ok(self) -> bool:
        return self.code == OK

    @property
    def lost(self) -> bool:
        """The agent did not answer: it is to be flagged disconnected."""
        return self.code in LOST_CODES

    @property
    def stalled(self) -> bool:
        """The deadline passed long before the call ended: the CONTROLLER was held up (paused,
        starved), not the agent, which says nothing about the agent."""
        return self.code == "DEADLINE_EXCEEDED" and self.seconds > 2 * self.timeout + 1

    @property
    def rejected_token(self) -> bool:
        return self.code == "UNAUTHENTICATED"

    @property
    def bad_reply(self) -> bool:
        """The agent answered, with a reply the controller refused (nothing of it stored)."""
        return self.code == BAD_REPLY

    @property
    def refused_request(self) -> bool:
        """The agent answered that the request is wrong (unknown node, busy, ...): it is fine."""
        return self.code in _REQUEST_ERRORS

    @property
    def reason(self) -> str:
        """The agent's last_error after this call: "" when OK or when the agent refused the
        request; else a short text, at most 500 characters, that is_call_error recognizes."""
        if self.ok or self.refused_request:
            return ""
        if self.rejected_token:
            return WRONG_TOKEN
        if self.code == "DEADLINE_EXCEEDED":
            return f"no answer within {self.timeout:g} s ({self.method})"
        if self.code == "UNAVAILABLE":
            tls_problem = tls_failure(self.details, self.agent)
            if tls_problem:
                return f"{TLS_FAILED}: {tls_problem}"[:_MAX_REASON]
            if _closed_while_connecting(self.details):
                return f"unavailable: {self.details} (if the agent serves TLS, register its CA)"[:_MAX_REASON]
            return f"unavailable: {self.details}"[:_MAX_REASON]
        if self.bad_reply:
            return f"{BAD_REPLY_PREFIX}{self.method}: {self.details}"[:_MAX_REASON]
        return f"agent error: {self.code}: {self.details}"[:_MAX_REASON]


def _closed_while_connecting(details: str) -> bool:
    # What gRPC says when the peer hangs up during the connection's set-up: a TLS agent does so
    # on a plaintext caller, and a mutual-TLS agent on a caller whose certificate it refuses.
    return "failed to connect" in details and "Socket closed" in details


def tls_failure(details: str, agent: AgentRecord) -> str:
    """What went wrong in the TLS handshake with `agent`, from an UNAVAILABLE call's details
    (gRPC's text); "" when the failure was no TLS one."""
    if "Hostname Verification" in details:
        return f"the agent's certificate does not name {agent.ip} (issue it with --ip or --dns {agent.ip})"
    marker = "CERTIFICATE_VERIFY_FAILED"
    if marker in details:
        why = details.split(marker, 1)[1].strip(": ").split(":", 1)[0].strip()
        return f"the agent's certificate does not verify against its registered CA ({why or marker})"
    if "WRONG_VERSION_NUMBER" in details:
        return "the agent does not speak TLS (no tls_cert in its configuration?); register it without a CA"
    if agent.tls and _closed_while_connecting(details):
        return (
            "the agent closed the connection: it requires a client certificate and refused the controller's, "
            "or the controller has none ([agents] tls_client_cert, tls_client_key)"
        )
    if "andshake failed" in details:
        return details
    return ""


# Receives every call's outcome; awaited before the call returns or raises.
CallObserver = Callable[[CallOutcome], Awaitable[None]]


def error_for(outcome: CallOutcome) -> ServiceError:
    """The ServiceError a failed call raises; `.code` holds the gRPC code name."""
    name = outcome.agent.name
    if outcome.lost:
        return AgentUnavailable(
            f"agent {name} did not answer ({outcome.reason}); it is now disconnected", code=outcome.code
        )
    if outcome.rejected_token:
        return AgentRejectedToken(
            f"agent {name} rejected the controller's token (wrong token)", code=outcome.code
        )
    if outcome.bad_reply:
        return BadReply(f"agent {name} sent a bad reply to {outcome.method}: {outcome.details}", code=outcome.code)
    request_error = _REQUEST_ERRORS.get(outcome.code)
    if request_error is not None:
        return request_error(outcome.details, code=outcome.code)
    return AgentUnavailable(f"agent {name} failed: {outcome.code}: {outcome.details}", code=outcome.code)


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
        duration_seconds=msg.duration_seconds,
        last_error=msg.last_error,
    )


def node_type_from_pb(msg: pb.DescribeNodeTypeResponse) -> NodeTypeInfo:
    """The checked description (BadReply when it fails replies.node_type)."""
    return replies.node_type(
        msg.type,
        [(p.name, list(p.states)) for p in msg.processes],
        [
            PropertySpec(
                name=p.name,
                required=p.required,
                values=list(p.values),
                secret=p.secret,
                description=p.description,
                label=p.label,
                help=p.help,
                min_length=p.min_length,
                max_length=p.max_length,
                pattern=p.pattern,
            )
            for p in msg.properties
        ],
        list(msg.final_states),
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


class BearerDeadline(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds `authorization: Bearer <token>` and the deadline to every call on one agent's channel.

    The one place where both are attached: a call made on the channel without a timeout gets
    `timeout` seconds; one with a shorter timeout keeps it.
    """

    def __init__(self, token: str, timeout: float) -> None:
        self._bearer = f"Bearer {token}"
        self._timeout = timeout

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[grpc.aio.UnaryUnaryCall]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> grpc.aio.UnaryUnaryCall:
        timeout = client_call_details.timeout
        details = grpc.aio.ClientCallDetails(
            method=client_call_details.method,
            timeout=self._timeout if timeout is None else min(timeout, self._timeout),
            metadata=grpc.aio.Metadata(
                *(client_call_details.metadata or ()), ("authorization", self._bearer)
            ),
            credentials=client_call_details.credentials,
            wait_for_ready=client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


class _Connection:
    """One agent's channel and stub, for one address, token and CA."""

    def __init__(
        self,
        address: str,
        token: str,
        timeout: float,
        ca_pem: str = "",
        identity: Identity | None = None,
        caller: str = "",
    ) -> None:
        self.address = address
        self.token = token
        self.ca_pem = ca_pem
        # A channel of its own subchannels: from gRPC's shared pool, a new channel would inherit
        # the reconnect back-off of an earlier channel to the same address, and refuse an agent
        # that has just come back (a reconnect right after the agent was started).
        options: tuple[tuple[str, Any], ...] = (("grpc.use_local_subchannel_pool", 1),)
        if caller:
            # The user-agent names the calling controller, for the agent's log (`log_calls`)
            # when several controllers share the agents.
            options += (("grpc.primary_user_agent", f"edgebed-controller/{caller}"),)
        interceptors = [BearerDeadline(token, timeout)]
        if ca_pem:
            # gRPC checks the agent's certificate against ca_pem and the host part of `address`
            # (the agent's registered ip or host name) against its subjectAltName, so no
            # target-name override: the certificate must name the address the controller dials.
            credentials = grpc.ssl_channel_credentials(
                root_certificates=ca_pem.encode("ascii"),
                private_key=identity.private_key if identity else None,
                certificate_chain=identity.certificate_chain if identity else None,
            )
            self.channel = grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)
        else:
            self.channel = grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
        self.stub = pb_grpc.AgentStub(self.channel)


@dataclass(frozen=True)
class StartItem:
    """One action to start: StartAction's fields."""

    node: str
    process: str
    environment: str = ""
    properties: Mapping[str, str] = field(default_factory=dict)


class _Unimplemented(Exception):
    """The agent does not serve the method (UNIMPLEMENTED): an older agent."""


class AgentClient:
    """Calls agents; reports every call's outcome to `observer` (see CallOutcome)."""

    def __init__(
        self,
        observer: CallObserver,
        *,
        timeout: float = 6.0,
        identity: Identity | None = None,
        caller: str = "",
        max_calls: int = MAX_CALLS,
        max_calls_per_agent: int = MAX_CALLS_PER_AGENT,
    ) -> None:
        """`identity`: the client certificate and key presented to agents that have a CA set
        (settings.client_identity()); agents without a CA are called in plaintext. `caller`:
        this controller's instance id (controller/leases.py), sent in the user-agent.
        `max_calls`, `max_calls_per_agent`: calls in flight in all and per agent (>= 1); more
        wait in this process's queue, their deadline not started (see the module docstring)."""
        if max_calls < 1 or max_calls_per_agent < 1:
            raise ValueError("max_calls and max_calls_per_agent must be at least 1")
        self._observer = observer
        self._caller = caller
        self.timeout = timeout
        self._identity = identity
        self._max_calls_per_agent = max_calls_per_agent
        self._slots = asyncio.Semaphore(max_calls)
        self._agent_slots: dict[str, asyncio.Semaphore] = {}
        # Agents that answered StartActions with UNIMPLEMENTED: sent StartAction per node.
        self._no_batch: set[str] = set()
        self._connections: dict[str, _Connection] = {}
        # Each agent's node type as its last good DescribeNodeType said: what its actions are
        # checked against. Refreshed by every describe() (the inventory refresh, a reconnect).
        self._node_types: dict[str, NodeTypeInfo] = {}
        # Agents lost (UNAVAILABLE, DEADLINE_EXCEEDED) since their record was read, so a poll
        # that still holds an old `connected` record does not call them again; and when each
        # was found lost (time.monotonic(), once its status was written), for readmit().
        self._lost: set[str] = set()
        self._lost_at: dict[str, float] = {}

    async def close(self) -> None:
        connections, self._connections = self._connections, {}
        await asyncio.gather(*(c.channel.close() for c in connections.values()))

    async def forget(self, name: str) -> None:
        """Closes the channel of an agent that was deleted or changed address."""
        connection = self._connections.pop(name, None)
        self._lost.discard(name)
        self._lost_at.pop(name, None)
        self._node_types.pop(name, None)
        self._no_batch.discard(name)
        if connection is not None:
            await connection.channel.close()

    def _stub(self, agent: AgentRecord) -> pb_grpc.AgentStub:
        connection = self._connections.get(agent.name)
        wanted = (agent.address, agent.token, agent.ca_pem)
        if connection is None or (connection.address, connection.token, connection.ca_pem) != wanted:
            if connection is not None:
                # The address, token or CA changed: the old channel closes in the background.
                asyncio.get_running_loop().create_task(connection.channel.close())
            connection = _Connection(
                agent.address, agent.token, self.timeout, agent.ca_pem, self._identity, self._caller
            )
            self._connections[agent.name] = connection
        return connection.stub

    def usable(self, agent: AgentRecord) -> bool:
        """Whether calls go to this agent: connected, and not lost since the record was read."""
        return agent.status == CONNECTED and agent.name not in self._lost

    def readmit(self, agents: Iterable[AgentRecord], read_at: float) -> None:
        """Takes back the agents found lost by this process whose record, read from the store at
        `read_at` (time.monotonic(), taken before the read began), says `connected`: another
        process (the web one, when the scheduler runs in a process of its own) reconnected them
        after this process wrote them `disconnected`. An agent lost after `read_at` stays lost."""
        for agent in agents:
            lost_at = self._lost_at.get(agent.name)
            if agent.status == CONNECTED and lost_at is not None and lost_at < read_at:
                self._lost.discard(agent.name)
                self._lost_at.pop(agent.name, None)

    @contextlib.asynccontextmanager
    async def _admitted(self, agent: str) -> AsyncIterator[None]:
        """Holds one of the agent's slots and one of all the slots while a call is in flight;
        waits (first come, first served) until both are free. The agent's slot is taken first,
        so a call waiting for its own agent never holds one of the slots every agent shares."""
        agent_slots = self._agent_slots.get(agent)
        if agent_slots is None:
            agent_slots = self._agent_slots[agent] = asyncio.Semaphore(self._max_calls_per_agent)
        async with agent_slots, self._slots:
            yield

    async def _call(
        self,
        agent: AgentRecord,
        method: str,
        invoke: Callable[[pb_grpc.AgentStub], Awaitable[R]],
        convert: Callable[[R], T],
        *,
        probe: bool = False,
        unimplemented_ok: bool = False,
    ) -> T:
        """Runs `invoke(stub)` (one typed stub call named `method`) once admitted (see the module
        docstring), converts and checks its reply with `convert`, reports the outcome and
        returns what `convert` made.

        Raises AgentUnavailable at once, without a call, when the agent is not usable (unless
        probing), and the ServiceError of error_for() when the call fails or `convert` raises
        BadReply. With `unimplemented_ok`, an UNIMPLEMENTED answer raises _Unimplemented and is
        not reported (asking is how the client learns what an agent serves).
        """
        if not probe and not self.usable(agent):
            raise AgentUnavailable(
                f"agent {agent.name} is disconnected; an administrator can reconnect it",
                code="UNAVAILABLE",
            )
        async with self._admitted(agent.name):
            if not probe and not self.usable(agent):
                # Lost by another call while this one waited for its turn.
                raise AgentUnavailable(
                    f"agent {agent.name} is disconnected; an administrator can reconnect it",
                    code="UNAVAILABLE",
                )
            stub = self._stub(agent)
            # The deadline starts now, when the call is sent (the interceptor sets it): the time
            # it waited for a slot is the controller's, not the agent's.
            started = time.monotonic()
            try:
                response = await invoke(stub)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if unimplemented_ok and code == grpc.StatusCode.UNIMPLEMENTED:
                    raise _Unimplemented(method) from None
                outcome = CallOutcome(
                    agent, method, code.name, exc.details() or code.name,
                    time.monotonic() - started, self.timeout, probe,
                )
                if outcome.lost:
                    self._lost.add(agent.name)
                await self._observer(outcome)
                if outcome.lost:
                    self._lost_at[agent.name] = time.monotonic()
                raise error_for(outcome) from None
            seconds = time.monotonic() - started
        try:
            result = convert(response)
        except BadReply as exc:
            outcome = CallOutcome(agent, method, BAD_REPLY, exc.message, seconds, self.timeout, probe)
            await self._observer(outcome)
            raise error_for(outcome) from None
        await self._observer(CallOutcome(agent, method, OK, "", seconds, self.timeout, probe))
        return result

    # -- the calls -------------------------------------------------------------------------

    async def probe(self, agent: AgentRecord) -> NodeTypeInfo:
        """DescribeNodeType on a fresh channel, whatever the agent's status (a reconnect).

        Raises like any call (AgentUnavailable, AgentRejectedToken, BadReply, ...); on success
        the agent is usable again once its record says `connected`.
        """
        # A fresh channel: the old one may sit in gRPC's reconnect back-off after failures,
        # and would refuse at once an agent that has just come back.
        await self.forget(agent.name)
        request = pb.DescribeNodeTypeRequest()
        info = await self._call(
            agent, "DescribeNodeType", lambda stub: stub.DescribeNodeType(request), node_type_from_pb, probe=True
        )
        self._node_types[agent.name] = info
        return info

    async def get_nodes(self, agent: AgentRecord) -> dict[str, dict[str, str]]:
        """{node name: properties} of every node of the agent."""
        request = pb.GetNodesRequest()
        return await self._call(
            agent,
            "GetNodes",
            lambda stub: stub.GetNodes(request),
            lambda response: replies.nodes([(node.name, dict(node.properties)) for node in response.nodes]),
        )

    async def describe(self, agent: AgentRecord) -> NodeTypeInfo:
        request = pb.DescribeNodeTypeRequest()
        info = await self._call(
            agent, "DescribeNodeType", lambda stub: stub.DescribeNodeType(request), node_type_from_pb
        )
        self._node_types[agent.name] = info
        return info

    async def _described(self, agent: AgentRecord) -> NodeTypeInfo:
        """The agent's node type from its last good description; asked now when there is none."""
        info = self._node_types.get(agent.name)
        return info if info is not None else await self.describe(agent)

    async def environments(self, agent: AgentRecord) -> list[Environment]:
        request = pb.ListEnvironmentsRequest()
        return await self._call(
            agent,
            "ListEnvironments",
            lambda stub: stub.ListEnvironments(request),
            lambda response: replies.environments(
                [environment_from_pb(e, agent.name, agent.type) for e in response.environments]
            ),
        )

    async def action_states(self, agent: AgentRecord, nodes: Iterable[str]) -> dict[str, ActionState]:
        """The current action of each named node that has one: ONE call for all of them (and a
        DescribeNodeType first when the client has no description of the agent's node type)."""
        described = await self._described(agent)
        asked = sorted(set(nodes))
        request = pb.GetActionStateRequest(node_names=asked)
        return await self._call(
            agent,
            "GetActionState",
            lambda stub: stub.GetActionState(request),
            lambda response: replies.actions(
                [action_from_pb(msg) for msg in response.actions], described, set(asked)
            ),
        )

    async def start_action(
        self,
        agent: AgentRecord,
        node: str,
        process: str,
        *,
        environment: str = "",
        properties: Mapping[str, str] | None = None,
    ) -> ActionState:
        described = await self._described(agent)
        request = pb.StartActionRequest(
            node_name=node, process=process, environment=environment, properties=dict(properties or {})
        )
        return await self._call(
            agent,
            "StartAction",
            lambda stub: stub.StartAction(request),
            lambda response: replies.started(action_from_pb(response.action), described, node, process),
        )

    async def start_actions(
        self, agent: AgentRecord, items: Sequence[StartItem]
    ) -> list[ActionState | ServiceError]:
        """Starts every item (each node at most once), one result per item in their order: the
        new action (checked as StartAction's), or the ServiceError StartAction would have raised
        for it (Conflict for a busy node, InvalidInput, NotFound, ...).

        One StartActions call per MAX_START_BATCH items; an agent that does not serve it
        (UNIMPLEMENTED) gets StartAction per item, concurrently within its slots. A call that
        fails as a whole (no answer, a bad reply: any item's action failing the checks refuses
        the whole reply) gives its error for each of its items, which may have started: the
        caller leaves them in doubt.
        """
        if not items:
            return []
        if len({item.node for item in items}) != len(items):
            raise ValueError("each node at most once per StartActions")
        results: list[ActionState | ServiceError] = []
        for first in range(0, len(items), MAX_START_BATCH):
            chunk = items[first : first + MAX_START_BATCH]
            if agent.name not in self._no_batch:
                try:
                    results += await self._start_batch(agent, chunk)
                    continue
                except _Unimplemented:
                    self._no_batch.add(agent.name)
                except ServiceError as exc:
                    results += [exc] * len(chunk)
                    continue
            results += await asyncio.gather(*(self._start_one(agent, item) for item in chunk))
        return results

    async def _start_batch(self, agent: AgentRecord, items: Sequence[StartItem]) -> list[ActionState | ServiceError]:
        described = await self._described(agent)
        request = pb.StartActionsRequest(
            actions=[
                pb.StartActionRequest(
                    node_name=item.node, process=item.process, environment=item.environment,
                    properties=dict(item.properties),
                )
                for item in items
            ]
        )

        def convert(response: pb.StartActionsResponse) -> list[ActionState | ServiceError]:
            if len(response.results) != len(items):
                raise BadReply(f"results: {len(response.results)} of them for {len(items)} items")
            converted: list[ActionState | ServiceError] = []
            for index, (item, result) in enumerate(zip(items, response.results, strict=True)):
                if result.node_name != item.node:
                    raise BadReply(
                        f"result {index + 1}: it is of node {replies.shown(result.node_name)}, not of {item.node}"
                    )
                converted.append(_item_result(agent, item, result, described))
            return converted

        return await self._call(
            agent, "StartActions", lambda stub: stub.StartActions(request), convert, unimplemented_ok=True
        )

    async def _start_one(self, agent: AgentRecord, item: StartItem) -> ActionState | ServiceError:
        try:
            return await self.start_action(
                agent, item.node, item.process, environment=item.environment, properties=item.properties
            )
        except ServiceError as exc:
            return exc

    async def put_environment(self, agent: AgentRecord, env: Environment) -> Environment:
        request = pb.PutEnvironmentRequest(environment=environment_to_pb(env))
        return await self._call(
            agent,
            "PutEnvironment",
            lambda stub: stub.PutEnvironment(request),
            lambda response: replies.environment(environment_from_pb(response.environment, agent.name, agent.type)),
        )

    async def remove_environment(self, agent: AgentRecord, name: str) -> None:
        request = pb.RemoveEnvironmentRequest(name=name)
        await self._call(agent, "RemoveEnvironment", lambda stub: stub.RemoveEnvironment(request), _ignored)

    async def add_node(self, agent: AgentRecord, node: str, properties: Mapping[str, str]) -> None:
        request = pb.AddNodeRequest(node_name=node, properties=dict(properties))
        await self._call(agent, "AddNode", lambda stub: stub.AddNode(request), _ignored)

    async def remove_node(self, agent: AgentRecord, node: str) -> None:
        request = pb.RemoveNodeRequest(node_name=node)
        await self._call(agent, "RemoveNode", lambda stub: stub.RemoveNode(request), _ignored)

    async def rename_node(self, agent: AgentRecord, node: str, new_name: str) -> None:
        request = pb.RenameNodeRequest(node_name=node, new_name=new_name)
        await self._call(agent, "RenameNode", lambda stub: stub.RenameNode(request), _ignored)


def _item_result(
    agent: AgentRecord, item: StartItem, result: pb.StartActionResult, described: NodeTypeInfo
) -> ActionState | ServiceError:
    """One StartActions result: the checked action when its code is OK (BadReply when it fails
    the checks: the caller refuses the whole reply), else the error StartAction would have
    raised with that code."""
    code = _CODES_BY_VALUE.get(result.code, grpc.StatusCode.UNKNOWN)
    if code == grpc.StatusCode.OK:
        if not result.HasField("action"):
            raise BadReply(f"result for {item.node}: code OK without an action")
        return replies.started(action_from_pb(result.action), described, item.node, item.process)
    message = (replies.shown(result.message) if len(result.message) > _MAX_REASON else result.message) or code.name
    request_error = _REQUEST_ERRORS.get(code.name)
    if request_error is not None:
        return request_error(message, code=code.name)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AgentRejectedToken(f"agent {agent.name} rejected the controller's token (wrong token)", code=code.name)
    # The agent answered for the others: this item may or may not have started (in doubt),
    # and the agent is not lost.
    return AgentUnavailable(
        f"agent {agent.name} could not start {item.process} on {item.node}: {code.name}: {message}", code=code.name
    )


# grpc.StatusCode members by their numeric value (StartActionResult.code).
_CODES_BY_VALUE = {member.value[0]: member for member in grpc.StatusCode}


def _ignored(response: object) -> None:
    """The reply of a call whose answer the controller does not use (the node or environment
    it changed is read back by the next refresh, through the checks)."""


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
    return {agent.name: result for agent, result in zip(agents, results, strict=True)}
