"""Shared by pages and the JSON API: domain objects as JSON, and acting on several nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from edgebed.controller.errors import ServiceError

T = TypeVar("T")


async def act_on_each(names: Iterable[str], act: Callable[[str], Awaitable[T]]) -> list[T]:
    """Runs act(name) for every name concurrently (nodes of different agents do not wait on each
    other). When some fail, raises the first failure's kind of error with every failure named,
    and the nodes that did succeed, so nothing happens unseen."""
    names = list(names)
    outcomes = await asyncio.gather(*(act(name) for name in names), return_exceptions=True)
    done: list[T] = []
    failures: list[tuple[str, ServiceError]] = []
    for name, outcome in zip(names, outcomes, strict=True):
        if isinstance(outcome, ServiceError):
            failures.append((name, outcome))
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            done.append(outcome)
    if failures:
        first = failures[0][1]
        message = "; ".join(f"{name}: {getattr(error, 'message', str(error))}" for name, error in failures)
        succeeded = [name for name in names if name not in {n for n, _ in failures}]
        if succeeded:
            message += f" (done: {', '.join(succeeded)})"
        raise type(first)(message)
    return done


def reservation_json(r) -> dict[str, Any]:
    return {
        "node_name": r.node_name,
        "owner": r.owner,
        "bin": r.bin,
        "start_date": r.start_date,
        "end_date": r.end_date,
        "status": r.status,
        "action_state": r.action_state,
        "progress": r.progress,
        "process": r.process,
        "state_idx": r.state_idx,
        "state_count": r.state_count,
        "node_ip": r.node_ip,
        "default_user": r.default_user,
        "agent": r.agent,
        "type": r.type,
        "properties": dict(r.properties),
        "missing_properties": list(r.missing),
        "last_error": r.last_error,
        "action_error": r.action_error,
        "pending": r.pending,
        "ending": r.ending,
        "notice": r.notice,
        "node_maintenance": r.node_maintenance,
    }


def history_json(h) -> dict[str, Any]:
    return {
        "id": h.id,
        "node_name": h.node_name,
        "owner": h.owner,
        "bin": h.bin,
        "start_date": h.start_date,
        "end_date": h.end_date,
        "environment": h.environment,
        "outcome": h.outcome,
        "ended": h.ended,
        "end_reason": h.end_reason,
        "ended_by": h.ended_by,
        "ended_at": h.ended_at,
        "last_error": h.last_error,
    }


def maintenance_json(m) -> dict[str, Any]:
    return {
        "node_name": m.node_name,
        "reason": m.reason,
        "since": m.since,
        "set_by": m.set_by,
        "lost_in_a_row": m.lost_in_a_row,
        "agent": m.agent,
    }


def removal_json(r) -> dict[str, Any]:
    return {
        "kind": r.kind,
        "name": r.name,
        "removed": r.removed,
        "waiting_for": [{"node_name": node, "owner": owner} for node, owner in r.waiting_for],
    }


def user_json(u) -> dict[str, Any]:
    return {
        "email": u.email,
        "ssh_key": u.ssh_key,
        "confirmed_email": u.confirmed_email,
        "is_authorized": u.is_authorized,
        "is_admin": u.is_admin,
        "created_at": u.created_at,
    }


def agent_json(a) -> dict[str, Any]:
    return {
        "name": a.name,
        "type": a.type,
        "ip": a.ip,
        "port": a.port,
        "status": a.status,
        "last_error": a.last_error,
        "node_count": a.node_count,
        "tls": a.tls,
    }


def node_json(n) -> dict[str, Any]:
    return {
        "name": n.name,
        "agent": n.agent,
        "type": n.type,
        "properties": dict(n.properties),
        "connected": n.connected,
        "maintenance": (
            {"reason": n.maintenance, "since": n.maintenance_since} if n.maintenance else None
        ),
        "retiring": n.retiring,
    }


def environment_json(e) -> dict[str, Any]:
    return {
        "name": e.name,
        "description": e.description,
        "image": e.image,
        "size_bytes": e.size_bytes,
        "default_user": e.default_user,
        "properties": dict(e.properties),
        "agent": getattr(e, "agent", ""),
    }


def nodetype_json(t) -> dict[str, Any]:
    return {
        "processes": {name: list(states) for name, states in t.processes.items()},
        "properties": [
            {
                "name": p.name,
                "required": p.required,
                "values": list(p.values),
                "secret": p.secret,
                "description": p.description,
                "label": p.label,
                "help": p.help,
                "min_length": p.min_length,
                "max_length": p.max_length,
                "pattern": p.pattern,
            }
            for p in t.properties
        ],
        "final_states": list(t.final_states),
    }


def clock_json(c) -> dict[str, Any]:
    """A controller.clock.ClockStatus as the API shows it (schema ClockStatus)."""
    return {
        "paused": c.paused,
        "offset_seconds": c.offset_seconds,
        "paused_since": c.paused_since,
        "max_jump_seconds": c.max_jump_seconds,
        "wall_time": c.wall_time,
    }
