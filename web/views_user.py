"""The user's pages: reserve nodes, configure them, manage them while they run, and the history
of those that ended."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Collection
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from edgebed.controller.errors import Conflict, InvalidInput, InvalidProperties, ServiceError
from edgebed.controller.lifecycle import Status
from edgebed.controller.reservations import USER_ACTIONS, check_page_key, node_matches
from edgebed.controller.validation import START_SLACK_SECONDS
from edgebed.web import labels, paging, timeline
from edgebed.web.auth import require_user
from edgebed.web.formpage import FormError, about, redraw_on_error
from edgebed.web.forms import (
    MAX_LIST,
    MAX_LONG,
    field,
    form_list,
    format_epoch,
    local_datetime_value,
    parse_float,
    parse_int,
    parse_local_datetime,
    parse_number,
    read_local_datetime,
    zone,
    zone_or_utc,
)
from edgebed.web.fragments import reserve_rows
from edgebed.web.keys import CONTROLLER, ERROR_FIELD, FORM_TEMPLATE, SETTINGS
from edgebed.web.render import flash, render, viewer_zone
from edgebed.web.views_common import act_on_each, reservation_json

FILTER_PREFIX = "f."
PROPERTY_PREFIX = "prop."
TIMELINE_DAYS_DEFAULT = 7
# Node rows per page of the reserve page (?limit=, at most RESERVE_ROWS_MAX): the page and its
# timeline cost in proportion to its rows (scripts/bench/web_pages.py).
RESERVE_ROWS_DEFAULT = 100
RESERVE_ROWS_MAX = 500
# A property with more distinct values than this (ip, serial) is not offered as a filter menu.
MAX_FILTER_CHOICES = 40
# The manage page lists the reservations that ended this recently.
RECENT_SECONDS = 24 * 3600
# Reservations per page of the manage page (?limit=, at most MANAGE_ROWS_MAX); /manage/live
# reads the same page.
MANAGE_ROWS_DEFAULT = 100
MANAGE_ROWS_MAX = 500


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
        # One value everywhere filters nothing (the tables say it above their rows).
        if 2 <= len(values) <= MAX_FILTER_CHOICES and len(values) < holders[name]
    }


# Property columns per node type on the reserve page; the others are in the name's tooltip.
MAX_COLUMNS = 3
# Shown first when they vary: what people pick nodes by.
PREFERRED_COLUMNS = ("model", "ip")


def _compact_columns(members) -> tuple[list[str], list[tuple[str, str]]]:
    """(columns, common) for the nodes of one type: the properties (and agent) whose values
    differ between them, at most MAX_COLUMNS, preferred and low-variety first; and those every
    node has with one same value, said once above the table. Empty values count as absent."""
    values: dict[str, set[str]] = defaultdict(set)
    holders: dict[str, int] = defaultdict(int)
    for node in members:
        values["agent"].add(node.agent)
        holders["agent"] += 1
        for name, value in node.properties.items():
            if value != "":
                values[name].add(value)
                holders[name] += 1
    common = sorted(
        (name, next(iter(seen)))
        for name, seen in values.items()
        if len(seen) == 1 and holders[name] == len(members)
    )
    common_names = {name for name, _ in common}
    varying = sorted(
        (name for name in values if name not in common_names),
        key=lambda name: (
            PREFERRED_COLUMNS.index(name) if name in PREFERRED_COLUMNS else len(PREFERRED_COLUMNS),
            len(values[name]) > MAX_FILTER_CHOICES,
            len(values[name]),
            name,
        ),
    )
    return varying[:MAX_COLUMNS], common


def _by_type_and_name(nodes) -> tuple[list, list[tuple[str, str]]]:
    """(nodes by type then name, their (type, name) keys): the reserve page's rows in order."""
    ordered = sorted(nodes, key=lambda node: (node.type, node.name))
    return ordered, [(node.type, node.name) for node in ordered]


def _group_by_type(nodes) -> dict[str, list]:
    by_type: dict[str, list] = defaultdict(list)
    for node in nodes:
        by_type[node.type].append(node)
    return by_type


def _columns_by_type(nodes) -> dict[str, tuple[list[str], list[tuple[str, str]]]]:
    """{type: _compact_columns of its nodes} for the whole list (the page without a filter)."""
    return {type_name: _compact_columns(members) for type_name, members in _group_by_type(nodes).items()}


def _view_params(params, tz, now: int) -> tuple[int, int | None]:
    """(days, start) of the timeline from the query (or the posted form): `days` 1..60 (7 by
    default), `from` a local date or date and time in the viewer's zone (None: the default)."""
    days = parse_int(params.get("days") or str(TIMELINE_DAYS_DEFAULT), "days", minimum=1,
                     maximum=timeline.MAX_DAYS)
    start = None
    text = params.get("from")
    if isinstance(text, str) and text.strip():
        start = parse_local_datetime(text if "T" in text else text + "T00:00", tz, "from")
    return days, start


def _reserve_link(
    filters: dict[str, str], days: int, start: int | None, tz, rows: tuple[int, str | None] | None = None
) -> str:
    """A link to the reserve page with the filters and the view; `rows` (limit, cursor) keeps
    or names a page of rows (None: the first page with the default limit)."""
    query = [(FILTER_PREFIX + name, value) for name, value in filters.items()]
    query.append(("days", str(days)))
    if start is not None:
        query.append(("from", local_datetime_value(start, tz)))
    if rows is not None:
        limit, cursor = rows
        if limit != RESERVE_ROWS_DEFAULT:
            query.append(("limit", str(limit)))
        if cursor:
            query.append(("cursor", cursor))
    return "/reserve?" + urlencode(query)


def _rows_params(params) -> tuple[int, tuple[str, str] | None, str]:
    """(limit, cursor key, cursor text) of the reserve page's rows from the query or the posted
    form: `limit` 1..RESERVE_ROWS_MAX rows (RESERVE_ROWS_DEFAULT when absent), `cursor` the
    (type, name) of the last row of the page before. InvalidInput when either is malformed."""
    limit_text = params.get("limit")
    limit = paging.parse_limit(limit_text if isinstance(limit_text, str) else None,
                               default=RESERVE_ROWS_DEFAULT, maximum=RESERVE_ROWS_MAX)
    text = params.get("cursor")
    if not isinstance(text, str) or not text:
        return limit, None, ""
    node_type, name = paging.cursor_key(text, "reserve", (str, str), longest=64)
    return limit, (node_type, name), text


async def reserve_page(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    return await _draw_reserve(request, user, request.query, viewer_zone(request))


async def _draw_reserve(
    request: web.Request,
    user,
    params,
    tz,
    *,
    values: dict[str, Any] | None = None,
    form_error: FormError | None = None,
    status: int = 200,
) -> web.StreamResponse:
    """The reserve page: filters, the reservation form (with `values` when a refused one is
    drawn again) and one table per node type with each node's timeline over the view."""
    ctl = request.app[CONTROLLER]
    now = int(time.time())
    if form_error is None:
        days, from_start = _view_params(params, tz, now)
        limit, cursor, cursor_text = _rows_params(params)
    else:
        try:
            days, from_start = _view_params(params, tz, now)
        except InvalidInput:
            days, from_start = TIMELINE_DAYS_DEFAULT, None
        try:
            limit, cursor, cursor_text = _rows_params(params)
        except InvalidInput:
            limit, cursor, cursor_text = RESERVE_ROWS_DEFAULT, None, ""
    view = timeline.view_for(now, days, tz, from_start)
    filters = _filters_from(params)
    # The whole node list, and what is computed from it, read again only when it changed.
    node_list = await ctl.inventory.node_list()
    nodes = node_list.nodes
    everything = node_list.derived("reserve.sorted", _by_type_and_name)
    if filters:
        shown = [node for node in everything[0] if node_matches(node, filters)]
        keys = [(node.type, node.name) for node in shown]
    else:
        shown, keys = everything
    # One page of rows: the timeline is read for those only (issue #12).
    first, stop, following, previous = paging.page_of(keys, cursor, limit)
    visible = shown[first:stop]
    names = [node.name for node in visible]
    # The windows of the view (and the one open now, when the view is elsewhere in time); for
    # "free until" past them, each node's first start beyond, not every window of 60 days.
    loaded_until = max(view.end, now + 1)
    busy = await ctl.inventory.timeline(min(view.start, now), loaded_until, user, names) if names else {}
    lookahead_end = now + timeline.LOOKAHEAD_SECONDS
    next_starts = (
        await ctl.inventory.next_starts(loaded_until, lookahead_end, user, names)
        if names and loaded_until < lookahead_end else {}
    )
    text = timeline.TimeText(tz, now)
    prop_labels: dict[str, str] = {}
    # Columns and counts from every matching node of a type, so they stay put from page to page.
    by_type = _group_by_type(shown) if filters else node_list.derived("reserve.by_type", _group_by_type)
    on_page: dict[str, list] = defaultdict(list)
    for node in visible:
        on_page[node.type].append(node)
    values = values or {}
    checked = set(values.get("nodes", ()))
    tables = []
    all_columns = None if filters else node_list.derived("reserve.columns", _columns_by_type)
    for type_name in sorted(on_page):
        members = by_type[type_name]
        columns, common = all_columns[type_name] if all_columns is not None else _compact_columns(members)
        rows = []
        for node in on_page[type_name]:
            windows = [
                timeline.Window(b.start_date, b.end_date, b.mine, b.owner)
                for b in busy.get(node.name, ())
            ]
            kind, avail_text = timeline.availability(
                windows, now, tz, next_starts.get(node.name), text
            )
            properties = {"agent": node.agent, **node.properties}
            for k in properties:
                if k not in prop_labels:
                    prop_labels[k] = labels.prop(k)
            rows.append({
                "name": node.name,
                "connected": node.connected,
                "maintenance": node.maintenance,
                "retiring": node.retiring,
                "title": " · ".join(
                    f"{prop_labels[k]}: {v}" for k, v in properties.items() if v != ""
                ),
                "cells": [properties.get(column, "") for column in columns],
                "avail_kind": kind,
                "avail_text": avail_text,
                "bars": timeline.bars(windows, view, now, text),
            })
        tables.append({
            "type": type_name,
            "count": len(members),
            "on_page": len(on_page[type_name]),
            "columns": [labels.prop(column) for column in columns],
            "common": [(labels.prop(name), value) for name, value in common],
            # Built by web.fragments, not the template: a thousand rows (scripts/bench/web_pages.py).
            "rows_html": reserve_rows(rows, checked),
        })
    shift = 12 * 3600 if days == 1 else max(1, days // 2) * 86400
    rows_now = (limit, cursor_text or None)
    return await render(
        request,
        "reserve.html",
        {
            "tables": tables,
            "shown": len(shown),
            "first_row": first + 1,
            "last_row": stop,
            "limit": limit,
            "cursor": cursor_text,
            "next_page": (_reserve_link(filters, days, from_start, tz,
                                        (limit, paging.encode_cursor("reserve", following)))
                          if following is not None else None),
            "previous_page": (None if previous is False else _reserve_link(
                filters, days, from_start, tz,
                (limit, paging.encode_cursor("reserve", previous) if isinstance(previous, tuple) else None))),
            # "Previous" already goes to the first page from the second.
            "first_page": _reserve_link(filters, days, from_start, tz, (limit, None)) if first > limit else None,
            "default_limit": RESERVE_ROWS_DEFAULT,
            "filters": filters,
            "choices": node_list.derived("reserve.choices", _filter_choices),
            "axis": timeline.axis(view),
            "view": view,
            "now": now,
            "now_left": view.percent(now) if view.start <= now < view.end else None,
            "days": days,
            "from_value": local_datetime_value(from_start, tz) if from_start is not None else "",
            "zooms": [
                (label, zoom_days, _reserve_link(filters, zoom_days, from_start, tz, rows_now))
                for zoom_days, label in timeline.ZOOMS
            ],
            "earlier": _reserve_link(filters, days, view.start - shift, tz, rows_now),
            "later": _reserve_link(filters, days, view.start + shift, tz, rows_now),
            "today": _reserve_link(filters, days, None, tz, rows_now),
            "start_value": values.get("start") or local_datetime_value(now, tz).replace("T", " "),
            "duration_value": values.get("duration_hours") or "2",
            "count_value": values.get("count", ""),
            "form_tz": tz.key,
            # The same bounds the service checks (controller.validation, the settings).
            "min_duration": f"{request.app[SETTINGS].min_duration_hours:g}",
            "max_duration": f"{request.app[SETTINGS].max_duration_hours:g}",
            "total": len(nodes),
            "form_error": form_error,
        },
        status=status,
    )


def _reserve_field(error: InvalidInput | Conflict | Exception, mode: str) -> str:
    """Which field a refusal of the service is about, from what it says."""
    message = getattr(error, "message", "")
    if "start date" in message:
        return "reserve.start"
    if "duration" in message:
        return "reserve.duration_hours"
    return f"reserve.{mode}"


async def reserve(request: web.Request) -> web.StreamResponse:
    """The reserve form. The window's rules (controller.validation) are checked by the service,
    with the same messages as the JSON API; a local start time that happens twice that day is
    read as the first, and the next page says so."""
    user = await require_user(request)
    form = await request.post()
    # What was posted, kept to draw the form again when the reservation is refused.
    values = {
        "start": form.get("start") if isinstance(form.get("start"), str) else "",
        "duration_hours": form.get("duration_hours") if isinstance(form.get("duration_hours"), str) else "",
        "count": form.get("count") if isinstance(form.get("count"), str) else "",
        "nodes": [v for v in form.getall("nodes", []) if isinstance(v, str)][:MAX_LIST],
    }
    posted_tz = form.get("tz")
    page_tz = zone_or_utc(posted_tz if isinstance(posted_tz, str) else "")

    async def draw(form_error: FormError, status: int) -> web.StreamResponse:
        return await _draw_reserve(request, user, form, page_tz, values=values,
                                   form_error=form_error, status=status)

    redraw_on_error(request, draw, "reserve")
    tz = zone(field(form, "tz", required=False, max_length=64))
    with about(request, "reserve.start"):
        local = read_local_datetime(field(form, "start", label="start date"), tz, "start date")
    start = local.epoch
    now = int(time.time())
    if now - START_SLACK_SECONDS <= start < now:
        # "Now" picked on a minute-granular field: the window starts now, not in the past.
        start = now
    with about(request, "reserve.duration_hours"):
        # Its range is the service's to check, with the JSON API's message.
        duration = parse_number(field(form, "duration_hours", label="duration"), "duration (hours)")
    with about(request, "reserve.nodes"):
        nodes = form_list(form, "nodes")
    count_text = field(form, "count", required=False, max_length=10)
    ctl = request.app[CONTROLLER]
    if nodes and count_text:
        with about(request, "reserve.count"):
            raise InvalidInput("either tick nodes or give a number of nodes, not both")
    mode = "nodes" if nodes else "count"
    try:
        if nodes:
            reserved = await ctl.reservations.reserve(
                user, nodes=nodes, start_date=start, duration_hours=duration
            )
        elif count_text:
            with about(request, "reserve.count"):
                count = parse_int(count_text, "number of nodes", minimum=1, maximum=1000)
            reserved = await ctl.reservations.reserve(
                user, filter=_filters_from(form), count=count, start_date=start,
                duration_hours=duration,
            )
        else:
            with about(request, "reserve.nodes"):
                raise InvalidInput("tick the nodes to reserve, or give a number of nodes")
    except ServiceError as error:
        request.setdefault(ERROR_FIELD, _reserve_field(error, mode))
        raise
    if local.note:
        await flash(request, local.note, "info")
    await flash(request, f"Reserved {', '.join(reserved)}. Now configure them.", "success")
    raise web.HTTPSeeOther("/configure?" + urlencode([("nodes", name) for name in reserved]))


# ---------------------------------------------------------------------------------------------
# configure


async def _configure_context(
    request: web.Request,
    user,
    wanted: set[str],
    *,
    errors: dict[str, dict[str, str]] | None = None,
    entered: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The configure page: one form per node type. `errors` (node name -> property -> what is
    wrong) and `entered` (what the refused form held, secrets left out) draw a refused form
    again with each message beside its field."""
    ctl = request.app[CONTROLLER]
    reservations = await ctl.reservations.list_reservations(user)
    node_types = await ctl.inventory.node_types()
    environments = await ctl.inventory.environments()
    groups = []
    by_type: dict[str, list] = defaultdict(list)
    for reservation in reservations:
        by_type[reservation.type].append(reservation)
    for type_name in sorted(by_type):
        members = sorted(by_type[type_name], key=lambda r: r.node_name)
        info = node_types.get(type_name)
        env_list = environments.get(type_name, [])
        specs = list(info.properties) if info else []
        field_errors: dict[str, str] = {}
        for r in members:
            field_errors.update((errors or {}).get(r.node_name, {}))
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
                "errors": field_errors,
                # Only the refused form is filled in again.
                "entered": (entered or {}) if field_errors else {},
            }
        )
    return {"groups": groups}


async def configure_page(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    wanted = set(request.query.getall("nodes", []))
    return await render(request, "configure.html", await _configure_context(request, user, wanted))


def _spec_view(spec, environments) -> dict[str, Any]:
    values = list(spec.values)
    if spec.name == "environment" and not values:
        values = [env.name for env in environments]
    return {
        "name": spec.name,
        # The agent's words, cut so that one cannot fill the page.
        "label": (spec.label or spec.name)[:100],
        "required": spec.required,
        "choices": values,
        "secret": spec.secret,
        "description": spec.description,
        "help": spec.help[:300],
        "multiline": spec.name == "ssh_key",
    }


def _missing_text(done) -> str:
    """'rpi-001, rpi-002 still miss environment; rpi-003 still misses ...': each configuring
    node with the required properties it lacks."""
    by_missing: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for r in done:
        by_missing[tuple(r.missing)].append(r.node_name)
    parts = []
    for missing, names in by_missing.items():
        verb = "misses" if len(names) == 1 else "miss"
        what = ", ".join(missing) if missing else "required properties"
        parts.append(f"{', '.join(names)} still {verb} {what}")
    return "; ".join(parts) + "."


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
    refused: dict[str, dict[str, str]] = {}

    async def configure_one(node: str):
        try:
            return await ctl.reservations.configure(
                user, node, bin=bin_name or None, properties=properties
            )
        except InvalidProperties as error:
            refused[node] = error.fields
            raise

    try:
        done = await act_on_each(nodes, configure_one)
    except InvalidInput:
        if refused:
            # Drawn again by the error middleware, each message beside its field; what was
            # typed stays, but a secret is never sent back.
            node_types = await ctl.inventory.node_types()
            secret = {spec.name for info in node_types.values() for spec in info.properties if spec.secret}
            entered = {name: value for name, value in properties.items() if name not in secret}
            if bin_name:
                entered["bin"] = bin_name
            context = await _configure_context(request, user, set(nodes), errors=refused, entered=entered)
            request[FORM_TEMPLATE] = ("configure.html", context)
        raise
    ready = [r.node_name for r in done if r.status != Status.CONFIGURING]
    waiting = [r for r in done if r.status == Status.CONFIGURING]
    if ready:
        await flash(request, f"Configured {', '.join(ready)}.", "success")
    if waiting:
        await flash(request, _missing_text(waiting), "warning")
    raise web.HTTPSeeOther("/manage" if not waiting else "/configure?" + urlencode(
        [("nodes", r.node_name) for r in waiting]))


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
        return f"{labels.process(r.process)}: {labels.state(r.action_state)}{step} · {r.progress}%"
    if r.status == Status.CONFIGURING:
        return "waiting for configuration"
    return f"starts {format_epoch(r.start_date, tz)}"


def _allowed_actions(r, now: int) -> list[str]:
    """The actions that can succeed on this row now (lifecycle.on_user_action decides; this
    mirrors its refusals so the page offers no button that can only fail)."""
    allowed = ["extend", "destroy"]
    idle = not r.pending and r.status != Status.IN_PROGRESS
    if r.start_date <= now < r.end_date and idle:
        if r.status != Status.CONFIGURING:
            allowed.append("deploy")
        if r.process:
            allowed.append("reboot")
    return allowed


def _live_rows(reservations, node_types, tz) -> list[dict[str, Any]]:
    """What the manage page shows per node, drawn by the template at first and by manage.js
    from /manage/live afterwards, from the same fields."""
    passwords = _passwords(reservations, node_types)
    now = int(time.time())
    rows = []
    # A page of a hundred rows has a few processes and a few windows: each labelled once.
    state_labels: dict[tuple[str, str], list[str]] = {}
    times: dict[int, str] = {}

    def when(epoch: int) -> str:
        text = times.get(epoch)
        if text is None:
            text = times[epoch] = format_epoch(epoch, tz)
        return text

    for r in sorted(reservations, key=lambda r: r.node_name):
        process = (r.type, r.process)
        if process not in state_labels:
            info = node_types.get(r.type)
            states = list(info.processes.get(r.process, ())) if info else []
            state_labels[process] = [labels.state(state) for state in states]
        rows.append(
            {
                **reservation_json(r),
                "password": passwords.get(r.node_name, ""),
                # Shared by the rows of one process: the JSON and the template only read it.
                "states": state_labels[process],
                "status_text": labels.status(r.status),
                "state_text": _state_text(r, tz),
                "start_text": when(r.start_date),
                "end_text": when(r.end_date),
                "last_error": getattr(r, "last_error", ""),
                "actions": _allowed_actions(r, now),
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


def _manage_rows(params) -> tuple[int, tuple | None, str]:
    """(limit, cursor key, cursor text) of the manage page's rows from the query or the posted
    form: `limit` 1..MANAGE_ROWS_MAX (MANAGE_ROWS_DEFAULT when absent), `cursor` what the page's
    "next" link gave. InvalidInput when either is malformed."""
    limit_text = params.get("limit")
    limit = paging.parse_limit(limit_text if isinstance(limit_text, str) else None,
                               default=MANAGE_ROWS_DEFAULT, maximum=MANAGE_ROWS_MAX)
    text = params.get("cursor")
    if not isinstance(text, str) or not text:
        return limit, None, ""
    return limit, check_page_key("bin", paging.decode_cursor(text, "manage")), text


def _manage_link(limit: int, cursor: str | None) -> str:
    query = []
    if limit != MANAGE_ROWS_DEFAULT:
        query.append(("limit", str(limit)))
    if cursor:
        query.append(("cursor", cursor))
    return "/manage" + ("?" + urlencode(query) if query else "")


async def manage_page(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    return await _draw_manage(request, user, params=request.query)


async def _draw_manage(
    request: web.Request,
    user,
    *,
    ticked: Collection[str] = (),
    node_errors: dict[str, str] | None = None,
    hours_value: str = "",
    form_error: FormError | None = None,
    status: int = 200,
    params=None,
) -> web.StreamResponse:
    """The manage page: one page of the user's reservations (by bin, those without one last,
    then node; `params` holds its limit and cursor); after a refused action, with the ticked
    nodes still ticked and each node's refusal beside its row."""
    ctl = request.app[CONTROLLER]
    try:
        limit, cursor, cursor_text = _manage_rows(params or {})
    except InvalidInput:
        if form_error is None:
            raise
        limit, cursor, cursor_text = MANAGE_ROWS_DEFAULT, None, ""
    page = await ctl.reservations.list_page(user, order="bin", after=cursor, limit=limit)
    total = await ctl.reservations.count(user)
    node_types = await ctl.inventory.node_types()
    bins: dict[str, list] = defaultdict(list)
    for row in _live_rows(page.reservations, node_types, viewer_zone(request)):
        bins[row["bin"]].append(row)
    cap = ctl.settings.extend_cap_hours
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
            "count": total,
            "on_page": len(page.reservations),
            "limit": limit,
            "cursor": cursor_text,
            "default_limit": MANAGE_ROWS_DEFAULT,
            "next_page": (_manage_link(limit, paging.encode_cursor("manage", page.next_key))
                          if page.next_key is not None else None),
            "first_page": _manage_link(limit, None) if cursor is not None else None,
            "ticked": set(ticked),
            "node_errors": node_errors or {},
            "hours_value": hours_value,
            "extend_cap": cap,
            "form_error": form_error,
            "recent": recent,
            "reasons": END_REASONS,
        },
        status=status,
    )


async def manage_live(request: web.Request) -> web.StreamResponse:
    """What the manage page polls: read from the database only, never from an agent."""
    user = await require_user(request)
    ctl = request.app[CONTROLLER]
    # The page's rows: the same limit and cursor as the page polling (manage.js passes its own
    # query on).
    limit, cursor, _ = _manage_rows(request.query)
    reservations = (await ctl.reservations.list_page(user, order="bin", after=cursor, limit=limit)).reservations
    node_types = await ctl.inventory.node_types()
    tz = viewer_zone(request)
    now = int(time.time())
    return web.json_response(
        {
            "reservations": _live_rows(reservations, node_types, tz),
            "now": now,
            # The page's clock, 24-hour in the viewer's zone like every time the pages show.
            "now_text": datetime.fromtimestamp(now, tz).strftime("%H:%M:%S"),
        },
        headers={"Cache-Control": "no-store"},
    )


async def manage_action(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    form = await request.post()
    ticked = [v for v in form.getall("nodes", []) if isinstance(v, str)][:MAX_LIST]
    posted_hours = form.get("hours")
    hours_text = posted_hours if isinstance(posted_hours, str) else ""
    node_errors: dict[str, str] = {}

    async def draw(form_error: FormError, status: int) -> web.StreamResponse:
        return await _draw_manage(request, user, ticked=ticked, node_errors=node_errors,
                                  hours_value=hours_text, form_error=form_error, status=status,
                                  params=form)

    redraw_on_error(request, draw, "manage")
    action = field(form, "action")
    if action not in USER_ACTIONS:
        raise InvalidInput(f"unknown action; choose one of {', '.join(USER_ACTIONS)}")
    nodes = form_list(form, "nodes")
    if not nodes:
        raise InvalidInput("tick at least one node")
    ctl = request.app[CONTROLLER]
    hours = None
    if action == "extend" and hours_text.strip():
        with about(request, "manage.hours"):
            hours = parse_float(hours_text, "hours", minimum=0.25,
                                maximum=ctl.settings.extend_cap_hours)

    async def act_one(node: str):
        return await ctl.reservations.act(user, node, action, hours=hours)

    # Every node is tried (nodes of different agents do not wait on each other); the refusals
    # are shown beside their rows, the others are done.
    outcomes = await asyncio.gather(*(act_one(node) for node in nodes), return_exceptions=True)
    done = []
    first: ServiceError | None = None
    for node, outcome in zip(nodes, outcomes, strict=True):
        if isinstance(outcome, ServiceError):
            node_errors[node] = outcome.message
            first = first or outcome
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            done.append(outcome)
    tz = viewer_zone(request)
    if action == "extend":
        for end, names in _by_end(done):
            await flash(request, f"Extended {', '.join(names)} until {format_epoch(end, tz)}.", "success")
    elif done:
        verb = {"reboot": "Rebooting", "deploy": "Deploying", "destroy": "Destroying"}[action]
        await flash(request, f"{verb} {', '.join(r.node_name for r in done)}.", "success")
    if first is not None:
        failed = ", ".join(node_errors)
        raise type(first)(
            f"{action} was refused for {failed}: see beside {'each node' if len(node_errors) > 1 else 'the node'}"
            + (f" ({len(done)} done)" if done else "")
        )
    # Back to the page of rows the form was on.
    try:
        limit, _, cursor_text = _manage_rows(form)
    except InvalidInput:
        limit, cursor_text = MANAGE_ROWS_DEFAULT, ""
    raise web.HTTPSeeOther(_manage_link(limit, cursor_text))


def _by_end(reservations) -> list[tuple[int, list[str]]]:
    by_end: dict[int, list[str]] = defaultdict(list)
    for r in reservations:
        by_end[r.end_date].append(r.node_name)
    return sorted(by_end.items())
