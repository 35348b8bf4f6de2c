"""The controller's database: the only package of the controller that touches Peewee.

    engine.py      opening SQLite (WAL) or PostgreSQL, the thread pool, write transactions
    models.py      the current schema, bound to the engine's proxy when the store opens
    migrations/    one module per schema version with its frozen models, and the runner
    conversions.py rows to domain records
    sealing.py     agent tokens encrypted at rest with a key derived from the secret key
    records.py     CachedNode and ScheduleChange
    users.py, agents.py, inventory.py, schedule.py, maintenance.py, health.py, leases.py,
    logins.py      one repository per aggregate

`Store` opens the engine, brings the schema up to date and exposes the repositories:
`store.users`, `store.agents`, `store.inventory`, `store.schedule` (reservations and their
history), `store.maintenance` (nodes in maintenance, removals waiting for reservations to end),
`store.health` (finished actions per node), `store.leases` (controllers sharing the database:
heartbeats, agents' leases and their fencing tokens), `store.logins` (log-in attempts the rate
limits count). Every repository method is a
coroutine that runs in the store's own thread pool with a pooled connection, so the event loop
never blocks on the database. Read-then-write transactions take the write lock up front
(`BEGIN IMMEDIATE` on SQLite; row locks with `FOR UPDATE` or an advisory lock on PostgreSQL),
which is what makes reservations race-safe.
"""

from __future__ import annotations

from pathlib import Path

from edgebed.controller.errors import StorageFull
from edgebed.controller.store.agents import AgentRepository
from edgebed.controller.store.engine import OPEN_ERRORS, WRITE_ERRORS, Engine, open_database
from edgebed.controller.store.health import HealthRepository
from edgebed.controller.store.inventory import InventoryRepository
from edgebed.controller.store.leases import LEADER, Fence, InstanceRecord, LeaseLost, LeaseRecord, LeaseRepository
from edgebed.controller.store.logins import LoginAttemptRepository
from edgebed.controller.store.maintenance import MaintenanceRepository
from edgebed.controller.store.migrations import SCHEMA_VERSION, migrate, schema_version
from edgebed.controller.store.models import define_models
from edgebed.controller.store.records import CachedNode, ScheduleChange
from edgebed.controller.store.schedule import ScheduleRepository
from edgebed.controller.store.sealing import Sealer
from edgebed.controller.store.users import UserRepository
from edgebed.storage import is_damage, sqlite_file

__all__ = [
    "LEADER",
    "SCHEMA_VERSION",
    "Fence",
    "InstanceRecord",
    "LeaseLost",
    "LeaseRecord",
    "LeaseRepository",
    "LoginAttemptRepository",
    "AgentRepository",
    "CachedNode",
    "HealthRepository",
    "InventoryRepository",
    "MaintenanceRepository",
    "ScheduleChange",
    "ScheduleRepository",
    "Store",
    "StoreDamaged",
    "StoreInUse",
    "StoreUnavailable",
    "UserRepository",
    "WRITE_ERRORS",
    "migrate",
    "open_database",
]


class StoreUnavailable(Exception):
    """The database cannot be opened or migrated; the message says why (never a password)."""


class StoreInUse(StoreUnavailable):
    """Another controller runs on the same SQLite file; the message names the file."""


class StoreDamaged(StoreUnavailable):
    """The SQLite file is damaged or is no SQLite database; the message is the first problem
    SQLite's integrity check (or its open) reported."""


class Store:
    """The database of one controller: `users`, `agents`, `inventory`, `schedule`,
    `maintenance` and `health`.

    Usable between `await open()` and `await close()`; a repository method called outside that
    raises RuntimeError. `secret_key` is the controller's (Settings.secret_key()): agent tokens
    are sealed with a key derived from it. `workers` is the number of database threads (and
    pooled connections). `idle_transaction_seconds` (PostgreSQL): how long the server lets a
    transaction of ours sit idle before ending it (engine.open_database).
    """

    def __init__(
        self, url: str, *, secret_key: bytes, workers: int = 8, idle_transaction_seconds: float | None = None
    ) -> None:
        self.url = url
        self._engine = Engine(url, workers=workers, idle_transaction_seconds=idle_transaction_seconds)
        models = define_models(self._engine.proxy)
        self.users = UserRepository(self._engine, models)
        # Agent tokens are stored sealed with a key derived from the controller's secret key.
        self.agents = AgentRepository(self._engine, models, Sealer(secret_key))
        self.inventory = InventoryRepository(self._engine, models)
        self.schedule = ScheduleRepository(self._engine, models)
        self.maintenance = MaintenanceRepository(self._engine, models)
        self.health = HealthRepository(self._engine, models)
        self.leases = LeaseRepository(self._engine, models)
        self.logins = LoginAttemptRepository(self._engine, models)

    async def open(self, *, check_integrity: bool = False) -> None:
        """Opens the database, upgrades its schema in place to SCHEMA_VERSION (creating it when
        new) and seals the agent tokens an older controller stored in clear; with
        `check_integrity`, first runs SQLite's quick_check over the whole file (start-up: a
        damaged file stops the controller instead of answering 500s).

        StoreDamaged when the file is damaged, StoreUnavailable with the first line of the reason
        when the database cannot be opened."""
        try:
            self._engine.open()
            if check_integrity:
                problem = await self._engine.run(self._engine.damage)
                if problem is not None:
                    raise StoreDamaged(problem)
            await self._engine.run(migrate, self._engine.db)
            await self._engine.run(self.agents.seal_plaintext_tokens)
        except StoreDamaged:
            await self.close()
            raise
        except StorageFull as exc:
            await self.close()
            raise StoreUnavailable(exc.message) from None
        except OPEN_ERRORS as exc:
            await self.close()
            lines = str(exc).strip().splitlines()
            first = lines[0] if lines else type(exc).__name__
            if is_damage(exc):
                raise StoreDamaged(first) from exc
            raise StoreUnavailable(first) from exc

    @property
    def file(self) -> Path | None:
        """The SQLite file, or None for PostgreSQL."""
        return sqlite_file(self.url)

    async def close(self) -> None:
        """Waits for the queries under way and closes every connection. Idempotent."""
        self._engine.close()

    @property
    def is_sqlite(self) -> bool:
        return self._engine.is_sqlite

    async def schema_version(self) -> int:
        """The schema version the database records."""
        return await self._engine.run(lambda: schema_version(self._engine.db))
