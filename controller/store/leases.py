"""Controllers sharing one database (tables `controller_instance` and `agent_lease`): heartbeats,
the agents' leases with their fencing tokens, and the check every scheduler write makes.

Every time here is the database's clock (`now_sql`: PostgreSQL's `clock_timestamp()`, SQLite's
`julianday('now')`), in epoch seconds, never a controller's: two controllers whose clocks differ
still agree on who holds what. A lease is taken or renewed by ONE compare-and-set UPDATE (free,
expired or already ours), so two controllers racing for an agent never both hold it; the token
grows by one each time the holder changes, and a write that carries an older token changes
nothing (`Fence`, `check_fence`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import peewee as pw

from edgebed.controller.store.engine import Engine

# The lease on the work no agent owns: reservations whose node left the inventory or whose agent
# is gone, and the removals waiting for their reservations to end. No agent can be named so
# (agent names are whole names: letters, digits, '-', '_', '.').
LEADER = "*"

# A controller whose heartbeat is older than this many leases is forgotten (its row deleted);
# until then the overview shows it as stopped.
_FORGET_AFTER_LEASES = 20


class LeaseLost(Exception):
    """A write carried a fence this controller no longer holds (another controller took the
    agent over, or the lease expired): nothing was written. Not a database error: the new holder
    decides again from what it reads."""

    def __init__(self, fence: Fence) -> None:
        super().__init__(f"the lease on {fence.agent} (token {fence.token}) is no longer held by {fence.holder}")
        self.fence = fence


@dataclass(frozen=True)
class Fence:
    """What a scheduler write carries: the agent whose rows it writes (or LEADER), the
    controller instance that holds its lease and the lease's token when it was taken."""

    agent: str
    holder: str
    token: int
    # The holder is the only controller that can drive agents (it holds the SQLite file's lock,
    # controller/leases.py `exclusive`): its lease counts however late its last renewal was.
    exclusive: bool = False


@dataclass(frozen=True)
class InstanceRecord:
    """A controller process sharing the database. Times are the database's epoch seconds;
    `alive`: its heartbeat is younger than a lease as the reader's lease_seconds says."""

    id: str
    host: str
    pid: int
    role: str
    started_at: float
    heartbeat_at: float
    alive: bool


@dataclass(frozen=True)
class LeaseRecord:
    """An agent's lease. `held`: its holder is set and it has not expired; `age`: seconds since
    this holder took it; `renewed_ago`: seconds since it was last renewed (database clock)."""

    agent: str
    holder: str
    token: int
    acquired_at: float
    renewed_at: float
    expires_at: float
    held: bool
    age: float
    renewed_ago: float


def now_sql(engine: Engine) -> pw.SQL:
    """The database's clock in epoch seconds, as an SQL expression."""
    if engine.is_sqlite:
        return pw.SQL("((julianday('now') - 2440587.5) * 86400.0)")
    return pw.SQL("EXTRACT(EPOCH FROM clock_timestamp())")


def db_now(engine: Engine) -> float:
    """The database's clock now (inside a connection), epoch seconds."""
    sql = now_sql(engine).sql
    row = engine.db.execute_sql(f"SELECT {sql}").fetchone()
    return float(row[0])


def check_fence(engine: Engine, models: SimpleNamespace, fence: Fence) -> None:
    """Inside the caller's write transaction: raises LeaseLost unless `fence.holder` still holds
    the lease on `fence.agent` with `fence.token`, unexpired (expired too for an exclusive
    holder, whom nobody can take it from). On PostgreSQL the lease row is read
    FOR SHARE: a takeover (an UPDATE of that row) waits until this transaction ends, and a
    takeover already committed is seen, so a stale holder's write never lands after the new
    holder took the agent. SQLite's IMMEDIATE transaction already holds the only write lock."""
    L = models.AgentLease
    held = (L.agent == fence.agent) & (L.holder == fence.holder) & (L.token == fence.token)
    query = L.select(L.agent).where(held if fence.exclusive else held & (L.expires_at > now_sql(engine)))
    if not engine.is_sqlite:
        query = query.for_update("FOR SHARE")
    if query.first() is None:
        raise LeaseLost(fence)


class LeaseRepository:
    """Every method is a coroutine run in the engine's thread pool."""

    def __init__(self, engine: Engine, models: SimpleNamespace) -> None:
        self._engine = engine
        self.m = models

    async def heartbeat(
        self, instance: str, *, host: str, pid: int, role: str, lease_seconds: float
    ) -> list[InstanceRecord]:
        """Records that `instance` is alive now (adding its row the first time), forgets the
        controllers silent for 20 leases, and returns every controller known, alive or not
        (alive: heartbeat within `lease_seconds`), by id."""

        def work() -> list[InstanceRecord]:
            Inst = self.m.ControllerInstance
            now = db_now(self._engine)
            with self._engine.write():
                updated = Inst.update(heartbeat_at=now, role=role).where(Inst.id == instance).execute()
                if not updated:
                    Inst.insert(
                        id=instance, host=host[:255], pid=pid, role=role, started_at=now, heartbeat_at=now
                    ).execute()
                Inst.delete().where(Inst.heartbeat_at < now - _FORGET_AFTER_LEASES * lease_seconds).execute()
            return self._instances(now, lease_seconds)

        return await self._engine.run(work)

    def _instances(self, now: float, lease_seconds: float) -> list[InstanceRecord]:
        Inst = self.m.ControllerInstance
        return [
            InstanceRecord(
                id=r.id, host=r.host, pid=int(r.pid), role=r.role, started_at=float(r.started_at),
                heartbeat_at=float(r.heartbeat_at), alive=float(r.heartbeat_at) > now - lease_seconds,
            )
            for r in Inst.select().order_by(Inst.id)
        ]

    async def instances(self, lease_seconds: float) -> list[InstanceRecord]:
        """Every controller known (alive: heartbeat within `lease_seconds`), by id."""

        def work() -> list[InstanceRecord]:
            return self._instances(db_now(self._engine), lease_seconds)

        return await self._engine.run(work)

    async def acquire(self, holder: str, agents: Iterable[str], lease_seconds: float) -> dict[str, int]:
        """Takes or renews, for `lease_seconds` from the database's now, the lease of each of
        `agents` that is free, expired or already `holder`'s: one compare-and-set UPDATE (a new
        agent's row is added first, free). The token grows by one when the holder changes.
        Returns {agent: token} of the leases `holder` holds afterwards among `agents`."""
        names = sorted(set(agents))
        if not names:
            return {}

        def work() -> dict[str, int]:
            L = self.m.AgentLease
            now = now_sql(self._engine)
            with self._engine.write():
                known = {r.agent for r in L.select(L.agent).where(L.agent.in_(names))}
                for name in names:
                    if name not in known:
                        L.insert(agent=name, holder="", token=0).on_conflict_ignore().execute()
            with self._engine.write():
                mine = L.holder == holder
                L.update(
                    holder=holder,
                    token=pw.Case(None, [(mine, L.token)], L.token + 1),
                    acquired_at=pw.Case(None, [(mine, L.acquired_at)], now),
                    renewed_at=now,
                    expires_at=now + lease_seconds,
                ).where(L.agent.in_(names) & (mine | (L.holder == "") | (L.expires_at <= now))).execute()
                rows = L.select(L.agent, L.token).where(L.agent.in_(names) & (L.holder == holder))
                return {r.agent: int(r.token) for r in rows}

        return await self._engine.run(work)

    async def release(self, holder: str, agents: Iterable[str] | None = None) -> int:
        """Gives up `holder`'s leases on `agents` (all of them when None) at once, so another
        controller takes them over at its next heartbeat instead of after they expire. How many
        it released."""
        names = None if agents is None else sorted(set(agents))
        if names == []:
            return 0

        def work() -> int:
            L = self.m.AgentLease
            where = L.holder == holder
            if names is not None:
                where &= L.agent.in_(names)
            return int(L.update(holder="", expires_at=now_sql(self._engine)).where(where).execute())

        return await self._engine.run(work)

    async def leave(self, instance: str) -> None:
        """A controller stopping cleanly: its leases released, its heartbeat row deleted."""
        await self.release(instance)

        def work() -> None:
            Inst = self.m.ControllerInstance
            Inst.delete().where(Inst.id == instance).execute()

        await self._engine.run(work)

    async def leases(self) -> list[LeaseRecord]:
        """Every agent's lease (LEADER's too), by agent, as the database's clock sees them."""

        def work() -> list[LeaseRecord]:
            L = self.m.AgentLease
            now = db_now(self._engine)
            result = []
            for r in L.select().order_by(L.agent):
                held = bool(r.holder) and float(r.expires_at) > now
                result.append(
                    LeaseRecord(
                        agent=r.agent, holder=r.holder, token=int(r.token), acquired_at=float(r.acquired_at),
                        renewed_at=float(r.renewed_at), expires_at=float(r.expires_at), held=held,
                        age=max(0.0, now - float(r.acquired_at)) if held else 0.0,
                        renewed_ago=max(0.0, now - float(r.renewed_at)) if held else 0.0,
                    )
                )
            return result

        return await self._engine.run(work)

    async def forget(self, agents: Sequence[str]) -> None:
        """Deletes the leases of agents that were removed."""
        if not agents:
            return

        def work() -> None:
            L = self.m.AgentLease
            L.delete().where(L.agent.in_(sorted(set(agents)))).execute()

        await self._engine.run(work)
