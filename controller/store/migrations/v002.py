"""Schema version 2: what the controller needs beyond the seed — dates, errors, the scheduler's
bookkeeping, the node cache, API tokens and the agents' catalogs.

Frozen: the new columns and tables are written out here as they were at version 2 and never
change; the current models live in store/models.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import peewee as pw

VERSION = 2


def _add_columns(db: pw.Database, table: str, columns: Sequence[tuple[str, str]]) -> None:
    """ALTER TABLE ADD COLUMN ... NOT NULL DEFAULT, which both SQLite and PostgreSQL accept.
    `columns` are (name, kind) with kind one of "int", "text", "bool"; existing rows get the
    default (0, '' or false)."""
    sqlite = isinstance(db, pw.SqliteDatabase)
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


def frozen_models(db: pw.Database) -> list[type[pw.Model]]:
    """The tables version 2 adds, as models bound to `db` (fresh classes on each call)."""
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

    return [Node, ApiToken, Catalog]


def apply(db: pw.Database) -> None:
    """Adds the version 2 columns (existing rows keep their data and get the defaults), the
    schedule's start_date index and the new tables; runs inside the runner's transaction."""
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
    db.create_tables(frozen_models(db))
