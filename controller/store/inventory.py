"""The controller's copy of what the agents hold (tables `node` and `agent_catalog`): the node
cache refreshed by GetNodes, and each agent's node type description and environments."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from types import SimpleNamespace

import peewee as pw

from edgebed.controller.domain import AgentCatalog
from edgebed.controller.store.conversions import cached_node_from_row, catalog_from_row, catalog_values
from edgebed.controller.store.engine import Engine
from edgebed.controller.store.records import CachedNode

# PostgreSQL advisory lock key of the node cache and catalog writes (any number unique to them).
_INVENTORY_LOCK = 0x6564_6765_6E6F

# Names per IN (...) list: SQLite allows 999 parameters per statement in older builds.
_CHUNK = 500


class InventoryRepository:
    """Every method is a coroutine run in the engine's thread pool."""

    def __init__(self, engine: Engine, models: SimpleNamespace) -> None:
        self._engine = engine
        self.m = models

    async def save_inventory(
        self,
        agent: str,
        type_: str,
        nodes: Mapping[str, Mapping[str, str]],
        catalog: AgentCatalog | None,
        now: int,
    ) -> dict[str, str]:
        """Makes the node cache hold exactly `nodes` ({node name: {property: value}}) for
        `agent` (of node type `type_`), and stores its `catalog` when given, in ONE transaction
        of its own: one agent's data that the database refuses never stops another agent's (the
        caller writes each agent in turn). Unchanged rows are not rewritten; `now` is epoch
        seconds. Raises what the database raises (store.WRITE_ERRORS); nothing is written then.

        Returns {node: other agent} for names another agent already holds: those stay with that
        agent (never merged). Of two agents newly claiming a name, the first one written keeps it.
        """

        def work() -> dict[str, str]:
            Node = self.m.Node
            with self._engine.write():
                self._engine.serialize(_INVENTORY_LOCK)
                # updated_at is the node cache's logical clock (see `fingerprint`): each row
                # written now gets a value above every one there, and never below `now`.
                stamp = max(now, int(Node.select(pw.fn.MAX(Node.updated_at)).scalar() or 0) + 1)
                names = sorted(nodes)
                existing = {}
                for start in range(0, len(names), _CHUNK):
                    chunk = names[start : start + _CHUNK]
                    query = Node.select().where(Node.name.in_(chunk)).order_by(Node.name)
                    existing.update({row.name: row for row in self._engine.lock(query)})
                claimed = {name: row.agent for name, row in existing.items() if row.agent != agent}
                for name in names:
                    if name in claimed:
                        continue
                    properties = json.dumps(dict(sorted(nodes[name].items())))
                    row = existing.get(name)
                    if row is None:
                        Node.create(name=name, agent=agent, type=type_, properties=properties, updated_at=stamp)
                    elif row.properties != properties or row.type != type_:
                        Node.update(type=type_, properties=properties, updated_at=stamp).where(
                            Node.name == name
                        ).execute()
                kept = {n for n in names if n not in claimed}
                gone = Node.select(Node.name).where(Node.agent == agent)
                stale = [row.name for row in gone if row.name not in kept]
                for start in range(0, len(stale), _CHUNK):
                    Node.delete().where(Node.name.in_(stale[start : start + _CHUNK])).execute()
                if catalog is not None:
                    self._put_catalog(catalog, now)
            return claimed

        return await self._engine.run(work)

    async def list_nodes(self, names: Iterable[str] | None = None) -> list[CachedNode]:
        """The cached nodes (only those named, when `names` is given), by name, each with its
        agent's status."""
        wanted = None if names is None else sorted(set(names))

        def work() -> list[CachedNode]:
            Node, Agent = self.m.Node, self.m.Agent
            query = (
                Node.select(Node, Agent.status)
                .join(Agent, pw.JOIN.LEFT_OUTER, on=(Node.agent == Agent.name))
                .order_by(Node.name)
                .objects()
            )
            if wanted is not None:
                if not wanted:
                    return []
                query = query.where(Node.name.in_(wanted))
            return [cached_node_from_row(row) for row in query]

        return await self._engine.run(work)

    async def fingerprint(self) -> tuple[int, int]:
        """(number of cached nodes, highest updated_at): changes whenever the node cache does,
        whichever process wrote it, for a reader that keeps a copy (Inventory.node_list).

        Every insert or update sets updated_at above every value there (save_inventory, under
        the inventory lock), which raises the highest; a delete without an insert lowers the
        count, and to bring the pair back to an earlier value every row written since would
        have to be deleted, which is the earlier content again. Read it BEFORE the nodes: a copy
        read after a change is then at worst filed under the older pair and read again."""

        def work() -> tuple[int, int]:
            Node = self.m.Node
            count, highest = Node.select(pw.fn.COUNT(Node.name), pw.fn.MAX(Node.updated_at)).tuples().get()
            return int(count or 0), int(highest or 0)

        return await self._engine.run(work)

    async def list_nodes_bare(self) -> list[tuple[str, str, str, dict[str, str]]]:
        """(name, agent, type, properties) of every cached node, by name: the cheap read of
        the whole cache (tuples, no join; agents' status apart)."""

        def work() -> list[tuple[str, str, str, dict[str, str]]]:
            Node = self.m.Node
            query = Node.select(Node.name, Node.agent, Node.type, Node.properties).order_by(Node.name).tuples()
            return [(name, agent, type_, json.loads(properties)) for name, agent, type_, properties in query]

        return await self._engine.run(work)

    async def node_counts(self) -> dict[str, int]:
        """{agent: number of cached nodes}; agents without nodes are absent."""

        def work() -> dict[str, int]:
            query = self.m.Node.select(
                self.m.Node.agent, pw.fn.COUNT(self.m.Node.name).alias("n")
            ).group_by(self.m.Node.agent)
            return {row.agent: int(row.n) for row in query}

        return await self._engine.run(work)

    # -- catalogs (node type descriptions and environments) ------------------------------

    def _put_catalog(self, catalog: AgentCatalog, now: int) -> None:
        """Inside save_inventory's transaction: writes the catalog only if it changed."""
        values = catalog_values(catalog)
        row = self.m.Catalog.get_or_none(self.m.Catalog.agent == catalog.agent)
        if row is None:
            self.m.Catalog.create(agent=catalog.agent, updated_at=now, **values)
        elif any(getattr(row, k) != v for k, v in values.items()):
            self.m.Catalog.update(updated_at=now, **values).where(
                self.m.Catalog.agent == catalog.agent
            ).execute()

    async def list_catalogs(self) -> list[AgentCatalog]:
        """Every agent's catalog, by agent name."""

        def work() -> list[AgentCatalog]:
            return [catalog_from_row(row) for row in self.m.Catalog.select().order_by(self.m.Catalog.agent)]

        return await self._engine.run(work)
