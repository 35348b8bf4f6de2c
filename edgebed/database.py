"""What the agent's and the controller's databases share: private SQLite files, and query logs
that never show the values a query carries.

Both databases hold secrets in clear or nearly so (agent tokens, users' os_password values, hashes
of passwords and API tokens), so a SQLite file and its -wal, -shm and -journal companions are
readable by their owner only, and Peewee's DEBUG query log keeps the SQL but drops the parameters.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_MODE = 0o600
# The files SQLite keeps beside a database: the WAL and its index in WAL mode, the rollback
# journal otherwise.
COMPANION_SUFFIXES = ("-wal", "-shm", "-journal")


def private_sqlite_file(path: str | os.PathLike[str]) -> None:
    """Makes the SQLite database at `path` private to this user before SQLite opens it.

    Absent: created empty (an empty file is an empty SQLite database) with mode 0600, whatever
    the umask. Present with group or other permission bits (a database made by an older edgebed,
    or by hand): narrowed to the owner's bits, and so are its companions that exist. SQLite gives
    the -wal, -shm and -journal files it creates the mode of the database file, so they are 0600
    from then on. A file owned by someone else cannot be changed: that is logged as a warning and
    the database is used as it is. Raises OSError when the file cannot be created (the caller
    reports the database as unusable). The parent folder must exist.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        for candidate in (path, *(Path(f"{path}{suffix}") for suffix in COMPANION_SUFFIXES)):
            _narrow(candidate)
        return
    try:
        # The umask may have taken bits from the mode os.open asked for; say it exactly.
        os.fchmod(fd, PRIVATE_MODE)
    finally:
        os.close(fd)


def _narrow(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if not mode & 0o077:
        return
    try:
        os.chmod(path, mode & 0o700)
    except OSError as exc:
        log.warning("%s is readable by other users and cannot be made private: %s", path, exc.strerror)
        return
    log.info("%s was readable by other users (mode %o); now %o", path, mode, mode & 0o700)


class _HideQueryParameters(logging.Filter):
    """Peewee logs every query with its parameters at DEBUG; those carry password hashes, API
    token hashes, agent tokens and secret action properties (os_password). Keep the SQL, drop
    the values."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, tuple) and len(record.msg) == 2:
            record.msg = (record.msg[0], "<parameters hidden>")
        return True


def hide_query_parameters() -> None:
    """Installs the filter above on the `peewee` logger, once however often it is called. Both
    stores call it when they open, so any process that opens a database has it."""
    peewee_log = logging.getLogger("peewee")
    if not any(isinstance(f, _HideQueryParameters) for f in peewee_log.filters):
        peewee_log.addFilter(_HideQueryParameters())
