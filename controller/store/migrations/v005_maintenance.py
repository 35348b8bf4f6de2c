"""Schema version 5: never hand out a dirty node (issue #10).

- `schedule` gains why and by whom a reservation ends (`end_reason`, `ended_by`), the filter it
  was reserved with (`request_filter`, for an administrator's move) and a `notice` to its owner.
- `node_maintenance`: one row per node the controller keeps a condition for: whether it is in
  maintenance (with the reason, since when and who put it there) and how many of its actions in
  a row ended `lost` (with the fingerprint of the last one counted, so none counts twice). Keyed
  by node name, not tied to the node cache: a node in maintenance stays there when its agent
  stops listing it or is removed and registered again.
- `reservation_history`: every ended reservation (owner, node, window, environment, final
  outcome, how and why it ended).
- `retirement`: an administrator's removal of an agent or node that waits for its reservations
  to be destroyed.

Frozen: written out as they were at version 5; the current models live in store/models.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import peewee as pw

VERSION = 5


def _add_columns(db: pw.Database, table: str, columns: Sequence[tuple[str, str]]) -> None:
    """ALTER TABLE ADD COLUMN ... NOT NULL DEFAULT, which both SQLite and PostgreSQL accept;
    `columns` are (name, "text") and existing rows get ''."""
    for name, kind in columns:
        assert kind == "text", kind
        db.execute_sql(f"ALTER TABLE \"{table}\" ADD COLUMN \"{name}\" TEXT NOT NULL DEFAULT ''")


def frozen_models(db: pw.Database) -> list[type[pw.Model]]:
    """The tables version 5 adds, as models bound to `db` (fresh classes on each call)."""
    proxy = pw.DatabaseProxy()
    proxy.initialize(db)

    class Base(pw.Model):
        class Meta:
            database = proxy
            legacy_table_names = False

    class NodeMaintenance(Base):
        node_name = pw.CharField(primary_key=True, max_length=64)
        active = pw.BooleanField(default=False)
        reason = pw.TextField(default="")
        since = pw.BigIntegerField(default=0)
        set_by = pw.CharField(max_length=254, default="")
        lost_in_a_row = pw.IntegerField(default=0)
        last_counted = pw.TextField(default="")

        class Meta:
            table_name = "node_maintenance"

    class ReservationHistory(Base):
        id = pw.AutoField()
        node_name = pw.CharField(max_length=64, index=True)
        owner = pw.CharField(max_length=254, index=True)
        bin = pw.CharField(max_length=64, default="")
        start_date = pw.BigIntegerField()
        end_date = pw.BigIntegerField()
        environment = pw.CharField(max_length=64, default="")
        outcome = pw.CharField(max_length=64, default="")
        ended = pw.CharField(max_length=16)
        end_reason = pw.CharField(max_length=32)
        ended_by = pw.CharField(max_length=254, default="")
        ended_at = pw.BigIntegerField(index=True)
        last_error = pw.TextField(default="")

        class Meta:
            table_name = "reservation_history"

    class Retirement(Base):
        kind = pw.CharField(max_length=16)
        name = pw.CharField(max_length=64)
        requested_by = pw.CharField(max_length=254)
        requested_at = pw.BigIntegerField()

        class Meta:
            table_name = "retirement"
            primary_key = pw.CompositeKey("kind", "name")

    return [NodeMaintenance, ReservationHistory, Retirement]


def apply(db: pw.Database) -> None:
    """Adds the version 5 columns (existing rows get '') and tables; runs inside the runner's
    transaction."""
    _add_columns(
        db,
        "schedule",
        [("end_reason", "text"), ("ended_by", "text"), ("request_filter", "text"), ("notice", "text")],
    )
    db.create_tables(frozen_models(db))
