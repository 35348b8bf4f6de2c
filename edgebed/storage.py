"""What the agent and the controller share about the files that hold their data.

- `sqlite_file(spec)`: the file behind a database setting (a path or sqlite:///PATH), or None for
  PostgreSQL and in-memory databases.
- `DatabaseLock`: an exclusive advisory lock (flock) on `<database>.lock`, so that a second
  process on the same SQLite file is refused at start-up instead of driving the same actions or
  reservations twice.
- `damage(execute)` and `is_damage(exc)`: SQLite's own integrity check at start-up, and the
  errors a damaged file raises, so that both sides stop with one line naming the file.
- `is_disk_full(exc)`: whether a failed write failed for lack of space (SQLITE_FULL, ENOSPC,
  EDQUOT or PostgreSQL's disk_full), wherever it hides in the exception chain: after SQLITE_FULL,
  SQLite has already rolled the transaction back and Peewee's own rollback then raises "cannot
  rollback - no transaction is active", which carries the real cause as its context.
- `is_lock_conflict(exc)`: whether a write found a lock held by another connection (SQLITE_BUSY,
  SQLITE_LOCKED): the agent's loop writer then leaves the commit to its database thread.
"""

from __future__ import annotations

import errno
import fcntl
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

# SQLite's primary result codes (the low byte of an extended code).
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_NOTADB = 26
# PostgreSQL's SQLSTATE for "could not extend file: No space left on device".
PG_DISK_FULL = "53100"

_FULL_TEXT = "database or disk is full"
_LOCKED_TEXT = "database is locked"
_DAMAGE_TEXTS = ("database disk image is malformed", "file is not a database")


def sqlite_file(spec: str) -> Path | None:
    """The SQLite file a `database` setting names (a path, or sqlite:///PATH), or None when it
    names PostgreSQL or an in-memory database."""
    if "://" not in spec:
        return None if spec.strip() in ("", ":memory:") else Path(spec).expanduser()
    parsed = urlparse(spec)
    if parsed.scheme.startswith("sqlite") and parsed.path[1:] not in ("", ":memory:"):
        return Path(parsed.path[1:])
    return None


class DatabaseInUse(Exception):
    """Another process holds the lock of the same database file (`database`, `lock`)."""

    def __init__(self, database: Path, lock: Path) -> None:
        super().__init__(f"database {database} is in use (another process holds {lock})")
        self.database = database
        self.lock = lock


class DatabaseLock:
    """An exclusive flock on `<database>.lock`, held for the life of the process that runs the
    database's executor or scheduler. The kernel drops it when the process dies, however it dies,
    so a crashed process never leaves a stale lock behind.

    Raises DatabaseInUse when another process holds it, OSError when the lock file cannot be
    created.
    """

    def __init__(self, database: Path) -> None:
        self.path = Path(f"{database}.lock")
        database.parent.mkdir(parents=True, exist_ok=True)
        handle: IO[str] = open(self.path, "a+", encoding="ascii")  # held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DatabaseInUse(database, self.path) from None
        self._file: IO[str] | None = handle

    def release(self) -> None:
        """Drops the lock (the file stays: removing it would race with a process opening it)."""
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and the exceptions it wraps, each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [arg for arg in current.args if isinstance(arg, BaseException)]
        # Peewee keeps the driver's exception as `orig`.
        todo += [e for e in (current.__cause__, current.__context__, getattr(current, "orig", None)) if e is not None]


def _sqlite_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_disk_full(exc: BaseException) -> bool:
    """True when `exc` (or anything in its chain) says the disk is full."""
    for current in _chain(exc):
        if isinstance(current, sqlite3.Error) and (
            _sqlite_code(current) == SQLITE_FULL or _FULL_TEXT in str(current)
        ):
            return True
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if getattr(current, "pgcode", None) == PG_DISK_FULL:
            return True
        if type(current).__module__.startswith("peewee") and _FULL_TEXT in str(current):
            return True
    return False


def is_lock_conflict(exc: BaseException) -> bool:
    """True when `exc` (or anything in its chain) says another connection holds a lock the
    statement needed (SQLITE_BUSY or SQLITE_LOCKED): nothing was written, and the same write
    may succeed later."""
    for current in _chain(exc):
        if isinstance(current, sqlite3.Error) and (
            _sqlite_code(current) in (SQLITE_BUSY, SQLITE_LOCKED) or _LOCKED_TEXT in str(current)
        ):
            return True
    return False


def is_damage(exc: BaseException) -> bool:
    """True when `exc` (or anything in its chain) says the SQLite file is damaged or is not a
    SQLite database at all."""
    for current in _chain(exc):
        if _sqlite_code(current) in (SQLITE_CORRUPT, SQLITE_NOTADB):
            return True
        if any(text in str(current) for text in _DAMAGE_TEXTS):
            return True
    return False


def damage(execute: Callable[[str], Iterable[Any]]) -> str | None:
    """Runs SQLite's `PRAGMA quick_check` through `execute` (SQL -> rows); None when the file is
    sound, otherwise the first problem it reports, on one line. quick_check reads every page but
    skips the index-content comparison of integrity_check: seconds for a large file, milliseconds
    for a usual one."""
    try:
        rows = [str(row[0]) for row in execute("PRAGMA quick_check")]
    except Exception as exc:
        # A page the check itself cannot read ("database disk image is malformed").
        if not is_damage(exc):
            raise
        lines = str(exc).strip().splitlines()
        return lines[0] if lines else "database disk image is malformed"
    if rows == ["ok"]:
        return None
    problems = [
        line.strip() for row in rows for line in row.splitlines() if line.strip() and not line.startswith("***")
    ]
    return problems[0] if problems else "PRAGMA quick_check failed"


def damaged_message(path: Path | str, detail: str) -> str:
    """The one line both sides stop with when their SQLite file is damaged."""
    return (
        f"database {path} is damaged ({detail}); restore it from a backup, or move it away to "
        f"start with an empty one"
    )


def full_disk(where: Path | str | None) -> str:
    """"the disk holding <file>", or "the database server's disk" (where is None)."""
    return f"the disk holding {where}" if where is not None else "the database server's disk"


def disk_full_message(where: Path | str | None) -> str:
    """What a caller is told when a write failed for lack of space: nothing was written, and
    retrying once there is space succeeds."""
    return f"{full_disk(where)} is full: nothing was saved; free some space there and try again"


def disk_full_log(where: Path | str | None) -> str:
    """The log line (at most once a minute) while writes fail for lack of space."""
    return f"{full_disk(where)} is full: writes fail until there is space again"

