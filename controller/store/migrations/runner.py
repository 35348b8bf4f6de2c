"""Applies the schema versions in order, each in its own transaction, recording the version
reached in table `schema_version` (one row)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import peewee as pw

from edgebed.controller.store.migrations import (
    v001,
    v002,
    v003_agent_tls,
    v004_sessions,
    v005_maintenance,
    v006_health,
    v007_leases,
    v008_last_error,
)

log = logging.getLogger(__name__)

# version -> the step that brings a database from version - 1 to it. A new schema version is a
# new vNNN.py module with its frozen models, added here.
MIGRATIONS: dict[int, Callable[[pw.Database], None]] = {
    v001.VERSION: v001.apply,
    v002.VERSION: v002.apply,
    v003_agent_tls.VERSION: v003_agent_tls.apply,
    v004_sessions.VERSION: v004_sessions.apply,
    v005_maintenance.VERSION: v005_maintenance.apply,
    v006_health.VERSION: v006_health.apply,
    v007_leases.VERSION: v007_leases.apply,
    v008_last_error.VERSION: v008_last_error.apply,
}

SCHEMA_VERSION = max(MIGRATIONS)


def _is_sqlite(db: pw.Database) -> bool:
    return isinstance(db, pw.SqliteDatabase)


def schema_version(db: pw.Database) -> int:
    """The version recorded in the database; 0 for a new database. Needs an open connection."""
    if "schema_version" not in db.get_tables():
        return 0
    row = db.execute_sql('SELECT MAX("version") FROM "schema_version"').fetchone()
    return int(row[0] or 0)


def migrate(db: pw.Database, target: int = SCHEMA_VERSION) -> int:
    """Brings the schema up to `target`, one step per transaction; returns the final version.

    Safe when several controllers start on one database at once: each step takes the write lock
    (SQLite: BEGIN IMMEDIATE; PostgreSQL: an exclusive lock on schema_version) and checks the
    version again before applying. RuntimeError when the database is newer than this code.
    """
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
            lock = db.atomic("IMMEDIATE") if _is_sqlite(db) else db.atomic()
            with lock:
                # Another controller may have migrated while we waited for the lock.
                if schema_version(db) >= version:
                    continue
                if not _is_sqlite(db):
                    db.execute_sql('LOCK TABLE "schema_version" IN EXCLUSIVE MODE')
                    if schema_version(db) >= version:
                        continue
                MIGRATIONS[version](db)
                db.execute_sql('DELETE FROM "schema_version"')
                db.execute_sql(
                    f'INSERT INTO "schema_version" ("version") VALUES ({int(version)})'
                )
                log.info("database schema upgraded to version %d", version)
        return schema_version(db)
