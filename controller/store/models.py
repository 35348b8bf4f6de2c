"""The current schema as Peewee models. Field names of the seed's tables are kept exactly.

define_models() builds a fresh set of model classes bound to the given DatabaseProxy, which the
engine initializes when the store opens: nothing is bound at import time, and each store has its
own classes. The migrations never use these models (each version keeps its own frozen copy), so
changing them here never changes what an old migration does; a change here needs a new
migrations/vNNN.py that brings existing databases to the same shape.
"""

from __future__ import annotations

from types import SimpleNamespace

import peewee as pw


def define_models(proxy: pw.DatabaseProxy) -> SimpleNamespace:
    """The models of schema version migrations.SCHEMA_VERSION, bound to `proxy`: a namespace with
    SchemaVersion, User, Agent, Schedule, ActionProp, Node (the node cache), ApiToken, Catalog
    (an agent's node type description and environments), LoginSession, NodeMaintenance, History
    (ended reservations), Retirement (removals waiting for reservations to end), NodeOutcome
    (finished actions), ControllerInstance and AgentLease (controllers sharing the database,
    controller/leases.py) and LoginAttempt (log-in rate limits)."""

    class Base(pw.Model):
        class Meta:
            database = proxy
            legacy_table_names = False

    class SchemaVersion(Base):
        version = pw.IntegerField()

        class Meta:
            table_name = "schema_version"
            primary_key = False

    class UserRow(Base):
        email = pw.CharField(primary_key=True, max_length=254)
        password = pw.CharField(max_length=255)
        ssh_key = pw.TextField(default="")
        confirmed_email = pw.BooleanField(default=False)
        is_authorized = pw.BooleanField(default=False)
        is_admin = pw.BooleanField(default=False)
        created_at = pw.BigIntegerField(default=0)
        # Random; replaced when the password changes or the rights shrink (migrations/v004_sessions).
        credential_version = pw.CharField(max_length=64, default="")

        class Meta:
            table_name = "user"

    class AgentRow(Base):
        name = pw.CharField(primary_key=True, max_length=64)
        type = pw.CharField(max_length=32)
        ip = pw.CharField(max_length=255)
        port = pw.IntegerField()
        status = pw.CharField(max_length=16)
        token = pw.TextField()
        last_error = pw.TextField(default="")
        # PEM: the CA the agent's certificate must chain to (or the pinned certificate itself);
        # "" = plaintext gRPC.
        ca_pem = pw.TextField(default="")

        class Meta:
            table_name = "agent"

    class ScheduleRow(Base):
        node_name = pw.CharField(max_length=64)
        owner = pw.CharField(max_length=254)
        bin = pw.CharField(max_length=64, default="")
        start_date = pw.BigIntegerField()
        end_date = pw.BigIntegerField()
        status = pw.CharField(max_length=16)
        action_state = pw.CharField(max_length=64, default="")
        process = pw.CharField(max_length=32, default="")
        state_idx = pw.IntegerField(default=0)
        state_count = pw.IntegerField(default=0)
        progress = pw.IntegerField(default=0)
        node_ip = pw.CharField(max_length=255, default="")
        action_updated_at = pw.BigIntegerField(default=0)
        pending = pw.CharField(max_length=32, default="")
        pending_issued = pw.BooleanField(default=False)
        pending_since = pw.BigIntegerField(default=0)
        baseline = pw.TextField(default="")
        ending = pw.BooleanField(default=False)
        last_error = pw.TextField(default="")
        end_reason = pw.TextField(default="")
        ended_by = pw.TextField(default="")
        request_filter = pw.TextField(default="")
        notice = pw.TextField(default="")
        action_error = pw.TextField(default="")

        class Meta:
            table_name = "schedule"
            primary_key = pw.CompositeKey("node_name", "owner")

    class ActionPropRow(Base):
        node_name = pw.CharField(max_length=64)
        prop_name = pw.CharField(max_length=64)
        prop_value = pw.TextField()
        owner = pw.CharField(max_length=254)

        class Meta:
            table_name = "action_prop"
            primary_key = pw.CompositeKey("node_name", "prop_name", "owner")

    class NodeRow(Base):
        name = pw.CharField(primary_key=True, max_length=64)
        agent = pw.CharField(max_length=64, index=True)
        type = pw.CharField(max_length=32)
        properties = pw.TextField(default="{}")
        updated_at = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "node"

    class ApiTokenRow(Base):
        id = pw.AutoField()
        owner = pw.CharField(max_length=254, index=True)
        label = pw.CharField(max_length=100, default="")
        token_hash = pw.CharField(max_length=64, unique=True)
        created_at = pw.BigIntegerField(default=0)
        last_used_at = pw.BigIntegerField(null=True)

        class Meta:
            table_name = "api_token"

    class CatalogRow(Base):
        agent = pw.CharField(primary_key=True, max_length=64)
        type = pw.CharField(max_length=32)
        node_type = pw.TextField(default="")
        environments = pw.TextField(default="[]")
        updated_at = pw.BigIntegerField(default=0)

        class Meta:
            table_name = "agent_catalog"

    class LoginSessionRow(Base):
        id_hash = pw.CharField(primary_key=True, max_length=64)
        owner = pw.CharField(max_length=254, index=True)
        created_at = pw.BigIntegerField()
        expires_at = pw.BigIntegerField(index=True)

        class Meta:
            table_name = "login_session"

    class NodeMaintenanceRow(Base):
        node_name = pw.CharField(primary_key=True, max_length=64)
        active = pw.BooleanField(default=False)
        reason = pw.TextField(default="")
        since = pw.BigIntegerField(default=0)
        set_by = pw.CharField(max_length=254, default="")
        lost_in_a_row = pw.IntegerField(default=0)
        last_counted = pw.TextField(default="")

        class Meta:
            table_name = "node_maintenance"

    class HistoryRow(Base):
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

    class RetirementRow(Base):
        kind = pw.CharField(max_length=16)
        name = pw.CharField(max_length=64)
        requested_by = pw.CharField(max_length=254)
        requested_at = pw.BigIntegerField()

        class Meta:
            table_name = "retirement"
            primary_key = pw.CompositeKey("kind", "name")

    class NodeOutcomeRow(Base):
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
                (("node_name", "action_id"), True),
                (("process", "type", "environment", "id"), False),
            )

    class ControllerInstanceRow(Base):
        id = pw.CharField(primary_key=True, max_length=64)
        host = pw.CharField(max_length=255, default="")
        pid = pw.IntegerField(default=0)
        role = pw.CharField(max_length=16, default="all")
        started_at = pw.DoubleField(default=0.0)
        heartbeat_at = pw.DoubleField(default=0.0)

        class Meta:
            table_name = "controller_instance"

    class AgentLeaseRow(Base):
        agent = pw.CharField(primary_key=True, max_length=64)
        holder = pw.CharField(max_length=64, default="")
        token = pw.BigIntegerField(default=0)
        acquired_at = pw.DoubleField(default=0.0)
        renewed_at = pw.DoubleField(default=0.0)
        expires_at = pw.DoubleField(default=0.0)

        class Meta:
            table_name = "agent_lease"

    class LoginAttemptRow(Base):
        id = pw.AutoField()
        limiter = pw.CharField(max_length=16)
        bucket = pw.CharField(max_length=64)
        attempted_at = pw.DoubleField()

        class Meta:
            table_name = "login_attempt"
            indexes = ((("limiter", "bucket", "attempted_at"), False), (("attempted_at",), False))

    return SimpleNamespace(
        SchemaVersion=SchemaVersion,
        User=UserRow,
        Agent=AgentRow,
        Schedule=ScheduleRow,
        ActionProp=ActionPropRow,
        Node=NodeRow,
        ApiToken=ApiTokenRow,
        Catalog=CatalogRow,
        LoginSession=LoginSessionRow,
        NodeMaintenance=NodeMaintenanceRow,
        History=HistoryRow,
        Retirement=RetirementRow,
        NodeOutcome=NodeOutcomeRow,
        ControllerInstance=ControllerInstanceRow,
        AgentLease=AgentLeaseRow,
        LoginAttempt=LoginAttemptRow,
    )
