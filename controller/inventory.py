"""The testbed's inventory: the node cache (GetNodes), node types (DescribeNodeType) and
environments (ListEnvironments) of every agent, the reservation timeline, and the admin's node
and environment management, which goes through the owning agent."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from edgebed.controller import replies, validation
from edgebed.controller.agent_client import AgentClient, gather_agents
from edgebed.controller.authz import Authz
from edgebed.controller.domain import (
    AgentCatalog,
    AgentRecord,
    Busy,
    Environment,
    NodeInfo,
    NodeMaintenance,
    NodeTypeInfo,
    ScheduleRecord,
    User,
)
from edgebed.controller.errors import AgentUnavailable, BadReply, Conflict, InvalidInput, NotFound, ServiceError
from edgebed.controller.store import WRITE_ERRORS, CachedNode, Store

log = logging.getLogger(__name__)

T = TypeVar("T")

DUPLICATE_PREFIX = "duplicate node names"
# An agent's property constraints the controller cannot apply (controller/validation.py).
CONSTRAINTS_PREFIX = "property constraints ignored"


def _node_info(node: CachedNode, maintenance: NodeMaintenance | None = None, retiring: bool = False) -> NodeInfo:
    return NodeInfo(
        name=node.name,
        agent=node.agent,
        type=node.type,
        properties=node.properties,
        connected=node.connected,
        maintenance=maintenance.reason if maintenance else "",
        maintenance_since=maintenance.since if maintenance else 0,
        retiring=retiring,
    )


class NodeList:
    """Every cached node (NodeInfo, by name) at one moment, shared by the requests that find
    nothing changed since (Inventory.node_list): never modify it or its nodes. `derived` keeps
    what a caller computes from the whole list (a page's filter menus, its sort), computed once
    per list."""

    def __init__(self, key: tuple[Any, ...], nodes: tuple[NodeInfo, ...]) -> None:
        self.key = key
        self.nodes = nodes
        self._derived: dict[str, Any] = {}

    def derived(self, name: str, compute: Callable[[tuple[NodeInfo, ...]], T]) -> T:
        """compute(nodes), computed on the first call for `name` and kept with the list."""
        if name not in self._derived:
            self._derived[name] = compute(self.nodes)
        return self._derived[name]


def _utc(epoch: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(epoch))


def reserved_text(records: Iterable[ScheduleRecord], limit: int = 10) -> str:
    """"NODE (OWNER, START to END UTC), ..." for a refusal that says which reservations stand
    in the way."""
    records = list(records)
    shown = ", ".join(
        f"{r.node_name} ({r.owner}, {_utc(r.start_date)} to {_utc(r.end_date)} UTC)" for r in records[:limit]
    )
    more = f" and {len(records) - limit} more" if len(records) > limit else ""
    return shown + more


FORCE_HINT = "remove it with force to end them with a destroy first"


def refuse_reserved(what: str, reserved: Sequence[ScheduleRecord], hint: str = FORCE_HINT) -> None:
    """Conflict "<what> has reservations: <which>; <hint>" when `reserved` is not empty."""
    if reserved:
        raise Conflict(f"{what} has reservations: {reserved_text(reserved)}; {hint}")


class Inventory:
    def __init__(self, store: Store, client: AgentClient, authz: Authz, *, clock: Callable[[], float]) -> None:
        self._store = store
        self._client = client
        self._authz = authz
        self._clock = clock
        # The last node list read (node_list), kept while nothing it is made of changes.
        self._node_list: NodeList | None = None

    def _now(self) -> int:
        return int(self._clock())

    # -- refreshing the cache -----------------------------------------------------------

    async def refresh(
        self, agents: Iterable[AgentRecord] | None = None, *, catalogs: bool = False
    ) -> dict[str, ServiceError | None]:
        """Calls GetNodes (and, with catalogs, DescribeNodeType and ListEnvironments) on every
        connected agent concurrently and updates the cache: one hung agent costs one deadline.
        Each agent's answers are written as soon as they are in, in a transaction of their own,
        so one agent's bad reply (refused by the client's checks) or data the database refuses
        leaves the others' cache refreshed, and a slow agent delays no one's write; the agent's
        last_error says what went wrong. Of two agents newly claiming one node name, the one
        written first keeps it (and keeps it afterwards); the other reports the duplicate.

        Returns {agent: None on success, or the error}.
        """
        if agents is None:
            agents = await self._store.agents.list_agents()
        usable = [agent for agent in agents if self._client.usable(agent)]
        # The node types the notes are about: the stored ones when this refresh asks for none.
        stored = {} if catalogs else await self.catalogs()

        async def fetch_and_save(agent: AgentRecord) -> None:
            calls: list[Awaitable[Any]] = [self._client.get_nodes(agent)]
            if catalogs:
                calls += [self._client.describe(agent), self._client.environments(agent)]
            # Every call ends (and its outcome is recorded) before the first error is raised.
            answers: list[Any] = []
            for result in await asyncio.gather(*calls, return_exceptions=True):
                if isinstance(result, BaseException):
                    raise result
                answers.append(result)
            catalog = AgentCatalog(agent.name, agent.type, answers[1], answers[2]) if catalogs else None
            try:
                duplicates = await self._store.inventory.save_inventory(
                    agent.name, agent.type, answers[0], catalog, self._now()
                )
            except WRITE_ERRORS as exc:
                raise await self._not_stored(agent, exc) from None
            known = catalog if catalog is not None else stored.get(agent.name)
            await self._report_notes(agent, duplicates, known.node_type if known is not None else None)

        done = await gather_agents(usable, fetch_and_save)
        return {name: result if isinstance(result, ServiceError) else None for name, result in done.items()}

    async def _not_stored(self, agent: AgentRecord, exc: BaseException) -> BadReply:
        message = replies.not_stored("its nodes and catalog", exc)
        log.error("agent %s: the database refused its nodes and catalog", agent.name, exc_info=exc)
        if agent.last_error != message:
            await self._store.agents.set_agent_status(agent.name, last_error=message)
        return BadReply(f"agent {agent.name}: {message}")

    async def _report_notes(
        self, agent: AgentRecord, duplicates: dict[str, str], node_type: NodeTypeInfo | None
    ) -> None:
        """Says in the agent's last_error what of its answers the controller ignores: node names
        another agent holds, and property constraints it cannot apply (the agent still applies
        those at StartAction, so bad values are then refused late). Clears a note that no longer
        holds; leaves other errors alone unless there is a note to write."""
        notes = []
        if duplicates:
            listed = ", ".join(f"{node} (held by {other})" for node, other in sorted(duplicates.items())[:10])
            more = f" and {len(duplicates) - 10} more" if len(duplicates) > 10 else ""
            notes.append(f"{DUPLICATE_PREFIX}, ignored on this agent: {listed}{more}")
            log.error("agent %s claims node names another agent holds: %s%s", agent.name, listed, more)
        ignored = [
            f"{spec.name[:64]}: {reason}"
            for spec in (node_type.properties if node_type is not None else ())
            for reason in validation.ignored_constraints(spec)
        ]
        if ignored:
            notes.append(f"{CONSTRAINTS_PREFIX}: {'; '.join(ignored)}")
            if agent.last_error != "; ".join(notes):
                log.warning("agent %s: property constraints ignored: %s", agent.name, "; ".join(ignored))
        message = "; ".join(notes)[:1000]
        if message:
            if agent.last_error != message:
                await self._store.agents.set_agent_status(agent.name, last_error=message)
        elif agent.last_error.startswith((DUPLICATE_PREFIX, CONSTRAINTS_PREFIX, replies.NOT_STORED_PREFIX)):
            await self._store.agents.set_agent_status(agent.name, last_error="")

    # -- reading -------------------------------------------------------------------------

    async def list_nodes(self, *, refresh: bool = False) -> list[NodeInfo]:
        """Every cached node, by name, with its maintenance and whether it is being removed
        (it or its agent)."""
        if refresh:
            await self.refresh()
        return list((await self.node_list()).nodes)

    async def node_list(self) -> NodeList:
        """Every cached node as `list_nodes` gives them, as a NodeList that stays the same
        object while nothing it is made of changes: the node cache (its fingerprint), the
        agents' statuses, the nodes in maintenance and the pending removals, all read for each
        call (the last three are small tables) and compared with the copy kept. Whichever
        process changed them, the next call sees it; a page at 5,000 nodes reads the node table
        only when it changed (issue #12)."""
        store = self._store
        # The fingerprint first: a change racing this read makes the copy older than its key
        # at worst, and the next call reads again (InventoryRepository.fingerprint).
        fingerprint = await store.inventory.fingerprint()
        statuses, maintenance, retirements = await asyncio.gather(
            store.agents.statuses(), store.maintenance.list_maintenance(), store.maintenance.list_retirements()
        )
        key = (
            fingerprint,
            tuple(sorted(statuses.items())),
            tuple((m.node_name, m.reason, m.since) for m in maintenance),
            tuple(sorted((r.kind, r.name) for r in retirements)),
        )
        kept = self._node_list
        if kept is not None and kept.key == key:
            return kept
        maintained = {m.node_name: m for m in maintenance}
        retiring = {(r.kind, r.name) for r in retirements}
        nodes = tuple(
            _node_info(
                CachedNode(name, agent, type_, properties, statuses.get(agent, "")),
                maintained.get(name),
                ("node", name) in retiring or ("agent", agent) in retiring,
            )
            for name, agent, type_, properties in await store.inventory.list_nodes_bare()
        )
        self._node_list = NodeList(key, nodes)
        return self._node_list

    async def cached_nodes(self, names: Iterable[str] | None = None) -> dict[str, CachedNode]:
        return {node.name: node for node in await self._store.inventory.list_nodes(names)}

    async def catalogs(self) -> dict[str, AgentCatalog]:
        return {c.agent: c for c in await self._store.inventory.list_catalogs()}

    async def node_type_of_agent(self, agent_name: str) -> NodeTypeInfo | None:
        """The agent's node type description, fetched now if the cache has none yet."""
        catalog = (await self.catalogs()).get(agent_name)
        if catalog is not None and catalog.node_type is not None:
            return catalog.node_type
        agent = await self._store.agents.get_agent(agent_name)
        if agent is None or not self._client.usable(agent):
            return None
        await self.refresh([agent], catalogs=True)
        catalog = (await self.catalogs()).get(agent_name)
        return None if catalog is None else catalog.node_type

    async def node_types(self) -> dict[str, NodeTypeInfo]:
        result: dict[str, NodeTypeInfo] = {}
        for catalog in (await self.catalogs()).values():
            if catalog.node_type is not None:
                result.setdefault(catalog.type, catalog.node_type)
        return result

    async def environments(self) -> dict[str, list[Environment]]:
        result: dict[str, list[Environment]] = {}
        for catalog in (await self.catalogs()).values():
            result.setdefault(catalog.type, []).extend(catalog.environments)
        for envs in result.values():
            envs.sort(key=lambda e: (e.name, e.agent))
        return result

    async def timeline(
        self, start: int, end: int, viewer: User, nodes: Iterable[str] | None = None
    ) -> dict[str, list[Busy]]:
        """Every reserved window overlapping [start, end) (epoch seconds), by node, sorted by
        start; on `nodes` only when given (the rows a page shows). The owner is named to
        administrators only."""
        viewer = await self._authz.require_authorized(viewer)
        start = validation.epoch_seconds(start, "timeline start")
        end = validation.epoch_seconds(end, "timeline end")
        if end <= start:
            raise InvalidInput("the timeline must end after it starts")
        result: dict[str, list[Busy]] = {}
        admin = viewer.is_admin
        for node, owner, s, e in await self._store.schedule.timeline(start, end, nodes):
            result.setdefault(node, []).append(
                Busy(node, s, e, owner == viewer.email, owner if admin else "")
            )
        return result

    async def next_starts(
        self, after: int, before: int, viewer: User, nodes: Iterable[str] | None = None
    ) -> dict[str, int]:
        """{node name: start (epoch seconds)} of each node's first reserved window starting in
        [after, before), on `nodes` only when given, for "free until" beyond the windows a
        view has read; no owners."""
        await self._authz.require_authorized(viewer)
        after = validation.epoch_seconds(after, "next window start")
        before = validation.epoch_seconds(before, "next window end")
        if before <= after:
            return {}
        return await self._store.schedule.next_starts(after, before, nodes)

    async def open_windows(self, actor: User, now: int) -> dict[str, str]:
        """For administrators: {node name: reservation status} of every node whose reservation
        window is open at `now` (epoch seconds); Forbidden for anyone else."""
        await self._authz.require_admin(actor)
        return {
            r.node_name: r.status
            for r in await self._store.schedule.list_schedule()
            if r.start_date <= now < r.end_date
        }

    # -- administration through the agents -------------------------------------------------

    async def _connected_agent(self, name: str) -> AgentRecord:
        agent = await self._store.agents.get_agent(name)
        if agent is None:
            raise NotFound(f"no agent named {name}")
        if not self._client.usable(agent):
            raise AgentUnavailable(f"agent {name} is disconnected; reconnect it first")
        return agent

    async def _node_agent(self, node_name: str) -> AgentRecord:
        node = (await self.cached_nodes([node_name])).get(node_name)
        if node is None:
            raise NotFound(f"no node named {node_name}")
        return await self._connected_agent(node.agent)

    async def _refuse_if_reserved(self, node_name: str, hint: str) -> None:
        refuse_reserved(f"node {node_name}", await self._store.schedule.list_schedule(node=node_name), hint)

    async def add_node(self, actor: User, agent_name: str, node_name: str, properties: dict[str, str]) -> NodeInfo:
        await self._authz.require_admin(actor)
        node_name = validation.name(node_name, "node")
        if not isinstance(properties, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in properties.items()
        ):
            raise InvalidInput("node properties must map names to text values")
        agent = await self._connected_agent(agent_name)
        taken = (await self.cached_nodes([node_name])).get(node_name)
        if taken is not None:
            raise Conflict(f"node name {node_name} is already used by agent {taken.agent}")
        await self._client.add_node(agent, node_name, properties)
        await self.refresh([agent])
        node = (await self.cached_nodes([node_name])).get(node_name)
        if node is None:
            raise AgentUnavailable(f"agent {agent.name} accepted node {node_name} but does not list it")
        log.info("%s added node %s to agent %s", actor.email, node_name, agent.name)
        return _node_info(node)

    async def rename_node(self, actor: User, node_name: str, new_name: str) -> NodeInfo:
        await self._authz.require_admin(actor)
        new_name = validation.name(new_name, "node")
        agent = await self._node_agent(node_name)
        await self._refuse_if_reserved(node_name, "they must end before it is renamed")
        taken = (await self.cached_nodes([new_name])).get(new_name)
        if taken is not None:
            raise Conflict(f"node name {new_name} is already used by agent {taken.agent}")
        await self._client.rename_node(agent, node_name, new_name)
        # The node's maintenance and lost count follow it to its new name.
        await self._store.maintenance.rename(node_name, new_name)
        await self.refresh([agent])
        node = (await self.cached_nodes([new_name])).get(new_name)
        if node is None:
            raise AgentUnavailable(f"agent {agent.name} renamed node {node_name} but does not list it")
        log.info("%s renamed node %s to %s", actor.email, node_name, new_name)
        return _node_info(node)

    async def remove_node(self, actor: User, node_name: str) -> None:
        """Removes the node on its agent. Conflict, saying which, while it has reservations
        (controller/maintenance.py removes one that has, once they are destroyed). A node in
        maintenance stays in maintenance: if it comes back, it is not handed out."""
        await self._authz.require_admin(actor)
        agent = await self._node_agent(node_name)
        await self._refuse_if_reserved(node_name, FORCE_HINT)
        await self._client.remove_node(agent, node_name)
        await self.refresh([agent])
        log.info("%s removed node %s from agent %s", actor.email, node_name, agent.name)

    async def put_environment(self, actor: User, agent_name: str, env: Environment) -> Environment:
        await self._authz.require_admin(actor)
        validation.name(env.name, "environment")
        agent = await self._connected_agent(agent_name)
        stored = await self._client.put_environment(agent, env)
        await self.refresh([agent], catalogs=True)
        log.info("%s put environment %s on agent %s", actor.email, env.name, agent.name)
        return stored

    async def remove_environment(self, actor: User, agent_name: str, name: str) -> None:
        await self._authz.require_admin(actor)
        agent = await self._connected_agent(agent_name)
        await self._client.remove_environment(agent, name)
        await self.refresh([agent], catalogs=True)
        log.info("%s removed environment %s from agent %s", actor.email, name, agent.name)
