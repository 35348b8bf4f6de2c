"""The controller's database: WAL mode, the versioned schema and in-place migrations."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

import pytest

from edgebed.controller.store import SCHEMA_VERSION, Store, StoreUnavailable, migrate, open_database

SECRET = bytes(range(32))


async def test_a_new_sqlite_database_is_created_at_the_current_version_in_wal_mode(tmp_path):
    path = tmp_path / "controller.sqlite"
    store = Store(str(path), secret_key=SECRET)
    await store.open()
    try:
        assert await store.schema_version() == SCHEMA_VERSION
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"user", "agent", "schedule", "action_prop", "node", "api_token", "agent_catalog", "schema_version"} <= tables


def _seed_v1(url: str) -> None:
    """A database as version 1 (the seed's tables) left it, with some data in it."""
    db = open_database(url, max_connections=2)
    assert migrate(db, target=1) == 1
    with db.connection_context():
        cols = {c.name for c in db.get_columns("schedule")}
        assert cols == {"node_name", "owner", "bin", "start_date", "end_date", "status", "action_state"}
        db.execute_sql(
            'INSERT INTO "user" (email, password, ssh_key, confirmed_email, is_authorized, is_admin) '
            "VALUES ('old@example.org', 'argon2-hash', '', %s, %s, %s)" % (("1", "1", "0") if url.endswith(".sqlite") else ("TRUE", "TRUE", "FALSE"))
        )
        db.execute_sql(
            'INSERT INTO "agent" (name, type, ip, port, status, token) '
            "VALUES ('rpi', 'raspberry', '10.0.0.1', 50051, 'connected', 'tok')"
        )
        db.execute_sql(
            'INSERT INTO "schedule" (node_name, owner, bin, start_date, end_date, status, action_state) '
            "VALUES ('rpi-001', 'old@example.org', 'b', 100, 200, 'ready', 'deployed')"
        )
        db.execute_sql(
            'INSERT INTO "action_prop" (node_name, prop_name, prop_value, owner) '
            "VALUES ('rpi-001', 'environment', 'raspios', 'old@example.org')"
        )
    db.close_all()


async def test_a_version_1_database_is_upgraded_in_place_and_keeps_its_data(database_url):
    _seed_v1(database_url)
    store = Store(database_url, secret_key=SECRET)
    await store.open()
    try:
        assert await store.schema_version() == SCHEMA_VERSION
        user = await store.users.get_user("old@example.org")
        assert user is not None and user.is_authorized and not user.is_admin and user.created_at == 0
        agent = await store.agents.get_agent("rpi")
        assert agent is not None and agent.token == "tok" and agent.last_error == ""
        [row] = await store.schedule.list_schedule(owner="old@example.org")
        assert (row.node_name, row.bin, row.start_date, row.end_date, row.status, row.action_state) == (
            "rpi-001", "b", 100, 200, "ready", "deployed",
        )
        assert (row.pending, row.pending_issued, row.ending, row.process) == ("", False, False, "")
        assert await store.schedule.action_props(owner="old@example.org") == {
            ("rpi-001", "old@example.org"): {"environment": "raspios"}
        }
    finally:
        await store.close()
    # Opening again is a no-op: the migrations do not run twice.
    store = Store(database_url, secret_key=SECRET)
    await store.open()
    assert await store.schema_version() == SCHEMA_VERSION
    await store.close()


async def test_a_database_newer_than_the_code_is_refused(tmp_path):
    path = tmp_path / "future.sqlite"
    store = Store(str(path), secret_key=SECRET)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreUnavailable, match="newer than this controller"):
        await Store(str(path), secret_key=SECRET).open()


def test_only_the_store_package_imports_peewee():
    """The controller's services, the web layer and the domain see records, never rows: Peewee is
    imported inside controller/store/ only."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for folder in ("controller", "web"):
        for path in sorted((root / folder).rglob("*.py")):
            if (root / "controller" / "store") in path.parents:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                else:
                    continue
                if any(name.split(".")[0] in ("peewee", "playhouse") for name in names):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []


async def test_a_version_2_database_gets_the_maintenance_and_history_tables_and_keeps_its_reservations(
    database_url,
):
    db = open_database(database_url, max_connections=2)
    assert migrate(db, target=2) == 2
    with db.connection_context():
        db.execute_sql(
            'INSERT INTO "schedule" (node_name, owner, bin, start_date, end_date, status, action_state, '
            "process, state_idx, state_count, progress, node_ip, action_updated_at, pending, pending_issued, "
            "pending_since, baseline, ending, last_error) VALUES ('rpi-001', 'old@example.org', 'b', 100, 200, "
            "'ready', 'deployed', 'deploy', 6, 7, 0, '10.0.0.1', 150, '', %s, 0, '', %s, '')"
            % (("0", "0") if not database_url.startswith("postgres") else ("FALSE", "FALSE"))
        )
    db.close_all()
    store = Store(database_url, secret_key=SECRET)
    await store.open()
    try:
        assert await store.schema_version() == SCHEMA_VERSION >= 3
        [row] = await store.schedule.list_schedule()
        assert (row.action_state, row.end_reason, row.ended_by, row.request_filter, row.notice) == (
            "deployed", "", "", "", ""
        )
        assert await store.maintenance.list_maintenance() == []
        assert await store.schedule.list_history() == []
        assert await store.maintenance.list_retirements() == []
    finally:
        await store.close()


async def test_the_migrated_schema_has_exactly_the_models_columns(database_url):
    """Each table as the migrations leave it has the columns models.py declares: a model
    changed without a migration (or the other way round) fails here."""
    import peewee

    from edgebed.controller.store.models import define_models

    store = Store(database_url, secret_key=SECRET)
    await store.open()
    await store.close()
    db = open_database(database_url, max_connections=2)
    proxy = peewee.DatabaseProxy()
    proxy.initialize(db)
    models = define_models(proxy)
    with db.connection_context():
        for name, model in vars(models).items():
            table = model._meta.table_name
            columns = {column.name for column in db.get_columns(table)}
            assert columns == {f.column_name for f in model._meta.sorted_fields}, name
    db.close_all()
