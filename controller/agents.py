"""Agents: registering, listing, reconnecting and deleting them (administrators only), and
recording what every call to an agent ended with (AgentCallRecorder)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from edgebed.controller import validation
from edgebed.controller.agent_client import WRONG_TOKEN, AgentClient, CallOutcome, cleared_by
from edgebed.controller.authz import Authz
from edgebed.controller.domain import CONNECTED, DISCONNECTED, AgentInfo, AgentRecord, User
from edgebed.controller.errors import AgentUnavailable, Conflict, InvalidInput, NotFound
from edgebed.controller.inventory import Inventory, refuse_reserved
from edgebed.controller.metrics import Metrics
from edgebed.controller.store import AgentRepository, InstanceRecord, LeaseRecord, Store
from edgebed.tls import TlsError, normalized_ca_pem

log = logging.getLogger(__name__)

AGENT_TYPES = ("raspberry", "node", "sensor")


def _info(agent: AgentRecord, node_count: int) -> AgentInfo:
    return AgentInfo(
        name=agent.name,
        type=agent.type,
        ip=agent.ip,
        port=agent.port,
        status=agent.status,
        last_error=agent.last_error,
        node_count=node_count,
        tls=agent.tls,
    )


def _check_address(ip: object, port: object) -> tuple[str, int]:
    if not isinstance(ip, str) or not ip.strip() or len(ip) > 255 or any(c.isspace() or c in "/@" for c in ip.strip()):
        raise InvalidInput("the agent address must be a host name or an IP address")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidInput("the agent port must be a number between 1 and 65535")
    return ip.strip().strip("[]"), port


def _check_token(token: object) -> str:
    if not isinstance(token, str) or not token.strip() or len(token) > 4096:
        raise InvalidInput("the agent token must not be empty")
    token = token.strip()
    # gRPC sends only printable ASCII in a header, and refuses anything else with an exception
    # that is no RpcError; agents refuse whitespace in their token.
    if not all("!" <= char <= "~" for char in token):
        raise InvalidInput("the agent token must be printable ASCII without spaces")
    return token


def _check_ca(ca_pem: object) -> str:
    """'' (plaintext) or the PEM certificates, re-encoded, that the agent's certificate must
    chain to (a CA bundle, or the agent's own certificate, pinned)."""
    if ca_pem is None or (isinstance(ca_pem, str) and not ca_pem.strip()):
        return ""
    if not isinstance(ca_pem, str):
        raise InvalidInput("the agent's CA must be PEM text")
    try:
        return normalized_ca_pem(ca_pem, "the agent's CA")
    except TlsError as exc:
        raise InvalidInput(str(exc)) from None


class AgentCallRecorder:
    """The AgentClient's observer: records each call's outcome in the metrics, and the agent's
    status and last_error in the store.

    - OK: clears a last_error an earlier failed call left, a bad reply only when it was to the
      same method (a probe's success is recorded by Agents, which also checks the agent's node
      type).
    - UNAVAILABLE, DEADLINE_EXCEEDED: `disconnected`, with the reason; but not a deadline that
      passed long before the call ended (CallOutcome.stalled: the controller was held up), nor
      a failure seen after this controller's lease on the agent ran out (`drives`).
    - UNAUTHENTICATED: last_error "wrong token", written once while it stays wrong; the status is
      kept (the agent answered).
    - the agent refused the request (NOT_FOUND, INVALID_ARGUMENT, ...): nothing but the metrics.
    - a bad reply (BAD_REPLY: the reply failed controller/replies.py, nothing of it was
      stored): last_error "bad reply to METHOD: what is wrong", written when it changes; the
      status is kept, since the agent answers and its other replies may be good (a bad
      DescribeNodeType on a reconnect leaves it as it was: disconnected until it describes
      itself well).
    - any other code: last_error "agent error: CODE: details", written when it changes.
    """

    def __init__(self, agents: AgentRepository, metrics: Metrics,
                 drives: Callable[[str], bool] | None = None) -> None:
        self._agents = agents
        self._metrics = metrics
        # With leases (controller/leases.py): whether this controller still holds the agent's
        # lease, on its own clock. None: no leases in this process; every agent is its own.
        self.drives = drives

    async def __call__(self, outcome: CallOutcome) -> None:
        agent = outcome.agent
        label = "ok" if outcome.ok else outcome.code.lower()
        self._metrics.record_call(agent.name, outcome.method, label, outcome.seconds)
        if outcome.ok:
            if not outcome.probe and cleared_by(agent.last_error, outcome.method):
                await self._agents.set_agent_status(agent.name, last_error="")
        elif outcome.stalled:
            # A controller paused past its lease (SIGSTOP, a stalled VM) must not flag an agent
            # another controller drives meanwhile: the agent may have answered in time.
            log.warning(
                "call %s to agent %s ended %.1f s after its %.1f s deadline: this controller was held up; "
                "the agent is not flagged", outcome.method, agent.name, outcome.seconds, outcome.timeout,
            )
        elif outcome.lost and not outcome.probe and self.drives is not None and not self.drives(agent.name):
            # Our lease ran out while the call was under way (this controller was paused or
            # starved past it): another controller drives the agent now and judges it. Flagging
            # it would stop that controller's work on the agent until an administrator
            # reconnects it.
            log.warning(
                "call %s to agent %s failed (%s) after this controller's lease on it ran out: "
                "the agent is not flagged", outcome.method, agent.name, outcome.code,
            )
        elif outcome.lost:
            await self._agents.set_agent_status(agent.name, status=DISCONNECTED, last_error=outcome.reason)
            log.warning("agent %s flagged disconnected: %s", agent.name, outcome.reason)
        elif outcome.rejected_token:
            if agent.last_error != WRONG_TOKEN:
                await self._agents.set_agent_status(agent.name, last_error=WRONG_TOKEN)
                log.warning("agent %s rejected the controller's token", agent.name)
        elif not outcome.refused_request and agent.last_error != outcome.reason:
            await self._agents.set_agent_status(agent.name, last_error=outcome.reason)
            if outcome.bad_reply:
                log.warning("agent %s: refused its reply: %s", agent.name, outcome.reason)
            else:
                log.warning("agent %s: %s failed: %s", agent.name, outcome.method, outcome.reason)


class Agents:
    def __init__(self, store: Store, client: AgentClient, inventory: Inventory, authz: Authz) -> None:
        self._store = store
        self._client = client
        self._inventory = inventory
        self._authz = authz

    async def _info(self, name: str) -> AgentInfo:
        agent = await self._store.agents.get_agent(name)
        if agent is None:
            raise NotFound(f"no agent named {name}")
        counts = await self._store.inventory.node_counts()
        return _info(agent, counts.get(name, 0))

    async def drivers(
        self, actor: User, lease_seconds: float
    ) -> tuple[list[InstanceRecord], dict[str, LeaseRecord]]:
        """For administrators: the controllers sharing the database (alive: a heartbeat within
        `lease_seconds`) and each agent's lease ({agent name or LEADER: lease}) as the database's
        clock sees them (controller/leases.py)."""
        await self._authz.require_admin(actor)
        instances = await self._store.leases.instances(lease_seconds)
        return instances, {lease.agent: lease for lease in await self._store.leases.leases()}

    async def list_agents(self, actor: User) -> list[AgentInfo]:
        await self._authz.require_admin(actor)
        counts = await self._store.inventory.node_counts()
        return [_info(agent, counts.get(agent.name, 0)) for agent in await self._store.agents.list_agents()]

    async def add_agent(
        self, actor: User, name: str, type: str, ip: str, port: int, token: str, ca_pem: str = ""
    ) -> AgentInfo:
        admin = await self._authz.require_admin(actor)
        info = await self.register(name, type, ip, port, token, ca_pem)
        log.info("%s added agent %s (%s%s)", admin.email, info.name, info.status, ", TLS" if info.tls else "")
        return info

    async def register(
        self, name: str, type: str, ip: str, port: int, token: str, ca_pem: str = ""
    ) -> AgentInfo:
        """Adds an agent and calls it once: `connected` if it answers, else kept `disconnected`
        with the reason in last_error. For the CLI (trusted) and add_agent.

        `ca_pem`: "" to call the agent in plaintext, else PEM certificates (at most 64 KiB) the
        agent's certificate must chain to — the CA that issued it, or that certificate itself —
        and then every call goes over TLS, checking that the certificate names `ip`.
        InvalidInput when it is no PEM certificate or one has expired."""
        name = validation.name(name, "agent")
        if type not in AGENT_TYPES:
            raise InvalidInput(f"the agent type must be one of {', '.join(AGENT_TYPES)}")
        ip, port = _check_address(ip, port)
        record = AgentRecord(
            name=name, type=type, ip=ip, port=port, status=DISCONNECTED, token=_check_token(token), last_error="",
            ca_pem=_check_ca(ca_pem),
        )
        await self._store.agents.add_agent(record)
        await self._connect(record)
        return await self._info(name)

    async def _connect(self, agent: AgentRecord) -> AgentRecord:
        """Probes the agent: `connected` when it answers (then refreshes its nodes and catalog),
        else left as the call recorder wrote it (disconnected, or "wrong token"). Returns the
        record as stored afterwards; NotFound when it was deleted meanwhile."""
        try:
            info = await self._client.probe(agent)
        except AgentUnavailable:
            return await self._record(agent.name)
        last_error = ""
        if info.type and info.type != agent.type:
            last_error = f"registered as type {agent.type} but the agent says it manages {info.type} nodes"
        await self._store.agents.set_agent_status(agent.name, status=CONNECTED, last_error=last_error)
        record = await self._record(agent.name)
        if record.status == CONNECTED:
            await self._inventory.refresh([record], catalogs=True)
        return record

    async def _record(self, name: str) -> AgentRecord:
        record = await self._store.agents.get_agent(name)
        if record is None:
            raise NotFound(f"no agent named {name}")
        return record

    async def reconnect(self, actor: User, name: str) -> AgentInfo:
        admin = await self._authz.require_admin(actor)
        agent = await self._store.agents.get_agent(name)
        if agent is None:
            raise NotFound(f"no agent named {name}")
        if not agent.token:
            # Its stored token cannot be opened (store.agents.UNREADABLE_TOKEN): a call would
            # only be refused, and the reason replaced by "wrong token".
            raise Conflict(f"agent {name}: {agent.last_error}")
        record = await self._connect(agent)
        log.info("%s reconnected agent %s: %s", admin.email, name, record.status)
        return await self._info(name)

    async def delete_agent(self, actor: User, name: str) -> None:
        """Forgets an agent with its cached nodes. Conflict, saying which, while one of its
        nodes has a reservation: the next user would get that node unwiped (controller/
        maintenance.py removes one that has, once they are destroyed). NotFound for an unknown
        agent."""
        admin = await self._authz.require_admin(actor)
        nodes = [node.name for node in await self._store.inventory.list_nodes() if node.agent == name]
        refuse_reserved(f"agent {name}", await self._store.schedule.list_schedule(nodes=nodes))
        if not await self._store.agents.delete_agent(name):
            raise NotFound(f"no agent named {name}")
        await self._client.forget(name)
        log.info("%s deleted agent %s", admin.email, name)
