"""Rows to domain records and back: the only place that knows how a domain value is laid out in
a column (booleans stored as integers on SQLite, node type descriptions and environments as
JSON text). Works on any object with the row's attributes; imports no Peewee."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from edgebed.controller.domain import (
    AgentCatalog,
    AgentRecord,
    ApiToken,
    Environment,
    HistoryEntry,
    NodeMaintenance,
    NodeTypeInfo,
    PropertySpec,
    Retirement,
    ScheduleRecord,
    User,
)
from edgebed.controller.store.records import CachedNode

# Columns of `schedule` that the service and the scheduler may read and change
# (ScheduleChange, ScheduleRepository.update_schedule).
SCHEDULE_FIELDS = tuple(f.name for f in fields(ScheduleRecord))


def user_from_row(row: Any) -> User:
    """A user without the password hash (users.get_credentials gives that separately)."""
    return User(
        email=row.email,
        ssh_key=row.ssh_key,
        confirmed_email=bool(row.confirmed_email),
        is_authorized=bool(row.is_authorized),
        is_admin=bool(row.is_admin),
        created_at=int(row.created_at),
    )


def api_token_from_row(row: Any) -> ApiToken:
    """The token's description; its hash stays in the store."""
    return ApiToken(
        id=int(row.id),
        label=row.label,
        created_at=int(row.created_at),
        last_used_at=None if row.last_used_at is None else int(row.last_used_at),
    )


def agent_from_row(row: Any) -> AgentRecord:
    return AgentRecord(
        name=row.name,
        type=row.type,
        ip=row.ip,
        port=int(row.port),
        status=row.status,
        token=row.token,
        last_error=row.last_error,
        ca_pem=row.ca_pem,
    )


def schedule_from_row(row: Any) -> ScheduleRecord:
    values = {name: getattr(row, name) for name in SCHEDULE_FIELDS}
    values["pending_issued"] = bool(values["pending_issued"])
    values["ending"] = bool(values["ending"])
    return ScheduleRecord(**values)


def schedule_from_values(values: Sequence[Any]) -> ScheduleRecord:
    """A record from the values of SCHEDULE_FIELDS, in that order (a query's tuples)."""
    record = dict(zip(SCHEDULE_FIELDS, values, strict=True))
    record["pending_issued"] = bool(record["pending_issued"])
    record["ending"] = bool(record["ending"])
    return ScheduleRecord(**record)


def cached_node_from_row(row: Any) -> CachedNode:
    """`row` is a node row joined with its agent's `status` (None when the agent is gone)."""
    return CachedNode(
        name=row.name,
        agent=row.agent,
        type=row.type,
        properties=json.loads(row.properties),
        agent_status=row.status or "",
    )


def node_type_to_json(info: NodeTypeInfo) -> str:
    return json.dumps(
        {
            "type": info.type,
            "processes": info.processes,
            "properties": [vars(spec) for spec in info.properties],
            "final_states": info.final_states,
        }
    )


def node_type_from_json(text: str) -> NodeTypeInfo | None:
    """None for "" (an agent that has not described its node type yet)."""
    if not text:
        return None
    data = json.loads(text)
    return NodeTypeInfo(
        type=data["type"],
        processes={k: list(v) for k, v in data["processes"].items()},
        properties=[PropertySpec(**spec) for spec in data["properties"]],
        final_states=list(data["final_states"]),
    )


def environment_to_dict(env: Environment) -> dict[str, Any]:
    """The JSON form of one environment; agent and type are stored once per catalog row."""
    return {
        "name": env.name,
        "description": env.description,
        "image": env.image,
        "size_bytes": env.size_bytes,
        "default_user": env.default_user,
        "properties": dict(env.properties),
    }


def catalog_values(catalog: AgentCatalog) -> dict[str, str]:
    """The catalog row's columns but `agent` and `updated_at`."""
    return {
        "type": catalog.type,
        "node_type": "" if catalog.node_type is None else node_type_to_json(catalog.node_type),
        "environments": json.dumps([environment_to_dict(e) for e in catalog.environments]),
    }


def catalog_from_row(row: Any) -> AgentCatalog:
    envs = [
        Environment(**data, agent=row.agent, type=row.type)
        for data in json.loads(row.environments)
    ]
    return AgentCatalog(
        agent=row.agent,
        type=row.type,
        node_type=node_type_from_json(row.node_type),
        environments=envs,
    )


def history_from_row(row: Any) -> HistoryEntry:
    return HistoryEntry(
        id=int(row.id),
        node_name=row.node_name,
        owner=row.owner,
        bin=row.bin,
        start_date=int(row.start_date),
        end_date=int(row.end_date),
        environment=row.environment,
        outcome=row.outcome,
        ended=row.ended,
        end_reason=row.end_reason,
        ended_by=row.ended_by,
        ended_at=int(row.ended_at),
        last_error=row.last_error,
    )


def maintenance_from_row(row: Any, agent: str = "") -> NodeMaintenance:
    return NodeMaintenance(
        node_name=row.node_name,
        reason=row.reason,
        since=int(row.since),
        set_by=row.set_by,
        lost_in_a_row=int(row.lost_in_a_row),
        agent=agent,
    )


def retirement_from_row(row: Any) -> Retirement:
    return Retirement(
        kind=row.kind, name=row.name, requested_by=row.requested_by, requested_at=int(row.requested_at)
    )
