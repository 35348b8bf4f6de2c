"""Schema version 8: `schedule.action_error`, the agent's last_error of the reservation's current
action (ActionState.last_error: what the driver last reported failing, why a lost action was
lost), mirrored with the action's state and shown to its owner and the administrators.

Frozen: one column, added as it was at version 8; the current model lives in store/models.py.
"""

from __future__ import annotations

import peewee as pw

VERSION = 8


def apply(db: pw.Database) -> None:
    """ALTER TABLE ADD COLUMN ... NOT NULL DEFAULT '' (both SQLite and PostgreSQL accept it);
    existing rows read '' until their agent reports their action again. Runs inside the
    runner's transaction."""
    db.execute_sql("ALTER TABLE \"schedule\" ADD COLUMN \"action_error\" TEXT NOT NULL DEFAULT ''")
