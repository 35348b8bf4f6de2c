"""The connection side of the controller's store: opening the database, the thread pool every
query runs in, and the transaction and lock helpers the repositories share.

SQLite (WAL mode) by default, PostgreSQL by URL, through the same code. A read-then-write
transaction takes the write lock up front (`BEGIN IMMEDIATE` on SQLite; row locks with
`FOR UPDATE` or an advisory lock on PostgreSQL): a deferred SQLite transaction that reads first
and then writes fails with "database is locked" instead of waiting when another writer got in
between, and that up-front lock is what makes reservations race-safe.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import peewee as pw
from playhouse.pool import PooledDatabase, PooledPostgresqlDatabase, PooledSqliteDatabase

from edgebed.config import redacted_url
from edgebed.controller.errors import StorageFull
from edgebed.database import hide_query_parameters, private_sqlite_file
from edgebed.ratelog import RateLimitedLog
from edgebed.storage import damage, disk_full_log, disk_full_message, is_disk_full, sqlite_file

log = logging.getLogger(__name__)

T = TypeVar("T")

# What opening or migrating a database raises when it cannot be used: a server that does not
# answer or refuses the login, a file that cannot be created, a bad URL (ValueError), a schema
# newer than the code (RuntimeError).
OPEN_ERRORS: tuple[type[BaseException], ...] = (
    pw.DatabaseError,
    pw.InterfaceError,
    OSError,
    ValueError,
    RuntimeError,
)


# What a write raises when the database refuses the data or the transaction: a value too long
# for its column (PostgreSQL), a constraint, a lock or connection lost mid-way; OverflowError is
# what SQLite's driver raises for an integer beyond 64 bits. Callers that write one agent's data
# at a time catch these, so one agent's refused write never stops another's.
WRITE_ERRORS: tuple[type[BaseException], ...] = (
    pw.DatabaseError,
    pw.InterfaceError,
    OverflowError,
)


# Writes per group commit (Engine.run_grouped): enough to take 200 agents' writes in a few
# transactions, few enough that one transaction never holds the lock for long.
_GROUP_LIMIT = 50


def open_database(url: str, *, max_connections: int, idle_transaction_seconds: float | None = None) -> pw.Database:
    """A pooled Peewee database for a file path, sqlite:///PATH or postgresql://... URL.

    `idle_transaction_seconds` (PostgreSQL): the server ends a transaction of ours left idle
    that long (`idle_in_transaction_session_timeout`), so a controller paused or cut off in the
    middle of a write does not keep its row locks (its lease row's FOR SHARE among them) and
    block the controller taking its agents over.

    Nothing connects yet. Raises ValueError for a PostgreSQL URL without a database name (the
    message shows the URL without its password) or for an in-memory SQLite database, which
    would give every pooled connection its own empty database. Creates the SQLite file's folder,
    and the file itself with mode 0600 (edgebed.database.private_sqlite_file); OSError when it
    cannot.
    """
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
        if idle_transaction_seconds:
            params["options"] = f"-c idle_in_transaction_session_timeout={max(1, int(idle_transaction_seconds * 1000))}"
        return PooledPostgresqlDatabase(
            name, max_connections=max_connections, stale_timeout=300, timeout=60, **params
        )
    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else url
    if not path or path == ":memory:":
        raise ValueError("the controller needs a database file, not an in-memory database")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Agent tokens (sealed), hashes and users' os_password values: for the owner's eyes only.
    private_sqlite_file(path)
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


def is_sqlite(db: pw.Database) -> bool:
    return isinstance(db, pw.SqliteDatabase)


class Engine:
    """One database and the thread pool that talks to it.

    `proxy` is the DatabaseProxy the models are defined against (models.define_models); open()
    points it at the real database, so nothing is bound at import time and two engines can live
    in one process (tests do). Every query runs through run(), in a pool thread holding a
    pooled connection, so the event loop never blocks on the database.
    """

    def __init__(self, url: str, *, workers: int, idle_transaction_seconds: float | None = None) -> None:
        self.url = url
        self._workers = workers
        self._idle_transaction_seconds = idle_transaction_seconds
        self.proxy = pw.DatabaseProxy()
        self._db: pw.Database | None = None
        self._executor: ThreadPoolExecutor | None = None
        # Writes waiting for the next group commit (run_grouped), and the task committing them.
        self._grouped: list[tuple[Callable[[], Any], asyncio.Future]] = []
        self._committer: asyncio.Task | None = None
        # While the disk is full every write fails, the scheduler's each poll and the users' each
        # request: one line a minute says so.
        self._full_log = RateLimitedLog(log, 60.0)
        where = sqlite_file(url)
        self._full_message = disk_full_message(where)
        self._full_line = disk_full_log(where)

    def open(self) -> None:
        """Opens the pool (connections come on first use) and starts the worker threads.
        Raises ValueError as open_database does."""
        hide_query_parameters()
        # A few connections beyond the workers: migrate() and close() may hold one each.
        self._db = open_database(
            self.url, max_connections=self._workers + 4, idle_transaction_seconds=self._idle_transaction_seconds
        )
        self.proxy.initialize(self._db)
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="edgebed-db")

    def close(self) -> None:
        """Waits for the queries under way, then closes every pooled connection. Idempotent."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if isinstance(self._db, PooledDatabase):
            self._db.close_all()
        self._db = None

    @property
    def db(self) -> pw.Database:
        """The open database; RuntimeError when the engine is not open."""
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    @property
    def is_sqlite(self) -> bool:
        return self._db is not None and is_sqlite(self._db)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """fn(*args, **kwargs) in a pool thread inside a connection context; its result or its
        exception. RuntimeError when the engine is not open; StorageFull (503) when a write
        failed for lack of space (rolled back: nothing of it was written)."""
        if self._executor is None or self._db is None:
            raise RuntimeError("the store is not open")
        loop = asyncio.get_running_loop()
        call = functools.partial(self._in_connection, fn, *args, **kwargs)
        try:
            return await loop.run_in_executor(self._executor, call)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            self._full_log.log(logging.ERROR, "full", "%s", self._full_line)
            raise StorageFull(self._full_message) from None

    def damage(self) -> str | None:
        """Runs in a pool thread: SQLite's quick_check of the file (None when sound, otherwise the
        first problem); None on PostgreSQL, whose server checks its own files."""
        if not self.is_sqlite:
            return None
        return damage(lambda sql: self.db.execute_sql(sql).fetchall())

    async def run_grouped(self, fn: Callable[[], T]) -> T:
        """fn() inside a write transaction, like `run` with `with write(): fn()`, but committed
        together with the other writes submitted meanwhile: one transaction (one lock, one
        fsync) for many callers, each in a savepoint of its own. An exception fn raises rolls
        back its own savepoint only and is raised to its caller alone; the others commit. When
        the commit itself fails (a lock or the connection lost), every caller of that group gets
        the error. Concurrent callers on a busy database (the scheduler's rounds of 200 agents,
        the inventory saves) then wait in this queue instead of in SQLite's busy handler, which
        polls the lock with sleeps and leaves it idle between them."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._grouped.append((fn, future))
        if self._committer is None or self._committer.done():
            self._committer = loop.create_task(self._commit_groups(), name="edgebed-group-commit")
        return await future

    async def _commit_groups(self) -> None:
        while self._grouped:
            group, self._grouped = self._grouped[:_GROUP_LIMIT], self._grouped[_GROUP_LIMIT:]
            try:
                outcomes = await self.run(self._commit_group, [fn for fn, _ in group])
            except asyncio.CancelledError:
                for _, future in group + self._grouped:
                    future.cancel()
                self._grouped = []
                raise
            except Exception as exc:  # noqa: BLE001 - the commit failed: every caller of the group gets it
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), (ok, value) in zip(group, outcomes, strict=True):
                if future.done():
                    continue  # its caller was cancelled meanwhile
                if ok:
                    future.set_result(value)
                elif is_disk_full(value):
                    self._full_log.log(logging.ERROR, "full", "%s", self._full_line)
                    future.set_exception(StorageFull(self._full_message))
                else:
                    future.set_exception(value)

    def _commit_group(self, fns: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        with self.write():
            for fn in fns:
                try:
                    # Nested: a savepoint (and any write() inside fn nests in it).
                    with self.db.atomic():
                        outcomes.append((True, fn()))
                except Exception as exc:  # noqa: BLE001 - raised to that caller alone
                    outcomes.append((False, exc))
        return outcomes

    def _in_connection(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self.db.connection_context():
            return fn(*args, **kwargs)

    def write(self) -> Any:
        """A read-then-write transaction (context manager): takes SQLite's write lock at BEGIN
        (`atomic('IMMEDIATE')`); a plain transaction on PostgreSQL, where lock() and serialize()
        take the locks."""
        db = self.db
        return db.atomic("IMMEDIATE") if is_sqlite(db) else db.atomic()

    def serialize(self, key: int) -> None:
        """Inside a transaction: waits for every other transaction holding `key` to end. SQLite's
        IMMEDIATE transaction already serializes writers; on PostgreSQL a row lock cannot guard
        rows that do not exist yet, so inserts of the same new rows take an advisory lock."""
        if not self.is_sqlite:
            self.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (key,))

    def lock(self, query: pw.Select) -> pw.Select:
        """Row locks on PostgreSQL; SQLite's IMMEDIATE transaction already holds the only lock."""
        return query if self.is_sqlite else query.for_update()
