"""Schema version 6: `node_outcome`, the outcome of each finished action per node (final state,
duration, hard reboots), from which node health and expected deploy durations are computed.

Frozen: the table is written out here as it was at version 6 and never changes; the current
model lives in store/models.py.
"""

from __future__ import annotations

import peewee as pw

VERSION = 6


def frozen_models(db: pw.Database) -> list[type[pw.Model]]:
    """The table version 6 adds, as a model bound to `db` (a fresh class on each call)."""
    proxy = pw.DatabaseProxy()
    proxy.initialize(db)

    class Base(pw.Model):
        class Meta:
            database = proxy
            legacy_table_names = False

    class NodeOutcome(Base):
        id = pw.AutoField()
        node_name = pw.CharField(max_length=64)
        type = pw.CharField(max_length=32)
        process = pw.CharField(max_length=32)
        environment = pw.CharField(max_length=64, default="")
        final_state = pw.CharField(max_length=64)
        action_id = pw.BigIntegerField()
        duration_seconds = pw.DoubleField(default=0.0)
        reboots = pw.IntegerField(default=0)
        finished_at = pw.BigIntegerField(default=0)
        recorded_at = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "node_outcome"
            indexes = (
                # One row per action of a node: recording the same report twice is harmless.
                (("node_name", "action_id"), True),
                # Expected deploy durations: the recent deploys of a node type and environment.
                (("process", "type", "environment", "id"), False),
            )

    return [NodeOutcome]


def apply(db: pw.Database) -> None:
    """Creates `node_outcome` with its indexes; runs inside the runner's transaction."""
    db.create_tables(frozen_models(db))
