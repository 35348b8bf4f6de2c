"""The user's pages: reserve nodes, configure them, manage them while they run, and the history
of those that ended."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from edgebed.controller.errors import InvalidInput
from edgebed.controller.lifecycle import Status
from edgebed.controller.reservations import USER_ACTIONS, node_matches
from edgebed.controller.validation import LATEST_START, START_SLACK_SECONDS
from edgebed.web.auth import require_user
from edgebed.web.forms import (
    MAX_LONG,
    day_starts,
    field,
    form_list,
    format_epoch,
    local_datetime_value,
    parse_int,
    parse_number,
    read_local_datetime,
    zone,
)
from edgebed.web.fragments import reserve_rows
from edgebed.web.keys import CONTROLLER, SETTINGS
from edgebed.web.render import flash, render, viewer_zone
from edgebed.web.views_common import act_on_each, reservation_json

FILTER_PREFIX = "f."
PROPERTY_PREFIX = "prop."
TIMELINE_DAYS_DEFAULT = 7
# A property with more distinct values than this (ip, serial) is not offered as a filter menu.
MAX_FILTER_CHOICES = 40
# The manage page lists the reservations that ended this recently.
RECENT_SECONDS = 24 * 3600


# ---------------------------------------------------------------------------------------------
# reserve


def _filters_from(query) -> dict[str, str]:
    filters = {}
    for key, value in query.items():
        if key.startswith(FILTER_PREFIX) and isinstance(value, str) and value.strip():
            name = key[len(FILTER_PREFIX):]
            if name and len(name) <= 64 and len(value) <= 256:
                filters[name] = value.strip()
    return filters


def _filter_choices(nodes) -> dict[str, list[str]]:
    """Per property (and type, agent), the values seen, for the filter menus. A property whose
    every value is different (ip, serial) picks single nodes, which ticking does better."""
    seen: dict[str, set[str]] = defaultdict(set)
    holders: dict[str, int] = defaultdict(int)
    for node in nodes:
        seen["type"].add(node.type)
        seen["agent"].add(node.agent)
        holders["type"] += 1
        holders["agent"] += 1
        for name, value in node.properties.items():
            holders[name] += 1
            if len(seen[name]) <= MAX_FILTER_CHOICES:
                seen[name].add(value)
    return {
        name: sorted(values)
        for name, values in sorted(seen.items())
        if len(values) <= MAX_FILTER_CHOICES and (len(values) < holders[name] or holders[name] == 1)
    }


def _timeline_bars(busy, start: int, end: int, tz) -> list[dict[str, Any]]:
    span = end - start
    bars = []
    for window in busy:
        left = max(window.start_date, start)
        right = min(window.end_date, end)
        if right <= left:
            continue
        bars.append(
            {
                "left": round((left - start) * 100 / span, 3),
                "width": max(round((right - left) * 100 / span, 3), 0.3),
                "mine": window.mine,
                "title": f"{format_epoch(window.start_date, tz)} – {format_epoch(window.end_date, tz)}",
            }
        )
    return bars


async def reserve_page(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    ctl = request.app[CONTROLLER]
    tz = viewer_zone(request)
    days = parse_int(request.query.get("days", str(TIMELINE_DAYS_DEFAULT)), "days", minimum=1, maximum=60)
    filters = _filters_from(request.query)
    now = int(time.time())
    # The timeline runs from today's midnight to the midnight `days` later, in the viewer's zone.
    midnights = day_starts(now, days, tz)
    window_start, window_end = midnights[0][0], midnights[-1][0]
    span = window_end - window_start
    nodes = await ctl.inventory.list_nodes()
    timeline = await ctl.inventory.timeline(window_start, window_end, user)
    shown = [node for node in nodes if node_matches(node, filters)]
    # The table shows the properties that the shown nodes have, in a stable order.
    columns = sorted({name for node in shown for name in node.properties})[:8]
    rows = [
        {
            "name": node.name,
            "type": node.type,
            "agent": node.agent,
            "connected": node.connected,
            "maintenance": node.maintenance,
            "retiring": node.retiring,
            "cells": [node.properties.get(column, "") for column in columns],
            "bars": _timeline_bars(timeline.get(node.name, ()), window_start, window_end, tz),
        }
        for node in shown
    ]
    ticks = [
        {"left": round((t - window_start) * 100 / span, 3), "label": label}
        for t, label in midnights[:-1]
    ]
    return await render(
        request,
        "reserve.html",
        {
            # Built by web.fragments, not the template: a thousand rows (scripts/bench/web_pages.py).
            "rows_html": reserve_rows(rows),
            "shown": len(rows),
            "columns": columns,
            "filters": filters,
            "choices": _filter_choices(nodes),
            "ticks": ticks,
            "day_width": round(100 / days, 4),
            "now_left": round((now - window_start) * 100 / span, 3),
            "days": days,
            "start_value": local_datetime_value(now, tz),
            # The same bounds the service checks (controller.validation, the settings).
            "latest_start": local_datetime_value(LATEST_START - 60, tz),
            "min_duration": f"{request.app[SETTINGS].min_duration_hours:g}",
            "max_duration": f"{request.app[SETTINGS].max_duration_hours:g}",
            "total": len(nodes),
        },
    )


async def reserve(request: web.Request) -> web.StreamResponse:
    """The reserve form. The window's rules (controller.validation) are checked by the service,
    with the same messages as the JSON API; a local start time that happens twice that day is
    read as the first, and the next page says so."""
    user = await require_user(request)
    form = await request.post()
    tz = zone(field(form, "tz", required=False, max_length=64))
    local = read_local_datetime(field(form, "start", label="start date"), tz, "start date")
    start = local.epoch
    now = int(time.time())
    if now - START_SLACK_SECONDS <= start < now:
        # "Now" picked on a minute-granular field: the window starts now, not in the past.
        start = now
    duration = parse_number(field(form, "duration_hours", label="duration"), "duration (hours)")
    nodes = form_list(form, "nodes")
    count_text = field(form, "count", required=False, max_length=10)
    ctl = request.app[CONTROLLER]
    if nodes and count_text:
        raise InvalidInput("either tick nodes or give a number of nodes, not both")
    if nodes:
        reserved = await ctl.reservations.reserve(
            user, nodes=nodes, start_date=start, duration_hours=duration
        )
    elif count_text:
        count = parse_int(count_text, "number of nodes", minimum=1, maximum=1000)
        reserved = await ctl.reservations.reserve(
            user, filter=_filters_from(form), count=count, start_date=start,
            duration_hours=duration,
        )
    else:
        raise InvalidInput("tick the nodes to reserve, or give a number of nodes")
    if local.note:
        await flash(request, local.note, "info")
    await flash(request, f"Reserved {', '.join(reserved)}. Now configure them.", "success")
    raise web.HTTPSeeOther("/configure?" + urlencode([("nodes", name) for name in reserved]))


# ---------------------------------------------------------------------------------------------
# configure


async def configure_page(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    ctl = request.app[CONTROLLER]
    reservations = await ctl.reservations.list_reservations(user)
    node_types = await ctl.inventory.node_types()
    environments = await ctl.inventory.environments()
    wanted = set(request.query.getall("nodes", []))
    groups = []
    by_type: dict[str, list] = defaultdict(list)
    for reservation in reservations:
        by_type[reservation.type].append(reservation)
    for type_name in sorted(by_type):
        members = sorted(by_type[type_name], key=lambda r: r.node_name)
        info = node_types.get(type_name)
        env_list = environments.get(type_name, [])
        specs = list(info.properties) if info else []
        groups.append(
            {
                "type": type_name,
                "reservations": members,
                "specs": [_spec_view(spec, env_list) for spec in specs],
                "environments": env_list,
                "selected": {
                    r.node_name
                    for r in members
                    if (r.node_name in wanted if wanted else r.status == Status.CONFIGURING)
                },
            }
        )
    return await render(request, "configure.html", {"groups": groups})


def _spec_view(spec, environments) -> dict[str, Any]:
    values = list(spec.values)
    if spec.name == "environment" and not values:
        values = [env.name for env in environments]
    return {
        "name": spec.name,
        "required": spec.required,
        "choices": values,
        "secret": spec.secret,
        "description": spec.description,
        "multiline": spec.name == "ssh_key",
    }


async def configure(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    form = await request.post()
    nodes = form_list(form, "nodes")
    if not nodes:
        raise InvalidInput("tick at least one node to configure")
    bin_name = field(form, "bin", required=False, max_length=64, label="bin")
    properties = {}
    for key in form:
        if key.startswith(PROPERTY_PREFIX):
            name = key[len(PROPERTY_PREFIX):]
            value = field(form, key, required=False, max_length=MAX_LONG, label=name or "property")
            # An empty field keeps what was set before (secret fields are never shown back).
            if name and value:
                properties[name] = value
    ctl = request.app[CONTROLLER]

    async def configure_one(node: str):
        return await ctl.reservations.configure(
            user, node, bin=bin_name or None, properties=properties
        )

    done = await act_on_each(nodes, configure_one)
    ready = [r.node_name for r in done if r.status != Status.CONFIGURING]
    waiting = [r.node_name for r in done if r.status == Status.CONFIGURING]
    if ready:
        await flash(request, f"Configured {', '.join(ready)}.", "success")
    if waiting:
        await flash(
            request, f"{', '.join(waiting)} still miss required properties.", "warning"
        )
    raise web.HTTPSeeOther("/manage" if not waiting else "/configure?" + urlencode(
        [("nodes", name) for name in waiting]))


# ---------------------------------------------------------------------------------------------
# manage


def _passwords(reservations, node_types) -> dict[str, str]:
    """The deployed system's password per node: the first secret property that is set."""
    passwords = {}
    for reservation in reservations:
        info = node_types.get(reservation.type)
        for spec in info.properties if info else ():
            value = reservation.properties.get(spec.name) if spec.secret else None
            if value:
                passwords[reservation.node_name] = value
                break
    return passwords


def _state_text(r, tz) -> str:
    if r.node_maintenance and not r.action_state and not r.ending:
        return "waiting: the node is in maintenance"
    if r.action_state:
        step = f" ({r.state_idx + 1}/{r.state_count})" if r.state_count else ""
        return f"{r.process}: {r.action_state}{step} · {r.progress}%"
    if r.status == Status.CONFIGURING:
        return "waiting for configuration"
    return f"starts {format_epoch(r.start_date, tz)}"


def _live_rows(reservations, node_types, tz) -> list[dict[str, Any]]:
    """What the manage page shows per node, drawn by the template at first and by manage.js
    from /manage/live afterwards, from the same fields."""
    passwords = _passwords(reservations, node_types)
    rows = []
    for r in sorted(reservations, key=lambda r: r.node_name):
        info = node_types.get(r.type)
        states = list(info.processes.get(r.process, ())) if info else []
        rows.append(
            {
                **reservation_json(r),
                "password": passwords.get(r.node_name, ""),
                "states": states,
                "state_text": _state_text(r, tz),
                "start_text": format_epoch(r.start_date, tz),
                "end_text": format_epoch(r.end_date, tz),
                "last_error": getattr(r, "last_error", ""),
            }
        )
    return rows


# What the history page says for each end_reason.
END_REASONS = {
    "window": "its window ended",
    "owner": "you ended it",
    "admin": "ended by an administrator",
    "moved": "moved to another node by an administrator",
    "account_deleted": "the account was deleted",
    "agent_removed": "its agent was removed",
    "node_removed": "the node was removed",
}
HISTORY_PAGE = 100


async def history_page(request: web.Request) -> web.StreamResponse:
    """The user's ended reservations, newest first; ?before=ID pages on."""
    user = await require_user(request)
    before = request.query.get("before")
    history = await request.app[CONTROLLER].reservations.history(
        user,
        before=parse_int(before, "before", minimum=1, maximum=2**62) if before else None,
        limit=HISTORY_PAGE,
    )
    return await render(
        request,
        "history.html",
        {
            "history": history,
            "reasons": END_REASONS,
            "older": history[-1].id if len(history) == HISTORY_PAGE else None,
        },
    )


async def manage_page(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    ctl = request.app[CONTROLLER]
    reservations = await ctl.reservations.live_states(user)
    node_types = await ctl.inventory.node_types()
    bins: dict[str, list] = defaultdict(list)
    for row in _live_rows(reservations, node_types, viewer_zone(request)):
        bins[row["bin"]].append(row)
    # What ended lately, with how: a reservation an administrator ended or a destroy that
    # ended lost is not a surprise found only on the history page.
    recent = [
        h for h in await ctl.reservations.history(user, limit=5)
        if h.ended_at >= int(time.time()) - RECENT_SECONDS
    ]
    return await render(
        request,
        "manage.html",
        {
            "bins": sorted(bins.items(), key=lambda item: (item[0] == "", item[0])),
            "count": len(reservations),
            "recent": recent,
            "reasons": END_REASONS,
        },
    )


async def manage_live(request: web.Request) -> web.StreamResponse:
    """What the manage page polls: read from the database only, never from an agent."""
    user = await require_user(request)
    ctl = request.app[CONTROLLER]
    reservations = await ctl.reservations.live_states(user)
    node_types = await ctl.inventory.node_types()
    return web.json_response(
        {
            "reservations": _live_rows(reservations, node_types, viewer_zone(request)),
            "now": int(time.time()),
        },
        headers={"Cache-Control": "no-store"},
    )


async def manage_action(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    form = await request.post()
    action = field(form, "action")
    if action not in USER_ACTIONS:
        raise InvalidInput(f"unknown action; choose one of {', '.join(USER_ACTIONS)}")
    nodes = form_list(form, "nodes")
    if not nodes:
        raise InvalidInput("tick at least one node")
    ctl = request.app[CONTROLLER]

    async def act_one(node: str):
        return await ctl.reservations.act(user, node, action)

    await act_on_each(nodes, act_one)
    verb = {"reboot": "Rebooting", "deploy": "Deploying", "destroy": "Destroying",
            "extend": "Extended"}[action]
    await flash(request, f"{verb} {', '.join(nodes)}.", "success")
    raise web.HTTPSeeOther("/manage")

