"""Reservations (tables `schedule` and `action_prop`): reserving, extending, configuring, the
scheduler's compare-and-set updates, and the reads of the pages, the API and /metrics.

No lifecycle rule lives here. Where a write depends on a rule (which nodes a request gets, how
far a reservation may be extended, which status a configuration gives), the caller passes the
rule in as a pure function (from controller/lifecycle.py); the repository reads what the rule
needs inside its write transaction, calls it, and writes what it decided, so the decision and
the write are atomic: SQLite's IMMEDIATE transaction holds the write lock from BEGIN, and on
PostgreSQL the node rows (and the schedule row) are locked FOR UPDATE before the read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import peewee as pw

from edgebed.controller.domain import HistoryEntry, ScheduleRecord
from edgebed.controller.lifecycle import Clearance, Decision, Transition, Window, occupied_from, window_conflicts
from edgebed.controller.store.conversions import (
    SCHEDULE_FIELDS,
    history_from_row,
    schedule_from_row,
    schedule_from_values,
)
from edgebed.controller.store.engine import Engine
from edgebed.controller.store.leases import Fence, check_fence
from edgebed.controller.store.maintenance import CountFinal, apply_node_effects, unavailable
from edgebed.controller.store.records import CompareAndSet

# Node names per IN (...) list: SQLite allows 999 parameters per statement in older builds.
_CHUNK = 500


# For _check_fields, which runs for every row a poll writes.
_FIELD_SET = frozenset(SCHEDULE_FIELDS)

class ScheduleRepository:
    """Every method is a coroutine run in the engine's thread pool. Dates are epoch seconds
    (UTC); a reservation is keyed by (node_name, owner)."""

    def __init__(self, engine: Engine, models: SimpleNamespace) -> None:
        self._engine = engine
        self.m = models
        # The compare-and-set UPDATE for each shape of change: (changed fields, expected fields).
        self._cas_sql: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}

    def _windows(self, nodes: Sequence[str]) -> dict[str, list[Window]]:
        """Every reservation's window on `nodes`, by node (inside the caller's transaction),
        from when it occupies the node (lifecycle.occupied_from: earlier than start_date once a
        deploy was started ahead of it)."""
        S = self.m.Schedule
        result: dict[str, list[Window]] = {}
        names = sorted(set(nodes))
        for start in range(0, len(names), _CHUNK):
            query = S.select(S.node_name, S.owner, S.start_date, S.end_date, S.pending_since).where(
                S.node_name.in_(names[start : start + _CHUNK])
            )
            for r in query:
                begins = occupied_from(int(r.start_date), int(r.pending_since))
                result.setdefault(r.node_name, []).append(Window(r.node_name, r.owner, begins, int(r.end_date)))
        return result

    def _clear(self, node: str, owner: str, clearance: Clearance) -> bool:
        """True when no other owner's window on `node` comes within the clearance's turnaround
        of its interval (inside the caller's transaction). On PostgreSQL the node's row lock
        serializes this with reserve and extend, which take it too."""
        Node = self.m.Node
        if not self._engine.is_sqlite:
            list(self._engine.lock(Node.select(Node.name).where(Node.name == node)))
        others = [w for w in self._windows([node]).get(node, []) if w.owner != owner]
        return not window_conflicts(others, clearance.start, clearance.end, clearance.turnaround)

    def _check_fields(self, names: Iterable[str]) -> None:
        unknown = set(names) - _FIELD_SET
        if unknown:
            raise ValueError(f"unknown schedule field {sorted(unknown)[0]!r}")

    async def reserve(
        self,
        owner: str,
        *,
        candidates: Sequence[str],
        start: int,
        end: int,
        choose: Callable[[Mapping[str, Sequence[Window]], Mapping[str, str]], list[str]],
        status_for: Mapping[str, str],
        props_for: Mapping[str, Mapping[str, str]],
        request_filter: str = "",
    ) -> list[str]:
        """Reserves for `owner` the candidates that `choose` picks, for [start, end); the chosen
        names.

        `choose` gets every reservation's window on the candidates, by node, and the candidates
        never handed out ({node: why}: in maintenance, being removed), as read inside the
        transaction, and returns the names to reserve or raises (lifecycle.choose_nodes raises
        Conflict); nothing is written then. Each new row gets status_for[node], the action
        properties props_for[node] and `request_filter` (the filter's JSON text, '' for named
        nodes). One transaction: all rows or none.
        """

        def work() -> list[str]:
            S, Node = self.m.Schedule, self.m.Node
            with self._engine.write():
                # Serializes reservations of the same nodes on PostgreSQL (sorted: no deadlock).
                if not self._engine.is_sqlite:
                    list(self._engine.lock(Node.select(Node.name).where(Node.name.in_(sorted(candidates))).order_by(Node.name)))
                chosen = choose(self._windows(candidates), unavailable(self.m, candidates))
                for node in chosen:
                    S.insert(
                        node_name=node,
                        owner=owner,
                        bin="",
                        start_date=start,
                        end_date=end,
                        status=status_for[node],
                        action_state="",
                        request_filter=request_filter,
                    ).execute()
                    for prop, value in props_for.get(node, {}).items():
                        self.m.ActionProp.insert(
                            node_name=node, prop_name=prop, prop_value=value, owner=owner
                        ).execute()
                return chosen

        return await self._engine.run(work)

    async def extend(
        self,
        node: str,
        owner: str,
        *,
        decide: Callable[[ScheduleRecord, Sequence[Window]], Mapping[str, Any]],
    ) -> ScheduleRecord | None:
        """Extends the reservation of `owner` on `node` as `decide` says: it gets the row and
        every window on the node (its own included), as read inside the transaction, and
        returns the changes to write or raises (lifecycle.on_extend raises Conflict); nothing is
        written then. The updated record; None when there is no such reservation."""

        def work() -> ScheduleRecord | None:
            S, Node = self.m.Schedule, self.m.Node
            where = (S.node_name == node) & (S.owner == owner)
            with self._engine.write():
                # The node's row lock serializes this with reservations of the node.
                if not self._engine.is_sqlite:
                    list(self._engine.lock(Node.select(Node.name).where(Node.name == node)))
                row = self._engine.lock(S.select().where(where)).first()
                if row is None:
                    return None
                changes = dict(decide(schedule_from_row(row), self._windows([node]).get(node, [])))
                self._check_fields(changes)
                if changes:
                    S.update(**changes).where(where).execute()
                return schedule_from_row(S.get(where))

        return await self._engine.run(work)

    async def list_schedule(
        self,
        *,
        owner: str | None = None,
        node: str | None = None,
        nodes: Iterable[str] | None = None,
        started_before: int | None = None,
    ) -> list[ScheduleRecord]:
        """Reservations by bin, node and owner, filtered by owner, node and the set of `nodes`
        when given; `started_before` keeps those starting by then, with a pending action, or with
        an action under way or done (a deploy started ahead of its start_date): the scheduler's
        working set."""
        among = None if nodes is None else sorted(set(nodes))

        def work() -> list[ScheduleRecord]:
            S = self.m.Schedule
            query = S.select().order_by(S.bin, S.node_name, S.owner)
            if owner is not None:
                query = query.where(S.owner == owner)
            if node is not None:
                query = query.where(S.node_name == node)
            if started_before is not None:
                query = query.where((S.start_date <= started_before) | (S.pending != "") | (S.process != ""))
            if among is None:
                return [schedule_from_row(row) for row in query]
            rows = []
            for start in range(0, len(among), _CHUNK):
                rows += [schedule_from_row(r) for r in query.where(S.node_name.in_(among[start : start + _CHUNK]))]
            return sorted(rows, key=lambda r: (r.bin, r.node_name, r.owner))

        return await self._engine.run(work)

    async def list_watched(self, *, now: int, until: int) -> list[ScheduleRecord]:
        """The rows lifecycle.watched(row, now, until) is True for, by bin, node and owner: the
        scheduler's ordinary poll reads only what the clock or an agent can change, so its cost
        follows what is under way and not every reservation (a deployed one with its window
        open is not read). Selected in SQL, the same conditions as lifecycle.watched."""

        def work() -> list[ScheduleRecord]:
            S = self.m.Schedule
            not_started = (
                (S.status == "ready")
                & (S.action_state == "")
                & (S.process == "")
                & (S.pending_issued == False)  # noqa: E712 - a SQL comparison
                & (S.start_date <= until)
            )
            query = (
                S.select(*[getattr(S, name) for name in SCHEDULE_FIELDS])
                .where(
                    (S.pending != "")
                    | (S.status == "in_progress")
                    | (S.ending == True)  # noqa: E712 - a SQL comparison
                    | (S.end_date <= now)
                    | not_started
                )
                .order_by(S.bin, S.node_name, S.owner)
            )
            # Tuples, not model instances: a large deploy starts thousands of rows at once.
            return [schedule_from_values(values) for values in query.tuples()]

        return await self._engine.run(work)

    async def windows(self, nodes: Iterable[str]) -> dict[str, list[Window]]:
        """Every reservation's window on `nodes`, by node, from when it occupies the node
        (lifecycle.occupied_from)."""
        names = list(nodes)
        return await self._engine.run(lambda: self._windows(names))

    def _order(self, order: str) -> list[Any]:
        """The key columns of a paging order (see `page_schedule`)."""
        S = self.m.Schedule
        if order == "node":
            return [S.node_name, S.owner]
        if order == "bin":
            # Reservations without a bin come last, as the manage page shows them.
            return [pw.Case(None, [(S.bin == "", 1)], 0), S.bin, S.node_name, S.owner]
        if order == "start":
            return [S.start_date, S.node_name, S.owner]
        raise ValueError(f"unknown order {order!r}")

    @staticmethod
    def order_key(record: ScheduleRecord, order: str) -> tuple[Any, ...]:
        """The key of `record` in a paging order: what a cursor after it holds."""
        if order == "node":
            return (record.node_name, record.owner)
        if order == "bin":
            return (1 if record.bin == "" else 0, record.bin, record.node_name, record.owner)
        if order == "start":
            return (record.start_date, record.node_name, record.owner)
        raise ValueError(f"unknown order {order!r}")

    async def page_schedule(
        self,
        *,
        order: str,
        limit: int,
        after: Sequence[Any] | None = None,
        owner: str | None = None,
        node: str | None = None,
        agent: str | None = None,
        status: str | None = None,
        ending: bool | None = None,
    ) -> tuple[list[ScheduleRecord], bool]:
        """(at most `limit` reservations, whether more follow), in `order`: "node" (node name,
        owner), "bin" (bin, those without one last, then node name and owner) or "start"
        (start date, node name, owner); only those whose key comes after `after` (a key from
        `order_key`) when given. Keyset paging: every key is unique and a reservation's key
        does not change while it is paged (except its bin, which its owner changes), so a row
        added between two pages is on the later page when its key is after the cursor and on
        neither otherwise, never twice, and no row is skipped. Filtered by owner, node, agent
        (the node cache's agent), status and `ending` when given. ValueError for an unknown
        order or a key of the wrong length."""
        columns = self._order(order)
        if after is not None and len(after) != len(columns):
            raise ValueError("the paging key does not fit the order")

        def work() -> tuple[list[ScheduleRecord], bool]:
            S, Node = self.m.Schedule, self.m.Node
            query = S.select().order_by(*columns).limit(limit + 1)
            if owner is not None:
                query = query.where(S.owner == owner)
            if node is not None:
                query = query.where(S.node_name == node)
            if status is not None:
                query = query.where(S.status == status)
            if ending is not None:
                query = query.where(S.ending == ending)
            if agent is not None:
                query = query.where(S.node_name.in_(Node.select(Node.name).where(Node.agent == agent)))
            if after is not None:
                # (c1, c2, ...) > (v1, v2, ...), spelt out: row values compare the same way on
                # SQLite and PostgreSQL only for plain columns, and the bin order has a CASE.
                later = None
                for index, column in enumerate(columns):
                    term = column > after[index]
                    for prior, value in zip(columns[:index], after[:index], strict=True):
                        term = term & (prior == value)
                    later = term if later is None else later | term
                query = query.where(later)
            rows = [schedule_from_row(row) for row in query]
            return rows[:limit], len(rows) > limit

        return await self._engine.run(work)

    async def count_schedule(self, *, owner: str | None = None) -> int:
        """How many reservations there are (of `owner` when given)."""

        def work() -> int:
            S = self.m.Schedule
            query = S.select()
            if owner is not None:
                query = query.where(S.owner == owner)
            return int(query.count())

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
                query = A.select(A.node_name, A.owner, A.prop_name, A.prop_value).where(
                    A.node_name.in_(nodes[start : start + _CHUNK])
                )
                for node, owner, prop, value in query.tuples():
                    if (node, owner) in wanted:
                        result.setdefault((node, owner), {})[prop] = value
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
        status_after: Callable[[ScheduleRecord, set[str]], Mapping[str, Any]],
    ) -> ScheduleRecord | None:
        """Sets bin (unless None) and properties, then the changes `status_after` returns for
        the row and the names of every property it now has (lifecycle.status_after_configure:
        the status and the error it clears), in one transaction. The updated record; None when
        there is no such reservation."""
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
                changes: dict[str, Any] = dict(status_after(schedule_from_row(row), have))
                if bin is not None:
                    changes["bin"] = bin
                self._check_fields(changes)
                if changes:
                    S.update(**changes).where(where).execute()
                return schedule_from_row(S.get(where))

        return await self._engine.run(work)

    async def update_schedule(
        self,
        changes: Sequence[CompareAndSet],
        *,
        now: int = 0,
        count_final: CountFinal | None = None,
        fence: Fence | None = None,
    ) -> list[bool]:
        """Applies compare-and-set changes (ScheduleChange, lifecycle.Decision) in one
        transaction (a savepoint of a group commit, Engine.run_grouped); True for each one
        applied: its row still had the `expect`ed values and, when the change has a `clear`ance,
        no other owner's window on the node breaks it. ValueError (before any write) for a
        field that is not a schedule column, or a delete that does not say how the reservation
        ended.

        With each change that applies, in the same transaction: a delete writes the
        reservation's history row (ended at `now`, epoch seconds) from the row and its
        environment property before they go; the change's effect on its node is applied (a
        final action counted with `count_final`, lifecycle.count_final, when given; the node put
        in maintenance when the change says so).

        With a `fence` (the scheduler's, store/leases.py), the transaction first checks that the
        fence's holder still holds the agent's lease with its token, and raises LeaseLost,
        writing nothing, when it does not: a controller that lost an agent to another never
        writes its rows after the new holder."""
        for change in changes:
            self._check_fields(list(change.expect) + list(change.changes))
            if change.delete and change.history is None:
                raise ValueError(f"deleting the reservation of {change.node_name} must say how it ended")

        def work() -> list[bool]:
            results = []
            with self._engine.write():
                if fence is not None:
                    check_fence(self._engine, self.m, fence)
                for change in changes:
                    done = self._apply(change, now)
                    if done:
                        apply_node_effects(self._engine, self.m, change, now, count_final)
                    results.append(done)
            return results

        # Committed with the other writes submitted meanwhile (the other agents' rounds), each
        # in a savepoint of its own: all of these changes or none, and one caller's refused
        # write never fails another's.
        return await self._engine.run_grouped(work)

    def _compare_and_set(self, change: CompareAndSet) -> bool:
        """Inside a write transaction: UPDATE schedule SET changes WHERE key AND expect, in SQL
        built once per shape of change (the scheduler writes thousands of rows of a few shapes
        per poll; peewee's query builder costs more per row than the database does). Values go
        through each field's db_value, as peewee's own queries would."""
        S = self.m.Schedule
        fields = S._meta.fields
        shape = (tuple(change.changes), tuple(change.expect))
        sql = self._cas_sql.get(shape)
        if sql is None:
            param = self._engine.db.param

            def column(name: str) -> str:
                return '"' + fields[name].column_name + '"'

            sets = ", ".join(f"{column(name)} = {param}" for name in shape[0])
            conditions = " AND ".join(
                [f"{column('node_name')} = {param}", f"{column('owner')} = {param}"]
                + [f"{column(name)} = {param}" for name in shape[1]]
            )
            sql = f'UPDATE "{S._meta.table_name}" SET {sets} WHERE {conditions}'
            self._cas_sql[shape] = sql
        params = [fields[name].db_value(value) for name, value in change.changes.items()]
        params += [change.node_name, change.owner]
        params += [fields[name].db_value(value) for name, value in change.expect.items()]
        return self._engine.db.execute_sql(sql, params).rowcount > 0

    def _apply(self, change: CompareAndSet, now: int) -> bool:
        """Inside a write transaction: one compare-and-set (with its clearance, when it has one); a
        delete also writes the history."""
        S, A = self.m.Schedule, self.m.ActionProp
        if change.clear is not None and not self._clear(change.node_name, change.owner, change.clear):
            return False
        if not change.delete and change.changes:
            return self._compare_and_set(change)
        where = (S.node_name == change.node_name) & (S.owner == change.owner)
        for name, value in change.expect.items():
            where &= getattr(S, name) == value
        if not change.delete:
            return S.update(**change.changes).where(where).execute() > 0
        row = self._engine.lock(S.select().where(where)).first()
        if row is None:
            return False
        mine = (A.node_name == change.node_name) & (A.owner == change.owner)
        environment = A.select(A.prop_value).where(mine & (A.prop_name == "environment")).first()
        ending = change.history
        assert ending is not None, "checked before the transaction"
        self.m.History.insert(
            node_name=row.node_name,
            owner=row.owner,
            bin=row.bin,
            start_date=row.start_date,
            end_date=row.end_date,
            environment=(environment.prop_value if environment else "")[:64],
            outcome=ending.outcome[:64],
            ended=ending.ended,
            end_reason=ending.reason,
            ended_by=ending.by,
            ended_at=now,
            last_error=row.last_error,
        ).execute()
        S.delete().where(where).execute()
        A.delete().where(mine).execute()
        return True

    async def move(
        self,
        node: str,
        owner: str,
        *,
        candidates: Sequence[str],
        decide: Callable[[ScheduleRecord], Decision],
        choose: Callable[[ScheduleRecord, Mapping[str, Sequence[Window]], Mapping[str, str]], list[str]],
        status_after: Callable[[ScheduleRecord], str],
        notice: str,
        now: int,
    ) -> tuple[str, ScheduleRecord] | None:
        """Moves the reservation of `owner` on `node` to one of `candidates`, in one transaction.

        `decide` gets the row as read in the transaction and returns lifecycle.on_move's
        decision (or raises Conflict); `choose` gets the row, every window on the candidates
        and the unavailable ones, and returns [the target] (lifecycle.choose_nodes). A MOVE
        re-keys the row and its properties to the target; an END_EARLY ends the row here (its
        destroy follows) and adds the reservation on the target with its window, bin, filter
        and properties, the status `status_after` gives for the row (lifecycle.moved_status)
        and `notice`. The target and the reservation there; None when there is no such
        reservation.
        """

        def work() -> tuple[str, ScheduleRecord] | None:
            S, A, Node = self.m.Schedule, self.m.ActionProp, self.m.Node
            where = (S.node_name == node) & (S.owner == owner)
            with self._engine.write():
                if not self._engine.is_sqlite:
                    names = sorted({node, *candidates})
                    list(self._engine.lock(Node.select(Node.name).where(Node.name.in_(names)).order_by(Node.name)))
                found = self._engine.lock(S.select().where(where)).first()
                if found is None:
                    return None
                row = schedule_from_row(found)
                decision = decide(row)
                [target] = choose(row, self._windows(candidates), unavailable(self.m, candidates))
                self._check_fields(list(decision.changes))
                mine = (A.node_name == node) & (A.owner == owner)
                if decision.transition is Transition.MOVE:
                    S.update(**decision.changes, node_name=target).where(where).execute()
                    A.update(node_name=target).where(mine).execute()
                else:
                    props = [(r.prop_name, r.prop_value) for r in A.select().where(mine)]
                    applied = self._apply(decision, now)
                    assert applied, "the row was read and locked in this transaction"
                    S.insert(
                        node_name=target,
                        owner=owner,
                        bin=row.bin,
                        start_date=row.start_date,
                        end_date=row.end_date,
                        status=status_after(row),
                        action_state="",
                        request_filter=row.request_filter,
                        notice=notice,
                    ).execute()
                    for prop, value in props:
                        A.insert(node_name=target, prop_name=prop, prop_value=value, owner=owner).execute()
                return target, schedule_from_row(S.get((S.node_name == target) & (S.owner == owner)))

        return await self._engine.run(work)

    async def list_history(
        self,
        *,
        owner: str | None = None,
        node: str | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> list[HistoryEntry]:
        """Ended reservations, newest first, filtered by owner and node when given; `before`
        (an entry's id) pages on to older ones; at most `limit`."""

        def work() -> list[HistoryEntry]:
            H = self.m.History
            query = H.select().order_by(H.id.desc()).limit(limit)
            if owner is not None:
                query = query.where(H.owner == owner)
            if node is not None:
                query = query.where(H.node_name == node)
            if before is not None:
                query = query.where(H.id < before)
            return [history_from_row(row) for row in query]

        return await self._engine.run(work)

    async def timeline(
        self, start: int, end: int, nodes: Iterable[str] | None = None
    ) -> list[tuple[str, str, int, int]]:
        """(node_name, owner, start_date, end_date) of every window overlapping [start, end),
        on `nodes` only when given (the rows a page shows)."""
        among = None if nodes is None else sorted(set(nodes))

        def work() -> list[tuple[str, str, int, int]]:
            S = self.m.Schedule
            query = (
                S.select(S.node_name, S.owner, S.start_date, S.end_date)
                .where((S.start_date < end) & (S.end_date > start))
                .order_by(S.node_name, S.start_date)
            )
            # Tuples, not model instances: the reserve page reads thousands of windows.
            if among is None:
                return [(node, owner, int(s), int(e)) for node, owner, s, e in query.tuples()]
            result = []
            for first in range(0, len(among), _CHUNK):
                chunk = query.where(S.node_name.in_(among[first : first + _CHUNK]))
                result += [(node, owner, int(s), int(e)) for node, owner, s, e in chunk.tuples()]
            return result

        return await self._engine.run(work)

    async def next_starts(
        self, after: int, before: int, nodes: Iterable[str] | None = None
    ) -> dict[str, int]:
        """{node_name: start_date} of each node's first window starting in [after, before)
        (epoch seconds), on `nodes` only when given: one grouped query instead of reading
        every window up to `before`."""
        among = None if nodes is None else sorted(set(nodes))

        def work() -> dict[str, int]:
            S = self.m.Schedule
            query = (
                S.select(S.node_name, pw.fn.MIN(S.start_date))
                .where((S.start_date >= after) & (S.start_date < before))
                .group_by(S.node_name)
            )
            if among is None:
                return {node: int(start) for node, start in query.tuples()}
            result: dict[str, int] = {}
            for first in range(0, len(among), _CHUNK):
                chunk = query.where(S.node_name.in_(among[first : first + _CHUNK]))
                result.update((node, int(start)) for node, start in chunk.tuples())
            return result

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
