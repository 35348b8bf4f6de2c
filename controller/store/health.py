"""Finished actions per node (table `node_outcome`): what the scheduler records when an agent
reports a final state, and the reads behind node health and expected deploy durations.

The table is bounded: each node keeps only its last `keep` outcomes (controller/health.py's
OUTCOMES_PER_NODE), pruned in the transaction that records new ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import SimpleNamespace

import peewee as pw

from edgebed.controller.domain import NodeHealth, NodeOutcome
from edgebed.controller.store.engine import Engine

_CHUNK = 500


class HealthRepository:
    """Every method is a coroutine run in the engine's thread pool."""

    def __init__(self, engine: Engine, models: SimpleNamespace) -> None:
        self._engine = engine
        self.m = models

    async def record_outcomes(
        self, outcomes: Sequence[NodeOutcome], *, recorded_at: int, keep: int
    ) -> list[NodeOutcome]:
        """Records `outcomes` in one transaction, each once: an outcome whose (node_name,
        action_id) is already there is skipped, so the same report recorded twice (a poll
        repeated after a crash) counts once. Then drops all but the `keep` newest outcomes of
        each node concerned. Returns the outcomes that were new. ValueError when keep < 1."""
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if not outcomes:
            return []

        def work() -> list[NodeOutcome]:
            Out = self.m.NodeOutcome
            db = self._engine.db
            table = Out._meta.table_name
            with self._engine.write():
                wanted: dict[tuple[str, int], NodeOutcome] = {}
                for outcome in outcomes:
                    wanted.setdefault((outcome.node_name, outcome.action_id), outcome)
                nodes = sorted({node for node, _ in wanted})
                # Plain SQL, statements by chunk: a deploy of thousands of nodes ends in a few
                # polls, and peewee's query builder costs more per row than the database does.
                have: set[tuple[str, int]] = set()
                for start in range(0, len(nodes), _CHUNK):
                    chunk = nodes[start : start + _CHUNK]
                    marks = ", ".join([db.param] * len(chunk))
                    cursor = db.execute_sql(
                        f'SELECT node_name, action_id FROM "{table}" WHERE node_name IN ({marks})', chunk
                    )
                    have.update((node, int(action_id)) for node, action_id in cursor.fetchall())
                fresh = [outcome for key, outcome in wanted.items() if key not in have]
                columns = (
                    "node_name", "type", "process", "environment", "final_state", "action_id",
                    "duration_seconds", "reboots", "finished_at", "recorded_at",
                )
                # The unique (node_name, action_id) index stays the guard against a second
                # writer on PostgreSQL.
                insert = (
                    f'INSERT INTO "{table}" ({", ".join(columns)}) '
                    f'VALUES ({", ".join([db.param] * len(columns))}) ON CONFLICT DO NOTHING'
                )
                cursor = db.cursor()
                cursor.executemany(
                    insert,
                    [
                        (
                            o.node_name, o.type, o.process, o.environment, o.final_state, o.action_id,
                            o.duration_seconds, o.reboots, o.finished_at, recorded_at,
                        )
                        for o in fresh
                    ],
                )
                touched = sorted({outcome.node_name for outcome in fresh})
                crowded = []
                for start in range(0, len(touched), _CHUNK):
                    chunk = touched[start : start + _CHUNK]
                    marks = ", ".join([db.param] * len(chunk))
                    cursor = db.execute_sql(
                        f'SELECT node_name FROM "{table}" WHERE node_name IN ({marks}) '
                        f"GROUP BY node_name HAVING COUNT(*) > {db.param}",
                        [*chunk, keep],
                    )
                    crowded += [node for (node,) in cursor.fetchall()]
                for node in crowded:
                    newest = Out.select(Out.id).where(Out.node_name == node).order_by(Out.id.desc()).limit(keep)
                    Out.delete().where((Out.node_name == node) & Out.id.not_in(newest)).execute()
            return fresh

        return await self._engine.run_grouped(work)

    async def outcomes(self, node: str) -> list[NodeOutcome]:
        """The node's recorded outcomes, newest first."""

        def work() -> list[NodeOutcome]:
            Out = self.m.NodeOutcome
            query = Out.select().where(Out.node_name == node).order_by(Out.id.desc())
            return [_outcome_from_row(row) for row in query]

        return await self._engine.run(work)

    async def health(self, nodes: Iterable[str] | None = None) -> dict[str, NodeHealth]:
        """{node: its NodeHealth over the outcomes kept}, for `nodes` (None: every node with a
        record); a node without any record is absent."""
        names = None if nodes is None else sorted(set(nodes))

        def work() -> dict[str, NodeHealth]:
            Out = self.m.NodeOutcome
            succeeded = pw.Case(None, [(Out.final_state != "lost", 1)], 0)
            query = Out.select(
                Out.node_name,
                pw.fn.COUNT(Out.id).alias("actions"),
                pw.fn.SUM(succeeded).alias("successes"),
                pw.fn.SUM(Out.reboots).alias("reboots"),
            ).group_by(Out.node_name)
            chunks = [None] if names is None else [names[i : i + _CHUNK] for i in range(0, len(names), _CHUNK)]
            result: dict[str, NodeHealth] = {}
            for chunk in chunks:
                selected = query if chunk is None else query.where(Out.node_name.in_(chunk))
                for row in selected.objects():
                    result[row.node_name] = NodeHealth(
                        node_name=row.node_name,
                        actions=int(row.actions),
                        successes=int(row.successes or 0),
                        reboots=int(row.reboots or 0),
                    )
            return result

        return await self._engine.run(work)

    async def deploy_durations(self, per_kind: int) -> dict[tuple[str, str], list[float]]:
        """{(node type, environment): durations in seconds of the newest `per_kind` deploys that
        ended `deployed` with a measured duration}, newest first."""

        def work() -> dict[tuple[str, str], list[float]]:
            Out = self.m.NodeOutcome
            query = (
                Out.select(Out.type, Out.environment, Out.duration_seconds)
                .where((Out.process == "deploy") & (Out.final_state == "deployed") & (Out.duration_seconds > 0))
                .order_by(Out.id.desc())
            )
            result: dict[tuple[str, str], list[float]] = {}
            for row in query:
                kept = result.setdefault((row.type, row.environment), [])
                if len(kept) < per_kind:
                    kept.append(float(row.duration_seconds))
            return result

        return await self._engine.run(work)


def _outcome_from_row(row) -> NodeOutcome:
    return NodeOutcome(
        node_name=row.node_name,
        type=row.type,
        process=row.process,
        environment=row.environment,
        final_state=row.final_state,
        action_id=int(row.action_id),
        duration_seconds=float(row.duration_seconds),
        reboots=int(row.reboots),
        finished_at=int(row.finished_at),
    )
