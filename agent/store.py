"""The agent's database: the only module of the agent that touches Peewee.

Tables: rasp_node (the seed's node properties), action (the seed's fields plus what a resume
needs), environment, an append-only transition log, the simulated machines, and agent_meta.

The models are defined per Store, bound to that Store's database when it is opened: several agents
can run in one process (the demo runs three), each with its own database. Every method is
synchronous and meant to run on the agent's writer or reader thread (agent.dbworker); the
executor's commits on a SQLite file run on the event loop's thread, through a LoopWriter (a
connection of its own, without Peewee).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import peewee
from playhouse import db_url

from edgebed.agent.dbworker import WriterBusy
from edgebed.agent.domain import ActionRecord, Environment, NodeRecord, TransitionRecord
from edgebed.agent.errors import AlreadyExists, Busy, NotFound
from edgebed.database import hide_query_parameters, private_sqlite_file
from edgebed.storage import damage, is_damage, is_lock_conflict

# WAL lets GetActionState read while the executor writes. synchronous=NORMAL keeps every commit
# across a crash of the agent (SIGKILL); a power cut may undo the last commits, which only makes
# the executor redo idempotent steps.
SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "foreign_keys": 1,
    "busy_timeout": 10_000,
    "cache_size": -512,
}


_query_log = logging.getLogger("peewee")


class DatabaseSpecError(Exception):
    """The `database` setting names no usable database."""


class DatabaseUnavailable(Exception):
    """The database exists in the settings but cannot be opened (locked, refused, corrupt)."""


class DatabaseDamaged(DatabaseUnavailable):
    """SQLite's integrity check failed, or the file is no SQLite database; the message is the
    first problem found."""


def open_database(spec: str) -> peewee.Database:
    """A file path (SQLite) or a Peewee URL (sqlite:///path, postgresql://user:pw@host/db).

    A SQLite file is created with mode 0600 (and its folder when absent): it holds users'
    os_password values. OSError when the file or its folder cannot be created."""
    if "://" not in spec:
        path = Path(spec).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        private_sqlite_file(path)
        return peewee.SqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS)
    scheme = urlparse(spec).scheme
    extra = {}
    if scheme.startswith("sqlite"):
        extra["pragmas"] = SQLITE_PRAGMAS
        path_text = urlparse(spec).path[1:]
        if path_text and path_text != ":memory:":
            Path(path_text).parent.mkdir(parents=True, exist_ok=True)
            private_sqlite_file(path_text)
    try:
        return db_url.connect(spec, **extra)
    except (RuntimeError, ValueError) as exc:
        raise DatabaseSpecError(str(exc).replace('"', "'")) from None


# Changes the executor commits in groups (Store.apply).


@dataclass(frozen=True)
class SaveAction:
    record: ActionRecord


@dataclass(frozen=True)
class UpdateState:
    """A transition within one action: only the columns a step changes (state, state_idx,
    updated_at, progress, reboots, elapsed). The properties and the environment are what the
    action's SaveAction wrote; they are neither serialized nor written again."""

    record: ActionRecord


@dataclass(frozen=True)
class LogTransition:
    entry: TransitionRecord


@dataclass(frozen=True)
class SaveMachine:
    hardware_id: str
    state: dict


Change = SaveAction | UpdateState | LogTransition | SaveMachine


def _define_models(database: peewee.Database) -> SimpleNamespace:
    class Base(peewee.Model):
        class Meta:
            legacy_table_names = False

    class NodeProperty(Base):
        node_name = peewee.CharField(max_length=64, index=True)
        prop_name = peewee.CharField(max_length=64)
        prop_value = peewee.TextField()

        class Meta:
            table_name = "rasp_node"
            primary_key = peewee.CompositeKey("node_name", "prop_name")

    class Action(Base):
        node_name = peewee.CharField(max_length=64, primary_key=True)
        node_ip = peewee.CharField(default="")
        environment = peewee.CharField(default="")
        process = peewee.CharField()
        state = peewee.CharField()
        state_idx = peewee.IntegerField()
        updated_at = peewee.BigIntegerField()
        progress = peewee.IntegerField(default=0)
        reboots = peewee.IntegerField(default=0)
        action_id = peewee.BigIntegerField(default=0)
        started_at = peewee.BigIntegerField(default=0)
        elapsed = peewee.DoubleField(default=0.0)
        properties_json = peewee.TextField(default="{}")
        environment_json = peewee.TextField(default="")
        last_error = peewee.TextField(default="")

        class Meta:
            table_name = "action"

    class EnvironmentRow(Base):
        name = peewee.CharField(max_length=64, primary_key=True)
        description = peewee.TextField(default="")
        image = peewee.TextField(default="")
        size_bytes = peewee.BigIntegerField(default=0)
        default_user = peewee.CharField(default="")
        properties_json = peewee.TextField(default="{}")

        class Meta:
            table_name = "environment"

    class Transition(Base):
        id = peewee.AutoField()
        node_name = peewee.CharField(max_length=64)
        action_id = peewee.BigIntegerField()
        process = peewee.CharField()
        state = peewee.CharField()
        state_idx = peewee.IntegerField()
        event = peewee.CharField()
        at = peewee.DoubleField()

        class Meta:
            table_name = "transition"
            indexes = ((("node_name", "id"), False),)

    class SimMachine(Base):
        hardware_id = peewee.CharField(primary_key=True)
        state_json = peewee.TextField()

        class Meta:
            table_name = "sim_machine"

    class Meta(Base):
        key = peewee.CharField(primary_key=True)
        value = peewee.TextField()

        class Meta:
            table_name = "agent_meta"

    models = SimpleNamespace(
        NodeProperty=NodeProperty,
        Action=Action,
        EnvironmentRow=EnvironmentRow,
        Transition=Transition,
        SimMachine=SimMachine,
        Meta=Meta,
    )
    database.bind(list(vars(models).values()))
    return models


def _chunks(names: list[str], size: int = 500) -> Iterable[list[str]]:
    # SQLite takes a bounded number of variables per statement; a caller may send thousands.
    for start in range(0, len(names), size):
        yield names[start : start + size]


def _upsert(model, rows: list[dict], batch: int) -> None:
    """INSERT ... ON CONFLICT (primary key) DO UPDATE: the same SQL on SQLite and PostgreSQL."""
    if not rows:
        return
    key = model._meta.primary_key
    others = [field for field in model._meta.sorted_fields if field is not key]
    for start in range(0, len(rows), batch):
        model.insert_many(rows[start : start + batch]).on_conflict(
            conflict_target=[key], preserve=others
        ).execute()


def _column_list(columns: Sequence[str]) -> str:
    return ", ".join(f'"{column}"' for column in columns)


# The SQLite library Python's sqlite3 module (and Peewee) uses: what a commit's SQL may rely on.
SQLITE_VERSION = sqlite3.sqlite_version_info
# Rows per statement of a commit, at most: large enough that a commit of thousands of changes
# is a few statements, small enough that one statement never nears a limit.
MAX_ROWS = 500


def _max_parameters(sqlite: bool) -> int:
    """Parameters one statement may hold: SQLite's limit since 3.32 (999 before); PostgreSQL's
    driver sends the values inline, so the same bound only keeps its statements a sane size."""
    return 999 if sqlite and SQLITE_VERSION < (3, 32, 0) else 32_766


def _sizes(count: int, most: int) -> Iterator[int]:
    """`count` rows as statements of `most` rows, then the rest in powers of two: a handful of
    statement texts in all, each prepared once and kept in sqlite3's statement cache, instead of
    one new text (and its parsing) for every size a commit happens to have."""
    while count >= most:
        yield most
        count -= most
    power = 1 << max(0, most.bit_length() - 1)
    while count:
        if power <= count:
            yield power
            count -= power
        power >>= 1


@dataclass(frozen=True)
class _MultiRow:
    """One kind of change as a statement over many rows: `head` + n times the row's
    placeholders, comma-separated + `tail`."""

    head: str
    row: str
    tail: str
    columns: int
    max_parameters: int

    def statements(self, rows: Sequence[tuple]) -> Iterator[tuple[str, list]]:
        """(SQL, flat parameters) for each chunk of `rows`, in order."""
        start = 0
        for size in _sizes(len(rows), max(1, min(MAX_ROWS, self.max_parameters // self.columns))):
            chunk = rows[start : start + size]
            start += size
            yield self.sql(size), list(itertools.chain.from_iterable(chunk))

    @functools.lru_cache(maxsize=64)  # noqa: B019 - a few instances per process, kept for its life
    def sql(self, count: int) -> str:
        return self.head + ", ".join([self.row] * count) + self.tail


@dataclass(frozen=True)
class _PerRow:
    """One kind of change as one statement per row, for a database without the SQL a multi-row
    one needs (UPDATE ... FROM: SQLite before 3.33)."""

    sql: str

    def statements(self, rows: Sequence[tuple]) -> Iterator[tuple[str, list]]:
        for row in rows:
            yield self.sql, list(row)


class _Statements:
    """The SQL of the executor's commits, written once per Store: each kind of change is one
    statement over up to MAX_ROWS rows (multi-row VALUES), so a commit of a thousand changes is
    a handful of statements. Neither one generated Peewee query per commit (insert_many built up
    to 28,000 parameters each time, a third of a busy agent's CPU) nor executemany: SQLite lets go
    of Python's lock at every statement step, and a step per row meant a wait for the busy event
    loop's thread per row, 1.8 s for a commit of 1,000 rows against 5 ms on an idle one. ON
    CONFLICT ... DO UPDATE SET x = excluded.x (SQLite 3.24+) and UPDATE ... FROM a WITH list
    (SQLite 3.33+; before, one UPDATE per row) read the same on PostgreSQL; `param` is the
    driver's placeholder."""

    def __init__(self, models: SimpleNamespace, param: str, *, sqlite: bool) -> None:
        most = _max_parameters(sqlite)

        def row(columns: Sequence[str]) -> str:
            return f"({', '.join([param] * len(columns))})"

        def upsert(model, columns: Sequence[str]) -> _MultiRow:
            key = model._meta.primary_key.column_name
            updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c != key)
            return _MultiRow(
                f'INSERT INTO "{model._meta.table_name}" ({_column_list(columns)}) VALUES ',
                row(columns),
                f' ON CONFLICT ("{key}") DO UPDATE SET {updates}',
                len(columns),
                most,
            )

        self.save_action = upsert(models.Action, ACTION_COLUMNS)
        # STATE_COLUMNS end with node_name, the row to update.
        changed = [column for column in STATE_COLUMNS if column != "node_name"]
        self.update_state: _MultiRow | _PerRow
        if sqlite and SQLITE_VERSION < (3, 33, 0):
            self.update_state = _PerRow(
                'UPDATE "action" SET ' + ", ".join(f'"{c}" = {param}' for c in changed)
                + f' WHERE "node_name" = {param}'
            )
        else:
            self.update_state = _MultiRow(
                f"WITH changed ({_column_list(STATE_COLUMNS)}) AS (VALUES ",
                row(STATE_COLUMNS),
                ') UPDATE "action" SET ' + ", ".join(f'"{c}" = changed."{c}"' for c in changed)
                + ' FROM changed WHERE "action"."node_name" = changed."node_name"',
                len(STATE_COLUMNS),
                most,
            )
        self.log_transition = _MultiRow(
            f'INSERT INTO "transition" ({_column_list(TRANSITION_COLUMNS)}) VALUES ',
            row(TRANSITION_COLUMNS),
            "",
            len(TRANSITION_COLUMNS),
            most,
        )
        self.save_machine = upsert(models.SimMachine, ("hardware_id", "state_json"))

    def commit(self, changes: Sequence[Change]) -> list[tuple[str, list]]:
        """The statements (SQL, parameters) that commit `changes` (Store.apply says how); built
        before the transaction begins. TypeError for anything that is not a Change."""
        latest: dict[str, ActionRecord] = {}
        whole: set[str] = set()
        transitions: list[tuple] = []
        machines: dict[str, dict] = {}
        # The commonest kinds first: a transition is an UpdateState and a LogTransition.
        for change in changes:
            if isinstance(change, UpdateState):
                latest[change.record.node_name] = change.record
            elif isinstance(change, LogTransition):
                transitions.append(_transition_row(change.entry))
            elif isinstance(change, SaveMachine):
                # Only the last state of a machine is written: encoded below, once.
                machines[change.hardware_id] = change.state
            elif isinstance(change, SaveAction):
                latest[change.record.node_name] = change.record
                whole.add(change.record.node_name)
            else:
                raise TypeError(f"not a store change: {change!r}")
        saves = [_action_row(record) for name, record in latest.items() if name in whole]
        updates = [_state_row(record) for name, record in latest.items() if name not in whole]
        statements: list[tuple[str, list]] = []
        for statement, rows in (
            (self.save_action, saves),
            (self.update_state, updates),
            (self.log_transition, transitions),
            (self.save_machine, [(key, _machine_json(state)) for key, state in machines.items()]),
        ):
            statements += statement.statements(rows)
        return statements


# One encoder for every saved machine (json.dumps makes one per call).
_machine_json = json.JSONEncoder(sort_keys=True).encode


class LoopWriter:
    """A connection of its own to the agent's SQLite file, on which the executor's group commits
    run on the event loop's thread, for they are short there (a commit in WAL mode with
    synchronous=NORMAL writes the WAL without waiting for the disk): handed to the database
    thread, a commit waited for that thread to get Python's lock back from the busy event loop
    at every statement, and the loop in turn waited for the thread; with a thousand nodes in
    flight that made each commit 3 times longer and cost a third more CPU.

    Two things could still make the event loop wait, and neither does: another writer (the
    database thread adding nodes or environments) holding SQLite's write lock, for the busy
    timeout is 0 here and `apply` raises WriterBusy instead (the caller then commits on the
    database thread); and a checkpoint, which writes the database file and waits for the disk,
    for this connection never checkpoints (wal_autocheckpoint = 0): Store.checkpoint does, on
    the database thread. Use it on the thread that made it."""

    def __init__(self, connection: sqlite3.Connection, statements: _Statements) -> None:
        self._statements = statements
        self._connection = connection

    @classmethod
    def open(cls, path: str, statements: _Statements) -> LoopWriter | None:
        """A writer on the SQLite file `path`; None when the file is not in WAL mode (a
        filesystem without shared memory: there a commit would wait for every reader)."""
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            for name, value in {**SQLITE_PRAGMAS, "busy_timeout": 0, "wal_autocheckpoint": 0}.items():
                connection.execute(f"PRAGMA {name} = {value}")
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        except BaseException:
            connection.close()
            raise
        if str(mode).lower() != "wal":
            connection.close()
            return None
        return cls(connection, statements)

    def apply(self, changes: Sequence[Change]) -> None:
        """As Store.apply. WriterBusy, nothing written, when another connection holds a lock
        this commit needs; sqlite3.Error otherwise (rolled back)."""
        cursor = self._connection.cursor()
        try:
            # The lock first: a busy one fails before any row is encoded.
            cursor.execute("BEGIN IMMEDIATE")
            for sql, parameters in self._statements.commit(changes):
                _query_log.debug((sql, parameters))
                cursor.execute(sql, parameters)
            cursor.execute("COMMIT")
        except BaseException as exc:
            if self._connection.in_transaction:
                self._connection.rollback()
            if is_lock_conflict(exc):
                raise WriterBusy(str(exc)) from None
            raise

    def close(self) -> None:
        self._connection.close()


# The action table's columns in the order of _action_row; those UpdateState writes, in the
# order of _state_row (node_name last: the row to update); the transition log's, in _transition_row's.
ACTION_COLUMNS = (
    "node_name", "node_ip", "environment", "process", "state", "state_idx", "updated_at",
    "progress", "reboots", "action_id", "started_at", "elapsed", "properties_json",
    "environment_json", "last_error",
)
STATE_COLUMNS = ("state", "state_idx", "updated_at", "progress", "reboots", "elapsed", "node_name")
TRANSITION_COLUMNS = ("node_name", "action_id", "process", "state", "state_idx", "event", "at")


def _action_row(record: ActionRecord) -> tuple:
    return (
        record.node_name, record.node_ip, record.environment, record.process, record.state,
        record.state_idx, record.updated_at, record.progress, record.reboots, record.action_id,
        record.started_at, record.elapsed,
        json.dumps(dict(record.properties), sort_keys=True),
        environment_to_json(record.environment_spec), record.last_error,
    )


def _state_row(record: ActionRecord) -> tuple:
    return (
        record.state, record.state_idx, record.updated_at, record.progress, record.reboots,
        record.elapsed, record.node_name,
    )


def _transition_row(entry: TransitionRecord) -> tuple:
    return (
        entry.node_name, entry.action_id, entry.process, entry.state, entry.state_idx,
        entry.event, entry.at,
    )


def _environment_from_row(row) -> Environment:
    return Environment(
        name=row.name,
        description=row.description,
        image=row.image,
        size_bytes=row.size_bytes,
        default_user=row.default_user,
        properties=json.loads(row.properties_json or "{}"),
    )


def environment_to_json(environment: Environment | None) -> str:
    if environment is None:
        return ""
    return json.dumps(
        {
            "name": environment.name,
            "description": environment.description,
            "image": environment.image,
            "size_bytes": environment.size_bytes,
            "default_user": environment.default_user,
            "properties": dict(environment.properties),
        },
        sort_keys=True,
    )


def environment_from_json(text: str) -> Environment | None:
    if not text:
        return None
    data = json.loads(text)
    return Environment(**{**data, "properties": data.get("properties", {})})


def _action_from_row(row) -> ActionRecord:
    return ActionRecord(
        node_name=row.node_name,
        node_ip=row.node_ip,
        environment=row.environment,
        process=row.process,
        state=row.state,
        state_idx=row.state_idx,
        updated_at=row.updated_at,
        progress=row.progress,
        reboots=row.reboots,
        action_id=row.action_id,
        started_at=row.started_at,
        elapsed=row.elapsed,
        properties=json.loads(row.properties_json or "{}"),
        environment_spec=environment_from_json(row.environment_json),
        last_error=row.last_error,
    )


class Store:
    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.database = open_database(spec)
        self._m = _define_models(self.database)
        self._sql = _Statements(
            self._m, self.database.param, sqlite=isinstance(self.database, peewee.SqliteDatabase)
        )

    # Life cycle.

    def open(self) -> None:
        """Connects, checks a SQLite file's integrity (PRAGMA quick_check) and creates the tables.
        DatabaseDamaged when the file is damaged, DatabaseUnavailable when it cannot be opened."""
        # Action rows carry os_password values: Peewee's DEBUG query log must not show them.
        hide_query_parameters()
        try:
            self.database.connect(reuse_if_open=True)
            if isinstance(self.database, peewee.SqliteDatabase):
                problem = damage(lambda sql: self.database.execute_sql(sql).fetchall())
                if problem is not None:
                    raise DatabaseDamaged(problem)
            self.database.create_tables(list(vars(self._m).values()), safe=True)
            self._add_missing_columns()
        except peewee.DatabaseError as exc:
            if is_damage(exc):
                raise DatabaseDamaged(str(exc).strip().splitlines()[0]) from None
            raise DatabaseUnavailable(str(exc)) from None

    # Columns added after the first release, as (table, column, SQL type and default): a
    # database created by an older agent gets them when it opens; its rows take the default.
    _ADDED_COLUMNS = (
        ("action", "elapsed", "DOUBLE PRECISION NOT NULL DEFAULT 0"),
        ("action", "last_error", "TEXT NOT NULL DEFAULT ''"),
    )

    def _add_missing_columns(self) -> None:
        for table, column, definition in self._ADDED_COLUMNS:
            have = {info.name for info in self.database.get_columns(table)}
            if column not in have:
                with self._write():
                    self.database.execute_sql(
                        f'ALTER TABLE "{table}" ADD COLUMN "{column}" {definition}'
                    )

    def close(self) -> None:
        if not self.database.is_closed():
            self.database.close()

    def _write(self):
        # A read-then-write transaction takes SQLite's write lock at BEGIN, so two writers never
        # both read a stale state and then collide.
        if isinstance(self.database, peewee.SqliteDatabase):
            return self.database.atomic("IMMEDIATE")
        return self.database.atomic()

    @property
    def shares_connections(self) -> bool:
        """Whether a second connection (another thread's) sees this one's commits: false only
        for an in-memory SQLite database, private to its connection."""
        database = self.database.database
        return not (isinstance(self.database, peewee.SqliteDatabase) and database in ("", ":memory:"))

    def journal_mode(self) -> str:
        return str(self.database.execute_sql("PRAGMA journal_mode").fetchone()[0])

    # agent_meta.

    def get_meta(self, key: str) -> str | None:
        row = self._m.Meta.get_or_none(self._m.Meta.key == key)
        return None if row is None else row.value

    def set_meta(self, key: str, value: str) -> None:
        _upsert(self._m.Meta, [{"key": key, "value": value}], 1)

    # Nodes.

    def _nodes(self, query) -> list[NodeRecord]:
        grouped: dict[str, dict[str, str]] = {}
        for row in query.order_by(self._m.NodeProperty.node_name, self._m.NodeProperty.prop_name):
            grouped.setdefault(row.node_name, {})[row.prop_name] = row.prop_value
        return [NodeRecord(name, props) for name, props in grouped.items()]

    def list_nodes(self, names: Sequence[str] = ()) -> list[NodeRecord]:
        if not names:
            return self._nodes(self._m.NodeProperty.select())
        found: list[NodeRecord] = []
        for chunk in _chunks(sorted(set(names))):
            query = self._m.NodeProperty.select().where(self._m.NodeProperty.node_name.in_(chunk))
            found += self._nodes(query)
        return sorted(found, key=lambda node: node.name)

    def get_node(self, name: str) -> NodeRecord | None:
        nodes = self.list_nodes([name])
        return nodes[0] if nodes else None

    def count_nodes(self) -> int:
        return (
            self._m.NodeProperty.select(self._m.NodeProperty.node_name).distinct().count()
        )

    def _property_rows(self, node: NodeRecord) -> list[dict]:
        return [
            {"node_name": node.name, "prop_name": key, "prop_value": value}
            for key, value in node.properties.items()
        ]

    def add_nodes(self, nodes: Iterable[NodeRecord]) -> None:
        nodes = list(nodes)
        with self._write():
            taken = {n.name for n in self.list_nodes([n.name for n in nodes])}
            if taken:
                raise AlreadyExists(f"node name {sorted(taken)[0]!r} is already taken")
            rows = [row for node in nodes for row in self._property_rows(node)]
            for start in range(0, len(rows), 300):
                self._m.NodeProperty.insert_many(rows[start : start + 300]).execute()

    def remove_node(self, name: str) -> None:
        with self._write():
            if self.get_node(name) is None:
                raise NotFound(f"no node named {name!r}")
            action = self._m.Action.get_or_none(self._m.Action.node_name == name)
            if action is not None and not _action_from_row(action).final:
                raise Busy(f"node {name!r} is busy: {action.process} is in state {action.state!r}")
            self._m.NodeProperty.delete().where(self._m.NodeProperty.node_name == name).execute()
            self._m.Action.delete().where(self._m.Action.node_name == name).execute()

    def rename_node(self, old: str, new: str) -> NodeRecord:
        m = self._m
        with self._write():
            if self.get_node(old) is None:
                raise NotFound(f"no node named {old!r}")
            if self.get_node(new) is not None:
                raise AlreadyExists(f"node name {new!r} is already taken")
            action = m.Action.get_or_none(m.Action.node_name == old)
            if action is not None and not _action_from_row(action).final:
                raise Busy(f"node {old!r} is busy: {action.process} is in state {action.state!r}")
            m.NodeProperty.update(node_name=new).where(m.NodeProperty.node_name == old).execute()
            m.Action.update(node_name=new).where(m.Action.node_name == old).execute()
            m.Transition.update(node_name=new).where(m.Transition.node_name == old).execute()
            renamed = self.get_node(new)
            assert renamed is not None, "renamed in this transaction"
            return renamed

    # Environments.

    def list_environments(self) -> list[Environment]:
        query = self._m.EnvironmentRow.select().order_by(self._m.EnvironmentRow.name)
        return [_environment_from_row(row) for row in query]

    def get_environment(self, name: str) -> Environment | None:
        row = self._m.EnvironmentRow.get_or_none(self._m.EnvironmentRow.name == name)
        return None if row is None else _environment_from_row(row)

    def put_environments(self, environments: Iterable[Environment]) -> None:
        with self._write():
            rows = [
                {
                    "name": env.name,
                    "description": env.description,
                    "image": env.image,
                    "size_bytes": env.size_bytes,
                    "default_user": env.default_user,
                    "properties_json": json.dumps(dict(env.properties), sort_keys=True),
                }
                for env in environments
            ]
            _upsert(self._m.EnvironmentRow, rows, 500)

    def remove_environment(self, name: str) -> None:
        deleted = (
            self._m.EnvironmentRow.delete().where(self._m.EnvironmentRow.name == name).execute()
        )
        if not deleted:
            raise NotFound(f"no environment named {name!r}")

    # Actions.

    def list_actions(self, names: Sequence[str] = ()) -> list[ActionRecord]:
        # Named tuples, not model instances: GetActionState reads every action of the agent.
        query = self._m.Action.select().order_by(self._m.Action.node_name)
        if not names:
            return [_action_from_row(row) for row in query.namedtuples()]
        found: list[ActionRecord] = []
        for chunk in _chunks(sorted(set(names))):
            selected = query.where(self._m.Action.node_name.in_(chunk)).namedtuples()
            found += [_action_from_row(row) for row in selected]
        return sorted(found, key=lambda action: action.node_name)

    def get_action(self, name: str) -> ActionRecord | None:
        row = self._m.Action.get_or_none(self._m.Action.node_name == name)
        return None if row is None else _action_from_row(row)

    def action_inputs(
        self, node_name: str, environment: str
    ) -> tuple[NodeRecord | None, ActionRecord | None, Environment | None]:
        """What StartAction needs, in one trip to the database thread."""
        return self.action_inputs_many([(node_name, environment)])[0]

    def action_inputs_many(
        self, items: Sequence[tuple[str, str]]
    ) -> list[tuple[NodeRecord | None, ActionRecord | None, Environment | None]]:
        """For each (node name, environment name or ''): the node (None when unknown), its
        current action (None when it never had one) and the environment (None when '' or
        unknown), in the order of `items`; read in one transaction, a few statements for
        however many items (StartActions sends up to 1,000)."""
        names = [name for name, _ in items]
        wanted = sorted({environment for _, environment in items if environment})
        with self.database.atomic():
            nodes = {node.name: node for node in self.list_nodes(names)}
            actions = {action.node_name: action for action in self.list_actions(names)}
            environments = {}
            for chunk in _chunks(wanted):
                query = self._m.EnvironmentRow.select().where(self._m.EnvironmentRow.name.in_(chunk))
                environments.update({row.name: _environment_from_row(row) for row in query})
        return [
            (nodes.get(name), actions.get(name) if name in nodes else None,
             environments.get(environment) if name in nodes else None)
            for name, environment in items
        ]

    def unfinished_actions(self) -> list[ActionRecord]:
        return [action for action in self.list_actions() if not action.final]

    # The executor's grouped commits: everything in one transaction, a few multi-row statements
    # per kind of change (_Statements).

    def apply(self, changes: Sequence[Change]) -> None:
        """Commits `changes` in one transaction, in effect in their order: for each action the
        last record wins, written whole when any change of the group saved it whole (SaveAction),
        else only its state columns (UpdateState). TypeError for anything else."""
        statements = self._sql.commit(changes)
        with self._write():
            cursor = self.database.cursor()
            for sql, parameters in statements:
                # In Peewee's query log like its own queries (the filter installed by
                # hide_query_parameters drops the values, which hold os_password).
                _query_log.debug((sql, parameters))
                cursor.execute(sql, parameters)

    def loop_writer(self) -> LoopWriter | None:
        """A LoopWriter on this store's SQLite file; None for PostgreSQL (a commit there is a
        network round trip, for the database thread), for an in-memory database (a second
        connection would see another one) and for a file not in WAL mode. Call it on the thread
        that will use the writer; sqlite3.Error when the file cannot be opened."""
        if not isinstance(self.database, peewee.SqliteDatabase) or not self.shares_connections:
            return None
        return LoopWriter.open(str(self.database.database), self._sql)

    def checkpoint(self) -> None:
        """Copies the WAL's committed pages into the database file without waiting for anyone
        (PRAGMA wal_checkpoint(PASSIVE)); on the database thread, for a LoopWriter's commits,
        which never checkpoint themselves."""
        if isinstance(self.database, peewee.SqliteDatabase):
            self.database.execute_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def transitions(self, node_name: str | None = None) -> list[TransitionRecord]:
        query = self._m.Transition.select().order_by(self._m.Transition.id)
        if node_name is not None:
            query = query.where(self._m.Transition.node_name == node_name)
        return [
            TransitionRecord(
                node_name=row.node_name,
                action_id=row.action_id,
                process=row.process,
                state=row.state,
                state_idx=row.state_idx,
                event=row.event,
                at=row.at,
            )
            for row in query
        ]

    # The simulated machines (sim driver only).

    def sim_machines(self) -> dict[str, dict]:
        return {row.hardware_id: json.loads(row.state_json) for row in self._m.SimMachine.select()}
