"""Nodes in maintenance and pending removals (tables `node_maintenance` and `retirement`).

A node's maintenance row is keyed by its name and lives apart from the node cache, so a node in
maintenance stays there while its agent does not list it, or after its agent was removed and
registered again: only an administrator's release takes it out. The same row counts the node's
actions in a row that ended `lost`.

The functions at module level run inside a caller's write transaction (the schedule repository
applies a decision's effect on its node with the decision; reserving reads which candidates are
unavailable); the repository's coroutines are the administrator's reads and writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from types import SimpleNamespace
from typing import Any

import peewee as pw

from edgebed.controller.domain import NodeMaintenance, Retirement
from edgebed.controller.store.conversions import maintenance_from_row, retirement_from_row
from edgebed.controller.store.engine import Engine
from edgebed.controller.store.records import CompareAndSet

log = logging.getLogger(__name__)

# Who put a node in maintenance when no administrator did (set_by).
CONTROLLER = "edgebed"
AGENT = "agent"
NODE = "node"

# Names per IN (...) list: SQLite allows 999 parameters per statement in older builds.
_CHUNK = 500

# (lost_in_a_row, lost) -> (new count, maintenance reason or ''): lifecycle.count_final.
CountFinal = Callable[[int, bool], tuple[int, str]]


def _condition(engine: Engine, m: SimpleNamespace, node: str) -> Any:
    """The node's maintenance row, created when missing, locked (PostgreSQL) for this
    transaction. INSERT ... ON CONFLICT DO NOTHING: two transactions creating it at once
    never collide."""
    NM = m.NodeMaintenance
    NM.insert(node_name=node).on_conflict_ignore().execute()
    return engine.lock(NM.select().where(NM.node_name == node)).get()


def _count_of(engine: Engine, m: SimpleNamespace, node: str) -> tuple[int, str]:
    """As _condition, for the count only: (lost_in_a_row, last_counted), the row created when
    missing and locked (PostgreSQL). Plain SQL: every action that ends, thousands per poll when
    a large deploy ends, comes here, and peewee's query builder costs more than the database."""
    NM = m.NodeMaintenance
    table, param = NM._meta.table_name, engine.db.param
    fields = NM._meta.fields
    engine.db.execute_sql(
        f'INSERT INTO "{table}" (node_name, active, reason, since, set_by, lost_in_a_row, last_counted) '
        f"VALUES ({', '.join([param] * 7)}) ON CONFLICT DO NOTHING",
        (node, fields["active"].db_value(False), "", 0, "", 0, ""),
    )
    lock = "" if engine.is_sqlite else " FOR UPDATE"
    cursor = engine.db.execute_sql(
        f'SELECT lost_in_a_row, last_counted FROM "{table}" WHERE node_name = {param}{lock}', (node,)
    )
    count, counted = cursor.fetchone()
    return int(count), counted


def enter_maintenance(engine: Engine, m: SimpleNamespace, node: str, reason: str, by: str, now: int) -> bool:
    """Inside a write transaction: puts `node` in maintenance for `reason`; True when it was
    not in maintenance already (one that is keeps its reason, author and date)."""
    row = _condition(engine, m, node)
    if row.active:
        return False
    NM = m.NodeMaintenance
    NM.update(active=True, reason=reason[:500], since=now, set_by=by).where(NM.node_name == node).execute()
    log.warning("node %s enters maintenance: %s", node, reason)
    return True


def apply_node_effects(
    engine: Engine, m: SimpleNamespace, change: CompareAndSet, now: int, count_final: CountFinal | None
) -> None:
    """Inside update_schedule's transaction, for a change that applied: counts its final
    action once toward the node's lost-in-a-row (with `count_final`, which may put the node in
    maintenance) and puts the node in maintenance when the change says so."""
    finished = change.finished
    if finished is not None and count_final is not None:
        lost_in_a_row, last_counted = _count_of(engine, m, change.node_name)
        if last_counted != finished.fingerprint:
            count, reason = count_final(lost_in_a_row, finished.lost)
            engine.db.execute_sql(
                f'UPDATE "{m.NodeMaintenance._meta.table_name}" SET lost_in_a_row = {engine.db.param}, '
                f"last_counted = {engine.db.param} WHERE node_name = {engine.db.param}",
                (count, finished.fingerprint, change.node_name),
            )
            if reason:
                enter_maintenance(engine, m, change.node_name, reason, CONTROLLER, now)
    if change.maintenance:
        enter_maintenance(engine, m, change.node_name, change.maintenance, CONTROLLER, now)


def unavailable(m: SimpleNamespace, nodes: Sequence[str]) -> dict[str, str]:
    """Inside a transaction: {node: why it is never handed out} for those of `nodes` in
    maintenance, being removed, or of an agent being removed; the text completes "node X
    is ..."."""
    NM, R, Node = m.NodeMaintenance, m.Retirement, m.Node
    names = sorted(set(nodes))
    result: dict[str, str] = {}
    retiring_agents = {r.name: r for r in R.select().where(R.kind == AGENT)}
    for start in range(0, len(names), _CHUNK):
        chunk = names[start : start + _CHUNK]
        for row in NM.select().where(NM.node_name.in_(chunk) & (NM.active == True)):  # noqa: E712
            result[row.node_name] = f"in maintenance: {row.reason}"
        for row in R.select().where((R.kind == NODE) & R.name.in_(chunk)):
            result.setdefault(row.name, "being removed")
        if retiring_agents:
            for row in Node.select(Node.name, Node.agent).where(Node.name.in_(chunk)):
                if row.agent in retiring_agents:
                    result.setdefault(row.name, f"on agent {row.agent}, which is being removed")
    return result


class MaintenanceRepository:
    """Every method is a coroutine run in the engine's thread pool. Dates are epoch seconds."""

    def __init__(self, engine: Engine, models: SimpleNamespace) -> None:
        self._engine = engine
        self.m = models

    async def list_maintenance(self, names: Iterable[str] | None = None) -> list[NodeMaintenance]:
        """The nodes in maintenance (only those named, when `names` is given), by name, each
        with the agent that lists it now ('' when none does)."""
        wanted = None if names is None else sorted(set(names))

        def work() -> list[NodeMaintenance]:
            NM, Node = self.m.NodeMaintenance, self.m.Node
            query = (
                NM.select(NM, Node.agent)
                .join(Node, pw.JOIN.LEFT_OUTER, on=(NM.node_name == Node.name))
                .where(NM.active == True)  # noqa: E712
                .order_by(NM.node_name)
                .objects()
            )
            if wanted is not None:
                if not wanted:
                    return []
                query = query.where(NM.node_name.in_(wanted))
            return [maintenance_from_row(row, row.agent or "") for row in query]

        return await self._engine.run(work)

    async def active(self) -> dict[str, str]:
        """{node name: reason} of every node in maintenance (the scheduler's read)."""

        def work() -> dict[str, str]:
            NM = self.m.NodeMaintenance
            return {
                row.node_name: row.reason
                for row in NM.select(NM.node_name, NM.reason).where(NM.active == True)  # noqa: E712
            }

        return await self._engine.run(work)

    async def enter(self, node: str, reason: str, by: str, now: int) -> NodeMaintenance:
        """Puts `node` in maintenance (an administrator's `by`); a node already there gets the
        new reason and author and keeps its date. The entry as stored."""

        def work() -> NodeMaintenance:
            NM, Node = self.m.NodeMaintenance, self.m.Node
            with self._engine.write():
                # Serialized with reservations of the node (they lock its cache row).
                list(self._engine.lock(Node.select(Node.name).where(Node.name == node)))
                if not enter_maintenance(self._engine, self.m, node, reason, by, now):
                    NM.update(reason=reason[:500], set_by=by).where(NM.node_name == node).execute()
                return maintenance_from_row(NM.get(NM.node_name == node))

        return await self._engine.run(work)

    async def release(self, node: str) -> bool:
        """Takes `node` out of maintenance and starts its lost count again; False when it was
        not in maintenance."""

        def work() -> bool:
            NM = self.m.NodeMaintenance
            with self._engine.write():
                return (
                    NM.update(active=False, reason="", since=0, set_by="", lost_in_a_row=0)
                    .where((NM.node_name == node) & (NM.active == True))  # noqa: E712
                    .execute()
                    > 0
                )

        return await self._engine.run(work)

    async def rename(self, old: str, new: str) -> None:
        """The node was renamed on its agent: its condition follows it."""

        def work() -> None:
            NM = self.m.NodeMaintenance
            with self._engine.write():
                NM.delete().where(NM.node_name == new).execute()
                NM.update(node_name=new).where(NM.node_name == old).execute()

        await self._engine.run(work)

    # -- removals waiting for reservations to end --------------------------------------------

    async def request_retirement(self, kind: str, name: str, by: str, now: int) -> Retirement:
        """Records that the agent or node (`kind`) is to be removed once its reservations are
        gone; a request already there is kept. The request as stored."""

        def work() -> Retirement:
            R = self.m.Retirement
            with self._engine.write():
                R.insert(kind=kind, name=name, requested_by=by, requested_at=now).on_conflict_ignore().execute()
                return retirement_from_row(R.get((R.kind == kind) & (R.name == name)))

        return await self._engine.run(work)

    async def list_retirements(self) -> list[Retirement]:
        def work() -> list[Retirement]:
            R = self.m.Retirement
            return [retirement_from_row(row) for row in R.select().order_by(R.kind, R.name)]

        return await self._engine.run(work)

    async def end_retirement(self, kind: str, name: str) -> None:
        def work() -> None:
            R = self.m.Retirement
            R.delete().where((R.kind == kind) & (R.name == name)).execute()

        await self._engine.run(work)
