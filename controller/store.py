"""The controller's database: the only module of the controller that touches Peewee.

SQLite (WAL mode) by default, PostgreSQL by URL, through the same code. Models are defined per
Store and bound to its database when it opens (a DatabaseProxy initialized at start-up), so
nothing is configured at import time and two stores can live in one process (tests do).

Every public method is a coroutine that runs its work in the store's own thread pool with a
pooled connection, so the event loop never blocks on the database. Read-then-write transactions
take the write lock up front (`BEGIN IMMEDIATE` on SQLite; row locks with `FOR UPDATE` on
PostgreSQL), which is what makes reservations race-safe.

The schema is versioned (table `schema_version`); `MIGRATIONS` upgrade an existing database in
place, one step per version, each in its own transaction.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import peewee as pw
from playhouse.pool import PooledPostgresqlDatabase, PooledSqliteDatabase

from edgebed.controller.domain import (
    CONNECTED,
    AgentCatalog,
    AgentRecord,
    ApiToken,
    Environment,
    NodeTypeInfo,
    PropertySpec,
    ScheduleRecord,
    User,
)
from edgebed.controller.errors import Conflict
from edgebed.config import redacted_url

log = logging.getLogger(__name__)

# PostgreSQL advisory lock key of the node cache and catalog writes (any number unique to them).
_INVENTORY_LOCK = 0x6564_6765_6E6F

T = TypeVar("T")

SCHEMA_VERSION = 2

# Columns of `schedule` that the service and the scheduler may change (see update_schedule).
SCHEDULE_FIELDS = tuple(f.name for f in fields(ScheduleRecord))


# ---------------------------------------------------------------------------------------------
# Connecting


def open_database(url: str, *, max_connections: int) -> pw.Database:
    """A pooled Peewee database for a file path, sqlite:///PATH or postgresql://... URL."""
    if url.startswith(("postgresql://", "postgres://")):
        parsed = urlparse(url)
        name = unquote(parsed.path.lstrip("/"))
        if not name:
            raise ValueError(f"database URL {redacted_url(url)!r} names no database")
        params: dict[str, Any] = {}
        if parsed.hostname:
            params["host"] = parsed.hostname
        if parsed.port:
            params["port"] = parsed.port
        if parsed.username:
            params["user"] = unquote(parsed.username)
        if parsed.password:
            params["password"] = unquote(parsed.password)
        return PooledPostgresqlDatabase(
            name, max_connections=max_connections, stale_timeout=300, timeout=60, **params
        )
    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else url
    if not path or path == ":memory:":
        raise ValueError("the controller needs a database file, not an in-memory database")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return PooledSqliteDatabase(
        path,
        max_connections=None,
        stale_timeout=300,
        check_same_thread=False,
        pragmas=(
            # Wait for the write lock instead of failing: writers queue up behind each other.
            ("busy_timeout", 60000),
            ("journal_mode", "wal"),
            # FULL: a committed intent survives a power cut, so a restart never repeats an action.
            ("synchronous", "full"),
            ("foreign_keys", 1),
        ),
    )


class _HideQueryParameters(logging.Filter):
    """Peewee logs every query with its parameters at DEBUG; those carry password hashes, API
    token hashes and secret action properties (os_password). Keep the SQL, drop the values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, tuple) and len(record.msg) == 2:
            record.msg = (record.msg[0], "<parameters hidden>")
        return True


def hide_query_parameters() -> None:
    peewee_log = logging.getLogger("peewee")
    if not any(isinstance(f, _HideQueryParameters) for f in peewee_log.filters):
        peewee_log.addFilter(_HideQueryParameters())


def is_sqlite(db: pw.Database) -> bool:
    return isinstance(db, pw.SqliteDatabase)


# ---------------------------------------------------------------------------------------------
# Models (current schema). Field names of the seed's tables are kept exactly.


def define_models(proxy: pw.DatabaseProxy) -> SimpleNamespace:
    class Base(pw.Model):
        class Meta:
            database = proxy
            legacy_table_names = False

    class SchemaVersion(Base):
        version = pw.IntegerField()

        class Meta:
            table_name = "schema_version"
            primary_key = False

    class UserRow(Base):
        email = pw.CharField(primary_key=True, max_length=254)
        password = pw.CharField(max_length=255)
        ssh_key = pw.TextField(default="")
        confirmed_email = pw.BooleanField(default=False)
        is_authorized = pw.BooleanField(default=False)
        is_admin = pw.BooleanField(default=False)
        created_at = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "user"

    class AgentRow(Base):
        name = pw.CharField(primary_key=True, max_length=64)
        type = pw.CharField(max_length=32)
        ip = pw.CharField(max_length=255)
        port = pw.IntegerField()
        status = pw.CharField(max_length=16)
        token = pw.TextField()
        last_error = pw.TextField(default="")

        class Meta:
            table_name = "agent"

    class ScheduleRow(Base):
        node_name = pw.CharField(max_length=64)
        owner = pw.CharField(max_length=254)
        bin = pw.CharField(max_length=64, default="")
        start_date = pw.BigIntegerField()
        end_date = pw.BigIntegerField()
        status = pw.CharField(max_length=16)
        action_state = pw.CharField(max_length=64, default="")
        process = pw.CharField(max_length=32, default="")
        state_idx = pw.IntegerField(default=0)
        state_count = pw.IntegerField(default=0)
        progress = pw.IntegerField(default=0)
        node_ip = pw.CharField(max_length=255, default="")
        action_updated_at = pw.BigIntegerField(default=0)
        pending = pw.CharField(max_length=32, default="")
        pending_issued = pw.BooleanField(default=False)
        pending_since = pw.BigIntegerField(default=0)
        baseline = pw.TextField(default="")
        ending = pw.BooleanField(default=False)
        last_error = pw.TextField(default="")

        class Meta:
            table_name = "schedule"
            primary_key = pw.CompositeKey("node_name", "owner")

    class ActionPropRow(Base):
        node_name = pw.CharField(max_length=64)
        prop_name = pw.CharField(max_length=64)
        prop_value = pw.TextField()
        owner = pw.CharField(max_length=254)

        class Meta:
            table_name = "action_prop"
            primary_key = pw.CompositeKey("node_name", "prop_name", "owner")

    class NodeRow(Base):
        name = pw.CharField(primary_key=True, max_length=64)
        agent = pw.CharField(max_length=64, index=True)
        type = pw.CharField(max_length=32)
        properties = pw.TextField(default="{}")
        updated_at = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "node"

    class ApiTokenRow(Base):
        id = pw.AutoField()
        owner = pw.CharField(max_length=254, index=True)
        label = pw.CharField(max_length=100, default="")
        token_hash = pw.CharField(max_length=64, unique=True)
        created_at = pw.BigIntegerField(default=0)
        last_used_at = pw.BigIntegerField(null=True)

        class Meta:
            table_name = "api_token"

    class CatalogRow(Base):
        agent = pw.CharField(primary_key=True, max_length=64)
        type = pw.CharField(max_length=32)
        node_type = pw.TextField(default="")
        environments = pw.TextField(default="[]")
        updated_at = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "agent_catalog"

    return SimpleNamespace(
        SchemaVersion=SchemaVersion,
        User=UserRow,
        Agent=AgentRow,
        Schedule=ScheduleRow,
        ActionProp=ActionPropRow,
        Node=NodeRow,
        ApiToken=ApiTokenRow,
        Catalog=CatalogRow,
    )


# ---------------------------------------------------------------------------------------------
# Migrations. Each step is frozen: it never uses the current models, so a later change to them
# cannot alter what an old step does.


def _migration_1(db: pw.Database) -> None:
    """The seed's tables, exactly as the seed lists them."""
    proxy = pw.DatabaseProxy()
    proxy.initialize(db)

    class Base(pw.Model):
        class Meta:
            database = proxy
            legacy_table_names = False

    class User(Base):
        email = pw.CharField(primary_key=True, max_length=254)
        password = pw.CharField(max_length=255)
        ssh_key = pw.TextField(default="")
        confirmed_email = pw.BooleanField(default=False)
        is_authorized = pw.BooleanField(default=False)
        is_admin = pw.BooleanField(default=False)

        class Meta:
            table_name = "user"

    class Agent(Base):
        name = pw.CharField(primary_key=True, max_length=64)
        type = pw.CharField(max_length=32)
        ip = pw.CharField(max_length=255)
        port = pw.IntegerField()
        status = pw.CharField(max_length=16)
        token = pw.TextField()

        class Meta:
            table_name = "agent"

    class Schedule(Base):
        node_name = pw.CharField(max_length=64)
        owner = pw.CharField(max_length=254)
        bin = pw.CharField(max_length=64, default="")
        start_date = pw.BigIntegerField()
        end_date = pw.BigIntegerField()
        status = pw.CharField(max_length=16)
        action_state = pw.CharField(max_length=64, default="")

        class Meta:
            table_name = "schedule"
            primary_key = pw.CompositeKey("node_name", "owner")

    class ActionProp(Base):
        node_name = pw.CharField(max_length=64)
        prop_name = pw.CharField(max_length=64)
        prop_value = pw.TextField()
        owner = pw.CharField(max_length=254)

        class Meta:
            table_name = "action_prop"
            primary_key = pw.CompositeKey("node_name", "prop_name", "owner")

    db.create_tables([User, Agent, Schedule, ActionProp])


def _add_columns(db: pw.Database, table: str, columns: Sequence[tuple[str, str]]) -> None:
    """ALTER TABLE ADD COLUMN ... NOT NULL DEFAULT, which both SQLite and PostgreSQL accept."""
    sqlite = is_sqlite(db)
    types = {
        "int": ("INTEGER", "0") if sqlite else ("BIGINT", "0"),
        "text": ("TEXT", "''"),
        "bool": ("INTEGER", "0") if sqlite else ("BOOLEAN", "FALSE"),
    }
    for name, kind in columns:
        sql_type, default = types[kind]
        db.execute_sql(
            f'ALTER TABLE "{table}" ADD COLUMN "{name}" {sql_type} NOT NULL DEFAULT {default}'
        )


def _migration_2(db: pw.Database) -> None:
    """What the controller needs beyond the seed: dates, errors, the scheduler's bookkeeping,
    the node cache, API tokens and the agents' catalogs."""
    _add_columns(db, "user", [("created_at", "int")])
    _add_columns(db, "agent", [("last_error", "text")])
    _add_columns(
        db,
        "schedule",
        [
            ("process", "text"),
            ("state_idx", "int"),
            ("state_count", "int"),
            ("progress", "int"),
            ("node_ip", "text"),
            ("action_updated_at", "int"),
            ("pending", "text"),
            ("pending_issued", "bool"),
            ("pending_since", "int"),
            ("baseline", "text"),
            ("ending", "bool"),
            ("last_error", "text"),
        ],
    )
    db.execute_sql('CREATE INDEX "schedule_start_date" ON "schedule" ("start_date")')

    proxy = pw.DatabaseProxy()
    proxy.initialize(db)

    class Base(pw.Model):
        class Meta:
            database = proxy
            legacy_table_names = False

    class Node(Base):
        name = pw.CharField(primary_key=True, max_length=64)
        agent = pw.CharField(max_length=64, index=True)
        type = pw.CharField(max_length=32)
        properties = pw.TextField(default="{}")
        updated_at = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "node"

    class ApiToken(Base):
        id = pw.AutoField()
        owner = pw.CharField(max_length=254, index=True)
        label = pw.CharField(max_length=100, default="")
        token_hash = pw.CharField(max_length=64, unique=True)
        created_at = pw.BigIntegerField(default=0)
        last_used_at = pw.BigIntegerField(null=True)

        class Meta:
            table_name = "api_token"

    class Catalog(Base):
        agent = pw.CharField(primary_key=True, max_length=64)
        type = pw.CharField(max_length=32)
        node_type = pw.TextField(default="")
        environments = pw.TextField(default="[]")
        updated_at = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "agent_catalog"

    db.create_tables([Node, ApiToken, Catalog])


MIGRATIONS: dict[int, Callable[[pw.Database], None]] = {1: _migration_1, 2: _migration_2}


def schema_version(db: pw.Database) -> int:
    if "schema_version" not in db.get_tables():
        return 0
    row = db.execute_sql('SELECT MAX("version") FROM "schema_version"').fetchone()
    return int(row[0] or 0)


def migrate(db: pw.Database, target: int = SCHEMA_VERSION) -> int:
    """Brings the schema up to `target`, one step per transaction; returns the final version."""
    with db.connection_context():
        if "schema_version" not in db.get_tables():
            db.execute_sql('CREATE TABLE IF NOT EXISTS "schema_version" ("version" INTEGER NOT NULL)')
        current = schema_version(db)
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"the database has schema version {current}, newer than this controller "
                f"({SCHEMA_VERSION}): upgrade edgebed"
            )
        for version in range(current + 1, target + 1):
            lock = db.atomic("IMMEDIATE") if is_sqlite(db) else db.atomic()
            with lock:
                # Another controller may have migrated while we waited for the lock.
                if schema_version(db) >= version:
                    continue
                if not is_sqlite(db):
                    db.execute_sql('LOCK TABLE "schema_version" IN EXCLUSIVE MODE')
                    if schema_version(db) >= version:
                        continue
                MIGRATIONS[version](db)
                db.execute_sql('DELETE FROM "schema_version"')
                db.execute_sql(
                    'INSERT INTO "schema_version" ("version") VALUES (%s)' % int(version)
                )
                log.info("database schema upgraded to version %d", version)
        return schema_version(db)


# ---------------------------------------------------------------------------------------------
# Conversions between rows and domain types


def _user(row: Any) -> User:
    return User(
        email=row.email,
        ssh_key=row.ssh_key,
        confirmed_email=bool(row.confirmed_email),
        is_authorized=bool(row.is_authorized),
        is_admin=bool(row.is_admin),
        created_at=int(row.created_at),
    )


def _agent(row: Any) -> AgentRecord:
    return AgentRecord(
        name=row.name,
        type=row.type,
        ip=row.ip,
        port=int(row.port),
        status=row.status,
        token=row.token,
        last_error=row.last_error,
    )


def _schedule(row: Any) -> ScheduleRecord:
    values = {name: getattr(row, name) for name in SCHEDULE_FIELDS}
    values["pending_issued"] = bool(values["pending_issued"])
    values["ending"] = bool(values["ending"])
    return ScheduleRecord(**values)


def node_type_to_json(info: NodeTypeInfo) -> str:
    return json.dumps(
        {
            "type": info.type,
            "processes": info.processes,
            "properties": [vars(spec) for spec in info.properties],
            "final_states": info.final_states,
        }
    )


def node_type_from_json(text: str) -> NodeTypeInfo | None:
    if not text:
        return None
    data = json.loads(text)
    return NodeTypeInfo(
        type=data["type"],
        processes={k: list(v) for k, v in data["processes"].items()},
        properties=[PropertySpec(**spec) for spec in data["properties"]],
        final_states=list(data["final_states"]),
    )


def _environment_to_dict(env: Environment) -> dict[str, Any]:
    return {
        "name": env.name,
        "description": env.description,
        "image": env.image,
        "size_bytes": env.size_bytes,
        "default_user": env.default_user,
        "properties": dict(env.properties),
    }


@dataclass(frozen=True)
class CachedNode:
    name: str
    agent: str
    type: str
    properties: dict[str, str]
    agent_status: str

    @property
    def connected(self) -> bool:
        return self.agent_status == CONNECTED


@dataclass(frozen=True)
class ScheduleChange:
    """One compare-and-set on a schedule row: apply `changes` only if the row still matches
    `expect`; `delete=True` removes the row and its action properties instead."""

    node_name: str
    owner: str
    expect: Mapping[str, Any]
    changes: Mapping[str, Any]
    delete: bool = False


# ---------------------------------------------------------------------------------------------
# The store


class StoreUnavailable(Exception):
    """The database cannot be opened or migrated; the message says why (never a password)."""


class Store:
    def __init__(self, url: str, *, workers: int = 8) -> None:
        self.url = url
        self._workers = workers
        self._db: pw.Database | None = None
        self._proxy = pw.DatabaseProxy()
        self.m = define_models(self._proxy)
        self._executor: ThreadPoolExecutor | None = None

    # -- life cycle -----------------------------------------------------------------------

    async def open(self) -> None:
        hide_query_parameters()
        try:
            self._db = open_database(self.url, max_connections=self._workers + 4)
            self._proxy.initialize(self._db)
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="edgebed-db")
            await self._run(self._migrate)
        except (pw.DatabaseError, pw.InterfaceError, OSError, ValueError, RuntimeError) as exc:
            await self.close()
            lines = str(exc).strip().splitlines()
            raise StoreUnavailable(lines[0] if lines else type(exc).__name__) from exc

    def _migrate(self) -> int:
        assert self._db is not None
        return migrate(self._db)

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._db is not None:
            self._db.close_all()
            self._db = None

    @property
    def is_sqlite(self) -> bool:
        return self._db is not None and is_sqlite(self._db)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._executor is None or self._db is None:
            raise RuntimeError("the store is not open")
        loop = asyncio.get_running_loop()
        call = functools.partial(self._in_connection, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def _in_connection(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self._db is not None
        with self._db.connection_context():
            return fn(*args, **kwargs)

    def _write(self) -> Any:
        """A read-then-write transaction: takes SQLite's write lock at BEGIN."""
        assert self._db is not None
        return self._db.atomic("IMMEDIATE") if is_sqlite(self._db) else self._db.atomic()

    def _serialize(self, key: int) -> None:
        """Inside a transaction: waits for every other transaction holding `key` to end. SQLite's
        IMMEDIATE transaction already serializes writers; on PostgreSQL a row lock cannot guard
        rows that do not exist yet, so inserts of the same new rows take an advisory lock."""
        if not self.is_sqlite:
            self._db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (key,))

    def _lock(self, query: pw.Select) -> pw.Select:
        """Row locks on PostgreSQL; SQLite's IMMEDIATE transaction already holds the only lock."""
        return query if self.is_sqlite else query.for_update()

    async def schema_version(self) -> int:
        return await self._run(lambda: schema_version(self._db))

    # -- users ----------------------------------------------------------------------------

    async def create_user(
        self, email: str, password_hash: str, *, ssh_key: str, admin: bool, authorized: bool, now: int
    ) -> User:
        def work() -> User:
            with self._write():
                if self.m.User.get_or_none(self.m.User.email == email) is not None:
                    raise Conflict(f"an account with the email {email} already exists")
                row = self.m.User.create(
                    email=email,
                    password=password_hash,
                    ssh_key=ssh_key,
                    confirmed_email=False,
                    is_authorized=authorized,
                    is_admin=admin,
                    created_at=now,
                )
                return _user(row)

        return await self._run(work)

    async def get_user(self, email: str) -> User | None:
        def work() -> User | None:
            row = self.m.User.get_or_none(self.m.User.email == email)
            return None if row is None else _user(row)

        return await self._run(work)

    async def get_password_hash(self, email: str) -> tuple[User, str] | None:
        def work() -> tuple[User, str] | None:
            row = self.m.User.get_or_none(self.m.User.email == email)
            return None if row is None else (_user(row), row.password)

        return await self._run(work)

    async def list_users(self) -> list[User]:
        def work() -> list[User]:
            query = self.m.User.select().order_by(
                self.m.User.is_authorized, self.m.User.created_at, self.m.User.email
            )
            return [_user(row) for row in query]

        return await self._run(work)

    async def update_user(self, email: str, **changes: Any) -> User | None:
        allowed = {"password", "ssh_key", "confirmed_email", "is_authorized", "is_admin"}
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"cannot change user fields {sorted(unknown)}")

        def work() -> User | None:
            with self._write():
                self.m.User.update(**changes).where(self.m.User.email == email).execute()
                row = self.m.User.get_or_none(self.m.User.email == email)
                return None if row is None else _user(row)

        return await self._run(work)

    async def delete_user(self, email: str) -> None:
        def work() -> None:
            with self._write():
                self.m.ApiToken.delete().where(self.m.ApiToken.owner == email).execute()
                self.m.User.delete().where(self.m.User.email == email).execute()

        await self._run(work)

    # -- API tokens -----------------------------------------------------------------------

    async def add_api_token(self, owner: str, label: str, token_hash: str, now: int) -> int:
        def work() -> int:
            row = self.m.ApiToken.create(
                owner=owner, label=label, token_hash=token_hash, created_at=now
            )
            return int(row.id)

        return await self._run(work)

    async def list_api_tokens(self, owner: str) -> list[ApiToken]:
        def work() -> list[ApiToken]:
            query = (
                self.m.ApiToken.select()
                .where(self.m.ApiToken.owner == owner)
                .order_by(self.m.ApiToken.id)
            )
            return [
                ApiToken(
                    id=int(r.id),
                    label=r.label,
                    created_at=int(r.created_at),
                    last_used_at=None if r.last_used_at is None else int(r.last_used_at),
                )
                for r in query
            ]

        return await self._run(work)

    async def delete_api_token(self, owner: str, token_id: int) -> bool:
        def work() -> bool:
            deleted = (
                self.m.ApiToken.delete()
                .where((self.m.ApiToken.owner == owner) & (self.m.ApiToken.id == token_id))
                .execute()
            )
            return deleted > 0

        return await self._run(work)

    async def use_api_token(self, token_hash: str, now: int) -> tuple[str, str] | None:
        """(owner, stored hash) of the token with that hash, marking it used; None if unknown."""

        def work() -> tuple[str, str] | None:
            row = self.m.ApiToken.get_or_none(self.m.ApiToken.token_hash == token_hash)
            if row is None:
                return None
            # Once a minute is enough to show "last used" and spares a write per API call.
            if row.last_used_at is None or now - int(row.last_used_at) >= 60:
                self.m.ApiToken.update(last_used_at=now).where(
                    self.m.ApiToken.id == row.id
                ).execute()
            return row.owner, row.token_hash

        return await self._run(work)

    # -- agents ---------------------------------------------------------------------------

    async def add_agent(self, record: AgentRecord) -> None:
        def work() -> None:
            with self._write():
                if self.m.Agent.get_or_none(self.m.Agent.name == record.name) is not None:
                    raise Conflict(f"an agent named {record.name} already exists")
                self.m.Agent.create(**vars(record))

        await self._run(work)

    async def get_agent(self, name: str) -> AgentRecord | None:
        def work() -> AgentRecord | None:
            row = self.m.Agent.get_or_none(self.m.Agent.name == name)
            return None if row is None else _agent(row)

        return await self._run(work)

    async def list_agents(self) -> list[AgentRecord]:
        def work() -> list[AgentRecord]:
            return [_agent(row) for row in self.m.Agent.select().order_by(self.m.Agent.name)]

        return await self._run(work)

    async def node_counts(self) -> dict[str, int]:
        def work() -> dict[str, int]:
            query = self.m.Node.select(
                self.m.Node.agent, pw.fn.COUNT(self.m.Node.name).alias("n")
            ).group_by(self.m.Node.agent)
            return {row.agent: int(row.n) for row in query}

        return await self._run(work)

    async def set_agent_status(
        self, name: str, *, status: str | None = None, last_error: str | None = None
    ) -> None:
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = status
        if last_error is not None:
            changes["last_error"] = last_error
        if not changes:
            return

        def work() -> None:
            self.m.Agent.update(**changes).where(self.m.Agent.name == name).execute()

        await self._run(work)

    async def delete_agent(self, name: str) -> bool:
        def work() -> bool:
            with self._write():
                self.m.Node.delete().where(self.m.Node.agent == name).execute()
                self.m.Catalog.delete().where(self.m.Catalog.agent == name).execute()
                return self.m.Agent.delete().where(self.m.Agent.name == name).execute() > 0

        return await self._run(work)

    # -- node cache -----------------------------------------------------------------------

    async def save_inventory(
        self,
        nodes_by_agent: Sequence[tuple[str, str, Mapping[str, Mapping[str, str]]]],
        catalogs: Sequence[AgentCatalog],
        now: int,
    ) -> dict[str, dict[str, str]]:
        """Makes the node cache hold exactly the given nodes for each (agent, type, nodes), and
        stores the catalogs, in ONE transaction; unchanged rows are not rewritten.

        Returns {agent: {node: other agent}} for names another agent already holds: those stay
        with that agent (never merged). Agents are handled in the given order, so of two agents
        newly claiming a name, the first one keeps it.
        """

        def work() -> dict[str, dict[str, str]]:
            Node = self.m.Node
            duplicates: dict[str, dict[str, str]] = {}
            with self._write():
                self._serialize(_INVENTORY_LOCK)
                for agent, type_, nodes in nodes_by_agent:
                    names = sorted(nodes)
                    existing = {}
                    for start in range(0, len(names), 500):
                        chunk = names[start : start + 500]
                        query = Node.select().where(Node.name.in_(chunk)).order_by(Node.name)
                        existing.update({row.name: row for row in self._lock(query)})
                    claimed = {name: row.agent for name, row in existing.items() if row.agent != agent}
                    duplicates[agent] = claimed
                    for name in names:
                        if name in claimed:
                            continue
                        properties = json.dumps(dict(sorted(nodes[name].items())))
                        row = existing.get(name)
                        if row is None:
                            Node.create(name=name, agent=agent, type=type_, properties=properties, updated_at=now)
                        elif row.properties != properties or row.type != type_:
                            Node.update(type=type_, properties=properties, updated_at=now).where(
                                Node.name == name
                            ).execute()
                    kept = [n for n in names if n not in claimed]
                    gone = Node.select(Node.name).where(Node.agent == agent)
                    stale = [row.name for row in gone if row.name not in set(kept)]
                    for start in range(0, len(stale), 500):
                        Node.delete().where(Node.name.in_(stale[start : start + 500])).execute()
                for catalog in catalogs:
                    self._put_catalog(catalog, now)
            return duplicates

        return await self._run(work)

    async def list_nodes(self, names: Iterable[str] | None = None) -> list[CachedNode]:
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
            return [
                CachedNode(
                    name=row.name,
                    agent=row.agent,
                    type=row.type,
                    properties=json.loads(row.properties),
                    agent_status=row.status or "",
                )
                for row in query
            ]

        return await self._run(work)

    # -- catalogs (node type descriptions and environments) ------------------------------

    def _put_catalog(self, catalog: AgentCatalog, now: int) -> None:
        values = {
            "type": catalog.type,
            "node_type": "" if catalog.node_type is None else node_type_to_json(catalog.node_type),
            "environments": json.dumps([_environment_to_dict(e) for e in catalog.environments]),
        }
        row = self.m.Catalog.get_or_none(self.m.Catalog.agent == catalog.agent)
        if row is None:
            self.m.Catalog.create(agent=catalog.agent, updated_at=now, **values)
        elif any(getattr(row, k) != v for k, v in values.items()):
            self.m.Catalog.update(updated_at=now, **values).where(
                self.m.Catalog.agent == catalog.agent
            ).execute()

    async def list_catalogs(self) -> list[AgentCatalog]:
        def work() -> list[AgentCatalog]:
            result = []
            for row in self.m.Catalog.select().order_by(self.m.Catalog.agent):
                envs = [
                    Environment(**data, agent=row.agent, type=row.type)
                    for data in json.loads(row.environments)
                ]
                result.append(
                    AgentCatalog(
                        agent=row.agent,
                        type=row.type,
                        node_type=node_type_from_json(row.node_type),
                        environments=envs,
                    )
                )
            return result

        return await self._run(work)

    # -- reservations ---------------------------------------------------------------------

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
        """Reserves `count` of `candidates` (in their order) for [start, end).

        With all_or_nothing (nodes named by the user) every candidate must be free, else
        Conflict names the first taken one. Otherwise the first `count` free candidates are
        taken, or Conflict when fewer are free. One transaction: all rows or none.
        """

        def work() -> list[str]:
            S, Node = self.m.Schedule, self.m.Node
            with self._write():
                # Serializes reservations of the same nodes on PostgreSQL (sorted: no deadlock).
                if not self.is_sqlite:
                    list(self._lock(Node.select(Node.name).where(Node.name.in_(sorted(candidates))).order_by(Node.name)))
                mine = {
                    row.node_name
                    for row in S.select(S.node_name).where(
                        (S.owner == owner) & S.node_name.in_(list(candidates))
                    )
                }
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

        return await self._run(work)

    async def extend(
        self, node: str, owner: str, *, new_end: int, turnaround: int, expect_end: int
    ) -> ScheduleRecord:
        def work() -> ScheduleRecord:
            S, Node = self.m.Schedule, self.m.Node
            with self._write():
                if not self.is_sqlite:
                    list(self._lock(Node.select(Node.name).where(Node.name == node)))
                row = S.get_or_none((S.node_name == node) & (S.owner == owner))
                if row is None or int(row.end_date) != expect_end or row.ending:
                    raise Conflict(f"the reservation of node {node} changed meanwhile; try again")
                if self._window_taken(node, int(row.start_date), new_end, turnaround, exclude_owner=owner):
                    raise Conflict(
                        f"node {node} cannot be extended: it would run into the next reservation"
                    )
                S.update(end_date=new_end).where((S.node_name == node) & (S.owner == owner)).execute()
                return _schedule(S.get((S.node_name == node) & (S.owner == owner)))

        return await self._run(work)

    async def list_schedule(
        self,
        *,
        owner: str | None = None,
        node: str | None = None,
        started_before: int | None = None,
    ) -> list[ScheduleRecord]:
        def work() -> list[ScheduleRecord]:
            S = self.m.Schedule
            query = S.select().order_by(S.bin, S.node_name, S.owner)
            if owner is not None:
                query = query.where(S.owner == owner)
            if node is not None:
                query = query.where(S.node_name == node)
            if started_before is not None:
                query = query.where((S.start_date <= started_before) | (S.pending != ""))
            return [_schedule(row) for row in query]

        return await self._run(work)

    async def get_schedule(self, node: str, owner: str) -> ScheduleRecord | None:
        def work() -> ScheduleRecord | None:
            S = self.m.Schedule
            row = S.get_or_none((S.node_name == node) & (S.owner == owner))
            return None if row is None else _schedule(row)

        return await self._run(work)

    async def action_props(
        self, *, owner: str | None = None, node: str | None = None
    ) -> dict[tuple[str, str], dict[str, str]]:
        """{(node_name, owner): {prop_name: prop_value}}"""

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

        return await self._run(work)

    async def action_props_for(
        self, pairs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, str]]:
        """The action properties of the given (node_name, owner) reservations."""
        wanted = set(pairs)
        nodes = sorted({node for node, _ in wanted})

        def work() -> dict[tuple[str, str], dict[str, str]]:
            A = self.m.ActionProp
            result: dict[tuple[str, str], dict[str, str]] = {}
            for start in range(0, len(nodes), 500):
                for row in A.select().where(A.node_name.in_(nodes[start : start + 500])):
                    key = (row.node_name, row.owner)
                    if key in wanted:
                        result.setdefault(key, {})[row.prop_name] = row.prop_value
            return result

        return await self._run(work)

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
        """Sets bin and properties; moves status between configuring and ready by whether every
        required property is set (a row with an action under way keeps its status)."""
        required_names = set(required)
        unset = list(unset_props)

        def work() -> ScheduleRecord | None:
            S, A = self.m.Schedule, self.m.ActionProp
            where = (S.node_name == node) & (S.owner == owner)
            with self._write():
                row = self._lock(S.select().where(where)).first()
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
                busy = row.pending != "" or row.status == "in_progress"
                if not busy:
                    complete = required_names <= have
                    changes["status"] = "ready" if complete else "configuring"
                    if complete and row.status == "configuring":
                        # A new configuration clears the error that sent it back to configuring.
                        changes["last_error"] = ""
                if changes:
                    S.update(**changes).where(where).execute()
                return _schedule(S.get(where))

        return await self._run(work)

    async def update_schedule(self, changes: Sequence[ScheduleChange]) -> list[bool]:
        """Applies compare-and-set changes in one transaction; True for each one applied."""
        for change in changes:
            for name in list(change.expect) + list(change.changes):
                if name not in SCHEDULE_FIELDS:
                    raise ValueError(f"unknown schedule field {name!r}")

        def work() -> list[bool]:
            S, A = self.m.Schedule, self.m.ActionProp
            results = []
            with self._write():
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

        return await self._run(work)

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

        return await self._run(work)

    async def count_schedule_by(self, column: str) -> dict[str, int]:
        if column not in ("status", "action_state"):
            raise ValueError(column)

        def work() -> dict[str, int]:
            S = self.m.Schedule
            field = getattr(S, column)
            query = S.select(field.alias("key"), pw.fn.COUNT(S.node_name).alias("n")).group_by(field)
            return {row.key: int(row.n) for row in query.objects()}

        return await self._run(work)

