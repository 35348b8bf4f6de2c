"""Schema version 3: TLS to agents — the CA (or pinned certificate) the controller checks each
agent's certificate against.

Frozen: the column is written out here as it was at version 3 and never changes; the current
models live in store/models.py.
"""

from __future__ import annotations

import peewee as pw

VERSION = 3


def apply(db: pw.Database) -> None:
    """Adds agent.ca_pem (PEM text; '' = plaintext gRPC, what every existing agent keeps); runs
    inside the runner's transaction. TEXT NOT NULL DEFAULT '' reads the same on SQLite and
    PostgreSQL."""
    db.execute_sql('ALTER TABLE "agent" ADD COLUMN "ca_pem" TEXT NOT NULL DEFAULT \'\'')
