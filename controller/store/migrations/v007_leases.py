"""Schema version 7: what several controllers on one database share.

- `controller_instance`: one row per running controller process, its heartbeat renewed every
  third of `[scheduler] lease_seconds` (controller/leases.py); a controller whose heartbeat is
  older than a lease is dead to the others.
- `agent_lease`: which controller drives (polls, refreshes, writes the reservations of) each
  agent, until when, and the fencing token, incremented on each change of holder, that every
  scheduler write checks in its own transaction. The row named `*` is the lease on the work no
  agent owns (reservations of nodes that left the inventory, removals waiting for their rows).
- `login_attempt`: the log-in attempts the rate limits count (controller/login_limits.py), so that
  every controller behind a load balancer counts the same ones.

Times are epoch seconds (UTC) as DOUBLE: heartbeats and leases are stamped with the database's
clock, never a controller's. Frozen: the tables as they were at version 7; the current models
live in store/models.py.
"""

from __future__ import annotations

import peewee as pw

VERSION = 7


def frozen_models(db: pw.Database) -> list[type[pw.Model]]:
    """The tables version 7 adds, as models bound to `db` (fresh classes on each call)."""
    proxy = pw.DatabaseProxy()
    proxy.initialize(db)

    class Base(pw.Model):
        class Meta:
            database = proxy
            legacy_table_names = False

    class ControllerInstance(Base):
        id = pw.CharField(primary_key=True, max_length=64)
        host = pw.CharField(max_length=255, default="")
        pid = pw.IntegerField(default=0)
        role = pw.CharField(max_length=16, default="all")
        started_at = pw.DoubleField(default=0.0)
        heartbeat_at = pw.DoubleField(default=0.0)

        class Meta:
            table_name = "controller_instance"

    class AgentLease(Base):
        agent = pw.CharField(primary_key=True, max_length=64)
        holder = pw.CharField(max_length=64, default="")
        token = pw.BigIntegerField(default=0)
        acquired_at = pw.DoubleField(default=0.0)
        renewed_at = pw.DoubleField(default=0.0)
        expires_at = pw.DoubleField(default=0.0)

        class Meta:
            table_name = "agent_lease"

    class LoginAttempt(Base):
        id = pw.AutoField()
        limiter = pw.CharField(max_length=16)
        # SHA-256 (hex) of what the limit is per (an email and address, an address): no email
        # or address is kept in clear for this.
        bucket = pw.CharField(max_length=64)
        attempted_at = pw.DoubleField()

        class Meta:
            table_name = "login_attempt"
            indexes = ((("limiter", "bucket", "attempted_at"), False), (("attempted_at",), False))

    return [ControllerInstance, AgentLease, LoginAttempt]


def apply(db: pw.Database) -> None:
    """Creates the three tables with their indexes; runs inside the runner's transaction."""
    db.create_tables(frozen_models(db))
