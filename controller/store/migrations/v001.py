"""Schema version 1: the seed's tables, exactly as the seed lists them.

Frozen: these models are a copy of the schema as it was at version 1 and never change; the
current models live in store/models.py.
"""

from __future__ import annotations

import peewee as pw

VERSION = 1


def frozen_models(db: pw.Database) -> list[type[pw.Model]]:
    """The version 1 tables as models bound to `db` (fresh classes on each call, so concurrent
    migrations of two databases never share a binding)."""
    proxy = pw.DatabaseProxy()
    proxy.initialize(db)

    class Base(pw.Model):
        class Meta:
            database = proxy
            legacy_table_names = False

    class User(Base):
        email = pw.CharField(primary_key=True, max_length=254)
        password = pw.CharField(max_length=255)
        ssh_key = pw.TextField(default="")
        confirmed_email = pw.BooleanField(default=False)
        is_authorized = pw.BooleanField(default=False)
        is_admin = pw.BooleanField(default=False)

        class Meta:
            table_name = "user"

    class Agent(Base):
        name = pw.CharField(primary_key=True, max_length=64)
        type = pw.CharField(max_length=32)
        ip = pw.CharField(max_length=255)
        port = pw.IntegerField()
        status = pw.CharField(max_length=16)
        token = pw.TextField()

        class Meta:
            table_name = "agent"

    class Schedule(Base):
        node_name = pw.CharField(max_length=64)
        owner = pw.CharField(max_length=254)
        bin = pw.CharField(max_length=64, default="")
        start_date = pw.BigIntegerField()
        end_date = pw.BigIntegerField()
        status = pw.CharField(max_length=16)
        action_state = pw.CharField(max_length=64, default="")

        class Meta:
            table_name = "schedule"
            primary_key = pw.CompositeKey("node_name", "owner")

    class ActionProp(Base):
        node_name = pw.CharField(max_length=64)
        prop_name = pw.CharField(max_length=64)
        prop_value = pw.TextField()
        owner = pw.CharField(max_length=254)

        class Meta:
            table_name = "action_prop"
            primary_key = pw.CompositeKey("node_name", "prop_name", "owner")

    return [User, Agent, Schedule, ActionProp]


def apply(db: pw.Database) -> None:
    """Creates the version 1 tables; runs inside the runner's transaction."""
    db.create_tables(frozen_models(db))
