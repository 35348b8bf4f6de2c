"""The helpers both sides share for their database files (edgebed/storage.py) and the log line
that repeats at most once a minute (edgebed/ratelog.py)."""

from __future__ import annotations

import errno
import logging
import sqlite3
from pathlib import Path

import peewee
import pytest

from edgebed.ratelog import RateLimitedLog
from edgebed.storage import DatabaseInUse, DatabaseLock, damage, is_damage, is_disk_full, is_lock_conflict, sqlite_file


def test_a_full_disk_is_found_behind_peewees_failed_rollback(tmp_path):
    """After SQLITE_FULL, SQLite has rolled back already; Peewee's rollback then fails with
    "cannot rollback", whose context holds the real cause."""
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13
    wrapped = peewee.OperationalError(full)
    try:
        try:
            raise wrapped
        except peewee.OperationalError:
            raise peewee.OperationalError("cannot rollback - no transaction is active") from None
    except peewee.OperationalError as exc:
        masked = exc
    masked.__context__ = wrapped
    assert is_disk_full(masked)
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_disk_full(peewee.OperationalError("database is locked"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))


def test_a_lock_held_by_another_connection_is_a_lock_conflict_and_nothing_else_is(tmp_path):
    path = tmp_path / "locked.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as caught:
            other.execute("BEGIN IMMEDIATE")
        assert is_lock_conflict(caught.value)
        # Behind Peewee's wrapper too.
        try:
            raise peewee.OperationalError("database is locked") from caught.value
        except peewee.OperationalError as wrapped:
            assert is_lock_conflict(wrapped)
        assert not is_lock_conflict(sqlite3.OperationalError("database or disk is full"))
        assert not is_lock_conflict(OSError(errno.ENOSPC, "No space left on device"))
    finally:
        holder.close()
        other.close()


def test_damage_reports_the_first_problem_on_one_line():
    assert damage(lambda sql: [("ok",)]) is None
    rows = [("*** in database main ***\nPage 11: btreeInitPage() returns error code 11\nPage 12: bad",)]
    assert damage(lambda sql: rows) == "Page 11: btreeInitPage() returns error code 11"

    def unreadable(sql):
        raise sqlite3.DatabaseError("database disk image is malformed")

    assert damage(unreadable) == "database disk image is malformed"
    assert is_damage(peewee.DatabaseError(sqlite3.DatabaseError("file is not a database")))


def test_sqlite_file_and_the_lock(tmp_path):
    assert sqlite_file("var/db.sqlite") == Path("var/db.sqlite")
    assert sqlite_file("sqlite:////srv/db.sqlite") == Path("/srv/db.sqlite")
    assert sqlite_file("postgresql://u:p@h/db") is None and sqlite_file("sqlite:///:memory:") is None
    database = tmp_path / "sub" / "db.sqlite"
    first = DatabaseLock(database)
    with pytest.raises(DatabaseInUse) as caught:
        DatabaseLock(database)
    assert caught.value.lock == Path(f"{database}.lock")
    first.release()
    DatabaseLock(database).release()


def test_a_rate_limited_line_repeats_once_a_minute_and_counts_the_rest(caplog):
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("edgebed.test"), 60.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="edgebed.test")
    assert limited.log(logging.ERROR, "full", "disk %s is full", "/var")
    for _ in range(100):
        now[0] += 0.5
        assert not limited.log(logging.ERROR, "full", "disk %s is full", "/var")
    assert limited.log(logging.ERROR, "other", "another key")
    now[0] += 10
    assert limited.log(logging.ERROR, "full", "disk %s is full", "/var")
    assert [r.getMessage() for r in caplog.records] == [
        "disk /var is full", "another key", "disk /var is full (100 more like it since the last such line)",
    ]
