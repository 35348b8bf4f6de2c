"""Reservations (tables `schedule` and `action_prop`): reserving, extending, configuring, the
scheduler's compare-and-set updates, and the reads of the pages, the API and /metrics.

Three lifecycle rules still live here, each marked `# lifecycle rule:`; they belong to the
reservations service or the lifecycle module and move there next.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import peewee as pw

from edgebed.controller.domain import ScheduleRecord
from edgebed.controller.errors import Conflict
from edgebed.controller.store.conversions import SCHEDULE_FIELDS, schedule_from_row
from edgebed.controller.store.engine import Engine
from edgebed.controller.store.records import ScheduleChange

# Node names per IN (...) list: SQLite allows 999 parameters per statement in older builds.
_CHUNK = 500


class ScheduleRepository:
    """Every method is a coroutine run in the engine's thread pool. Dates are epoch seconds
    (UTC); a reservation is keyed by (node_name, owner)."""

    def __init__(self, engine: Engine, models: SimpleNamespace) -> None:
        self._engine = engine
        self.m = models

    # lifecycle rule: windows on one node never come within `turnaround` seconds of each other.
    def _window_taken(self, node: str, start: int, end: int, turnaround: int, exclude_owner: str | None = None) -> bool:
        """True when [start, end) comes within `turnaround` seconds of a window on `node`: the
        gap leaves room for the previous destroy before each start."""
        S = self.m.Schedule
        query = S.select(S.node_name).where(
            (S.node_name == node) & (S.start_date < end + turnaround) & (S.end_date + turnaround > start)
        )
        if exclude_owner is not None:
            query = query.where(S.owner != exclude_owner)
        return query.exists()

    async def reserve(
        self,
        owner: str,
        *,
        candidates: Sequence[str],
        count: int,
        start: int,
        end: int,
        turnaround: int,
        status_for: Mapping[str, str],
        props_for: Mapping[str, Mapping[str, str]],
        all_or_nothing: bool,
    ) -> list[str]:
        """Reserves `count` of `candidates` (in their order) for [start, end); the chosen names.

        With all_or_nothing (nodes named by the user) every candidate must be free, else
        Conflict names the first taken one. Otherwise the first `count` free candidates are
        taken, or Conflict when fewer are free. Each new row gets status_for[node] and the
        action properties props_for[node]. One transaction: all rows or none.
        """

        def work() -> list[str]:
            S, Node = self.m.Schedule, self.m.Node
            with self._engine.write():
                # Serializes reservations of the same nodes on PostgreSQL (sorted: no deadlock).
                if not self._engine.is_sqlite:
                    list(self._engine.lock(Node.select(Node.name).where(Node.name.in_(sorted(candidates))).order_by(Node.name)))
                mine = {
                    row.node_name
                    for row in S.select(S.node_name).where(
                        (S.owner == owner) & S.node_name.in_(list(candidates))
                    )
                }
                # lifecycle rule: node picking — one reservation per (node, owner), first free
                # candidates in order, all-or-nothing for named nodes.
                chosen: list[str] = []
                for node in candidates:
                    if node in mine:
                        if all_or_nothing:
                            raise Conflict(f"you already have a reservation on node {node}")
                        continue
                    if self._window_taken(node, start, end, turnaround):
                        if all_or_nothing:
                            raise Conflict(f"node {node} is already reserved during that time")
                        continue
                    chosen.append(node)
                    if len(chosen) == count:
                        break
                if len(chosen) < count:
                    raise Conflict(
                        f"only {len(chosen)} of the {count} requested nodes are free during that time"
                    )
                for node in chosen:
                    S.insert(
                        node_name=node,
                        owner=owner,
                        bin="",
                        start_date=start,
                        end_date=end,
                        status=status_for[node],
                        action_state="",
                    ).execute()
                    for prop, value in props_for.get(node, {}).items():
                        self.m.ActionProp.insert(
                            node_name=node, prop_name=prop, prop_value=value, owner=owner
                        ).execute()
                return chosen

        return await self._engine.run(work)

    async def extend(
        self, node: str, owner: str, *, new_end: int, turnaround: int, expect_end: int
    ) -> ScheduleRecord:
        """Moves the end of the reservation to `new_end` if it still ends at `expect_end` and is
        not ending; the updated record. Conflict when it changed meanwhile or when the longer
        window would come within `turnaround` of another reservation of the node."""

        def work() -> ScheduleRecord:
            S, Node = self.m.Schedule, self.m.Node
            with self._engine.write():
                if not self._engine.is_sqlite:
                    list(self._engine.lock(Node.select(Node.name).where(Node.name == node)))
                row = S.get_or_none((S.node_name == node) & (S.owner == owner))
                if row is None or int(row.end_date) != expect_end or row.ending:
                    raise Conflict(f"the reservation of node {node} changed meanwhile; try again")
                if self._window_taken(node, int(row.start_date), new_end, turnaround, exclude_owner=owner):
                    raise Conflict(
                        f"node {node} cannot be extended: it would run into the next reservation"
                    )
                S.update(end_date=new_end).where((S.node_name == node) & (S.owner == owner)).execute()
                return schedule_from_row(S.get((S.node_name == node) & (S.owner == owner)))

        return await self._engine.run(work)

    async def list_schedule(
        self,
        *,
        owner: str | None = None,
        node: str | None = None,
        started_before: int | None = None,
    ) -> list[ScheduleRecord]:
        """Reservations by bin, node and owner, filtered by owner and node when given;
        `started_before` keeps those started by then or with a pending action (the scheduler's
        working set)."""

        def work() -> list[ScheduleRecord]:
            S = self.m.Schedule
            query = S.select().order_by(S.bin, S.node_name, S.owner)
            if owner is not None:
                query = query.where(S.owner == owner)
            if node is not None:
                query = query.where(S.node_name == node)
            if started_before is not None:
                query = query.where((S.start_date <= started_before) | (S.pending != ""))
            return [schedule_from_row(row) for row in query]

        return await self._engine.run(work)

    async def get_schedule(self, node: str, owner: str) -> ScheduleRecord | None:
        def work() -> ScheduleRecord | None:
            S = self.m.Schedule
            row = S.get_or_none((S.node_name == node) & (S.owner == owner))
            return None if row is None else schedule_from_row(row)

        return await self._engine.run(work)

    async def action_props(
        self, *, owner: str | None = None, node: str | None = None
    ) -> dict[tuple[str, str], dict[str, str]]:
        """{(node_name, owner): {prop_name: prop_value}}, filtered by owner and node when given."""

        def work() -> dict[tuple[str, str], dict[str, str]]:
            A = self.m.ActionProp
            query = A.select().order_by(A.node_name, A.prop_name)
            if owner is not None:
                query = query.where(A.owner == owner)
            if node is not None:
                query = query.where(A.node_name == node)
            result: dict[tuple[str, str], dict[str, str]] = {}
            for row in query:
                result.setdefault((row.node_name, row.owner), {})[row.prop_name] = row.prop_value
            return result

        return await self._engine.run(work)

    async def action_props_for(
        self, pairs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, str]]:
        """The action properties of the given (node_name, owner) reservations; those without
        properties are absent."""
        wanted = set(pairs)
        nodes = sorted({node for node, _ in wanted})

        def work() -> dict[tuple[str, str], dict[str, str]]:
            A = self.m.ActionProp
            result: dict[tuple[str, str], dict[str, str]] = {}
            for start in range(0, len(nodes), _CHUNK):
                for row in A.select().where(A.node_name.in_(nodes[start : start + _CHUNK])):
                    key = (row.node_name, row.owner)
                    if key in wanted:
                        result.setdefault(key, {})[row.prop_name] = row.prop_value
            return result

        return await self._engine.run(work)

    async def configure(
        self,
        node: str,
        owner: str,
        *,
        bin: str | None,
        set_props: Mapping[str, str],
        unset_props: Iterable[str],
        required: Iterable[str],
    ) -> ScheduleRecord | None:
        """Sets bin (unless None) and properties; moves status between configuring and ready by
        whether every required property is set (a row with an action under way keeps its
        status). The updated record; None when there is no such reservation."""
        required_names = set(required)
        unset = list(unset_props)

        def work() -> ScheduleRecord | None:
            S, A = self.m.Schedule, self.m.ActionProp
            where = (S.node_name == node) & (S.owner == owner)
            with self._engine.write():
                row = self._engine.lock(S.select().where(where)).first()
                if row is None:
                    return None
                mine = (A.node_name == node) & (A.owner == owner)
                if unset:
                    A.delete().where(mine & A.prop_name.in_(unset)).execute()
                for prop, value in set_props.items():
                    updated = A.update(prop_value=value).where(mine & (A.prop_name == prop)).execute()
                    if not updated:
                        A.insert(node_name=node, prop_name=prop, prop_value=value, owner=owner).execute()
                have = {r.prop_name for r in A.select(A.prop_name).where(mine)}
                changes: dict[str, Any] = {}
                if bin is not None:
                    changes["bin"] = bin
                # lifecycle rule: READY when every required property is set, else CONFIGURING;
                # a row with an action pending or in progress keeps its status.
                busy = row.pending != "" or row.status == "in_progress"
                if not busy:
                    complete = required_names <= have
                    changes["status"] = "ready" if complete else "configuring"
                    if complete and row.status == "configuring":
                        # A new configuration clears the error that sent it back to configuring.
                        changes["last_error"] = ""
                if changes:
                    S.update(**changes).where(where).execute()
                return schedule_from_row(S.get(where))

        return await self._engine.run(work)

    async def update_schedule(self, changes: Sequence[ScheduleChange]) -> list[bool]:
        """Applies compare-and-set changes in one transaction; True for each one applied.
        ValueError (before any write) for a field that is not a schedule column."""
        for change in changes:
            for name in list(change.expect) + list(change.changes):
                if name not in SCHEDULE_FIELDS:
                    raise ValueError(f"unknown schedule field {name!r}")

        def work() -> list[bool]:
            S, A = self.m.Schedule, self.m.ActionProp
            results = []
            with self._engine.write():
                for change in changes:
                    where = (S.node_name == change.node_name) & (S.owner == change.owner)
                    for name, value in change.expect.items():
                        where &= getattr(S, name) == value
                    if change.delete:
                        done = S.delete().where(where).execute() > 0
                        if done:
                            A.delete().where(
                                (A.node_name == change.node_name) & (A.owner == change.owner)
                            ).execute()
                    else:
                        done = S.update(**change.changes).where(where).execute() > 0
                    results.append(done)
            return results

        return await self._engine.run(work)

    async def timeline(self, start: int, end: int) -> list[tuple[str, str, int, int]]:
        """(node_name, owner, start_date, end_date) of every window overlapping [start, end)."""

        def work() -> list[tuple[str, str, int, int]]:
            S = self.m.Schedule
            query = (
                S.select(S.node_name, S.owner, S.start_date, S.end_date)
                .where((S.start_date < end) & (S.end_date > start))
                .order_by(S.node_name, S.start_date)
            )
            return [(r.node_name, r.owner, int(r.start_date), int(r.end_date)) for r in query]

        return await self._engine.run(work)

    async def count_schedule_by(self, column: str) -> dict[str, int]:
        """{value: number of reservations} for column "status" or "action_state" (/metrics);
        ValueError for any other column."""
        if column not in ("status", "action_state"):
            raise ValueError(column)

        def work() -> dict[str, int]:
            S = self.m.Schedule
            field = getattr(S, column)
            query = S.select(field.alias("key"), pw.fn.COUNT(S.node_name).alias("n")).group_by(field)
            return {row.key: int(row.n) for row in query.objects()}

        return await self._engine.run(work)
