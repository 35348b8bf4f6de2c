"""Administrators' pages: users, agents, nodes (with maintenance), environments, and everyone's
reservations (current and ended)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from edgebed.controller.agents import AGENT_TYPES
from edgebed.controller.domain import Environment
from edgebed.controller.errors import InvalidInput, ServiceError
from edgebed.controller.reservations import ADMIN_STATUSES, HISTORY_LIMIT, check_page_key
from edgebed.tls import MAX_PEM
from edgebed.web import charts, paging
from edgebed.web.auth import require_admin, safe_next
from edgebed.web.formpage import FormError, about, redraw_on_error
from edgebed.web.forms import MAX_LONG, MAX_PASSWORD, clean_text, field, format_epoch, parse_int
from edgebed.web.keys import CONTROLLER, ERROR_FIELD
from edgebed.web.paging import USER_KEY_SHAPE, user_key
from edgebed.web.render import flash, render, viewer_zone

# Rows per page of the users and agents pages (?limit=, at most the maximum).
USER_ROWS_DEFAULT = 100
USER_ROWS_MAX = 500
AGENT_ROWS_DEFAULT = 100
AGENT_ROWS_MAX = 500

USER_OPS = ("authorize", "revoke", "promote", "demote", "delete", "confirm_email")


def parse_properties(text: str, label: str = "properties") -> dict[str, str]:
    """'name=value' lines (blank lines ignored) -> dict."""
    properties: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidInput(f"{label}, line {number}: write name=value")
        if len(properties) >= 100:
            raise InvalidInput(f"{label}: at most 100 properties")
        properties[name] = value.strip()
    return properties


# ---------------------------------------------------------------------------------------------
# users


async def users_page(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    return await _users_page(request, admin)


async def _users_page(
    request: web.Request,
    admin,
    *,
    values: dict[str, Any] | None = None,
    form_error: FormError | None = None,
    status: int = 200,
) -> web.Response:
    # The store's order: accounts awaiting approval first (what an administrator comes for),
    # then oldest first; sorted again here, since a PostgreSQL collation may order the emails
    # of one second otherwise than the cursor's comparison does.
    users = sorted(await request.app[CONTROLLER].accounts.list_users(admin), key=user_key)
    page = paging.window(
        _paging_query(request), "/admin/users", "admin-users", [user_key(u) for u in users], USER_KEY_SHAPE,
        default=USER_ROWS_DEFAULT, maximum=USER_ROWS_MAX,
    )
    return await render(
        request,
        "admin/users.html",
        {"users": users[page.first:page.stop], "page": page,
         "pending": sum(not u.is_authorized for u in users), "values": values or {}, "form_error": form_error},
        status=status,
    )


def _paging_query(request: web.Request):
    """Where a page's `limit` and `cursor` come from: the query of a GET; a page drawn again
    after a refused form (a POST) shows its first page."""
    return request.query if request.method == "GET" else {}


def _redraw(request: web.Request, page, admin, form: str, values: dict[str, Any]) -> None:
    """Draw `page` again with the posted values and the message when the form is refused."""

    async def draw(form_error: FormError, status: int) -> web.StreamResponse:
        return await page(request, admin, values=values, form_error=form_error, status=status)

    redraw_on_error(request, draw, form)


def _posted(form, *names: str) -> dict[str, str]:
    """The posted text fields, to fill the form again (never a password or token)."""
    return {name: value for name in names if isinstance(value := form.get(name), str)}


async def user_action(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    form = await request.post()
    email = field(form, "email")
    # A refusal is shown beside the account's row.
    _redraw(request, _users_page, admin, f"user.{email}", {})
    op = field(form, "op", label="operation")
    accounts = request.app[CONTROLLER].accounts
    if op == "confirm_email":
        await accounts.update_flags(admin, email, confirmed_email=True)
    elif op == "authorize":
        await accounts.set_authorized(admin, email, True)
    elif op == "revoke":
        await accounts.set_authorized(admin, email, False)
    elif op == "promote":
        await accounts.set_admin(admin, email, True)
    elif op == "demote":
        await accounts.set_admin(admin, email, False)
    elif op == "delete":
        await accounts.delete_user(admin, email)
    else:
        raise InvalidInput(f"unknown operation; choose one of {', '.join(USER_OPS)}")
    done = {"authorize": "authorized", "revoke": "revoked", "promote": "promoted",
            "demote": "demoted", "delete": "deleted", "confirm_email": "has a confirmed address"}[op]
    await flash(request, f"{email} {done}.", "success")
    raise web.HTTPSeeOther("/admin/users")


async def create_user(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    form = await request.post()
    values: dict[str, Any] = {
        **_posted(form, "email"),
        "admin": form.get("admin") == "on",
        "authorized": form.get("authorized") == "on",
        "confirmed": form.get("confirmed") == "on",
    }
    _redraw(request, _users_page, admin, "create", values)
    with about(request, "create.email"):
        email = field(form, "email")
    with about(request, "create.password"):
        password = field(form, "password", max_length=MAX_PASSWORD, strip=False)
    accounts = request.app[CONTROLLER].accounts
    try:
        user = await accounts.add_user(
            admin, email, password, admin=values["admin"], authorized=values["authorized"]
        )
    except ServiceError as error:
        request[ERROR_FIELD] = "create.password" if "password" in error.message else "create.email"
        raise
    if values["confirmed"]:
        user = await accounts.update_flags(admin, user.email, confirmed_email=True)
    await flash(request, f"{user.email} created.", "success")
    raise web.HTTPSeeOther("/admin/users")


# ---------------------------------------------------------------------------------------------
# agents


async def agents_page(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    return await _agents_page(request, admin)


async def _agents_page(
    request: web.Request,
    admin,
    *,
    values: dict[str, Any] | None = None,
    form_error: FormError | None = None,
    status: int = 200,
) -> web.Response:
    agents = sorted(await request.app[CONTROLLER].agents.list_agents(admin), key=lambda a: a.name)
    page = paging.window(
        _paging_query(request), "/admin/agents", "admin-agents", [(a.name,) for a in agents], (str,),
        default=AGENT_ROWS_DEFAULT, maximum=AGENT_ROWS_MAX,
    )
    return await render(
        request,
        "admin/agents.html",
        {"agents": agents[page.first:page.stop], "page": page, "types": AGENT_TYPES, "values": values or {},
         "form_error": form_error},
        status=status,
    )


def _agent_field(message: str) -> str:
    """The add-agent field a refusal is about, from what it says."""
    lowered = message.lower()
    for key, words in (("ca_pem", ("pem", "certificate", "ca ", "tls")), ("token", ("token",)),
                       ("port", ("port",)), ("ip", ("address", " ip", "host")),
                       ("name", ("name", "exists", "already"))):
        if any(word in lowered for word in words):
            return f"agent.{key}"
    return "agent"


async def add_agent(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    form = await request.post()
    _redraw(request, _agents_page, admin, "agent", _posted(form, "name", "type", "ip", "port", "ca_pem"))
    with about(request, "agent.name"):
        name = field(form, "name", max_length=64)
    with about(request, "agent.type"):
        agent_type = field(form, "type")
        if agent_type not in AGENT_TYPES:
            raise InvalidInput(f"type must be one of {', '.join(AGENT_TYPES)}")
    with about(request, "agent.ip"):
        ip = field(form, "ip", max_length=255, label="address")
    with about(request, "agent.port"):
        port = parse_int(field(form, "port"), "port", minimum=1, maximum=65535)
    with about(request, "agent.token"):
        token = field(form, "token", max_length=1024)
    with about(request, "agent.ca_pem"):
        ca_pem = field(form, "ca_pem", required=False, max_length=MAX_PEM, label="CA certificate")
    try:
        agent = await request.app[CONTROLLER].agents.add_agent(
            admin, name, agent_type, ip, port, token, ca_pem
        )
    except ServiceError as error:
        request.setdefault(ERROR_FIELD, _agent_field(error.message))
        raise
    if agent.status == "connected":
        await flash(request, f"Agent {agent.name} added and connected.", "success")
    else:
        await flash(
            request, f"Agent {agent.name} added but does not answer: {agent.last_error}", "warning"
        )
    raise web.HTTPSeeOther("/admin/agents")


async def agent_action(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    form = await request.post()
    name = field(form, "name", max_length=64)
    _redraw(request, _agents_page, admin, f"agent-row.{name}", {})
    op = field(form, "op", label="operation")
    agents = request.app[CONTROLLER].agents
    if op == "reconnect":
        agent = await agents.reconnect(admin, name)
        if agent.status == "connected":
            await flash(request, f"Agent {name} is connected.", "success")
        else:
            await flash(request, f"Agent {name} still does not answer: {agent.last_error}", "warning")
    elif op == "delete":
        removal = await request.app[CONTROLLER].maintenance.delete_agent(
            admin, name, force=form.get("force") == "on"
        )
        await _flash_removal(request, "Agent", removal)
    else:
        raise InvalidInput("unknown operation; choose reconnect or delete")
    raise web.HTTPSeeOther("/admin/agents")


async def _flash_removal(request: web.Request, what: str, removal) -> None:
    if removal.removed:
        await flash(request, f"{what} {removal.name} deleted.", "success")
        return
    waiting = ", ".join(f"{node} ({owner})" for node, owner in removal.waiting_for)
    await flash(
        request, f"{what} {removal.name} is removed once these reservations are destroyed: {waiting}.", "warning"
    )


# ---------------------------------------------------------------------------------------------
# nodes

# Node rows per page of the nodes page (?limit=, at most the maximum).
NODE_ROWS_DEFAULT = 100
NODE_ROWS_MAX = 500


async def nodes_page(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    return await _nodes_page(request, admin, refresh=request.query.get("refresh") == "1")


async def _nodes_page(
    request: web.Request,
    admin,
    *,
    refresh: bool = False,
    values: dict[str, Any] | None = None,
    form_error: FormError | None = None,
    status: int = 200,
) -> web.Response:
    ctl = request.app[CONTROLLER]
    nodes = sorted(await ctl.inventory.list_nodes(refresh=refresh), key=lambda n: (n.agent, n.name))
    agents = await ctl.agents.list_agents(admin)
    # One page of node rows, by agent then name; the agents' sections around them.
    page = paging.window(
        _paging_query(request), "/admin/nodes", "admin-nodes", [(n.agent, n.name) for n in nodes], (str, str),
        default=NODE_ROWS_DEFAULT, maximum=NODE_ROWS_MAX,
    )
    counts: dict[str, int] = defaultdict(int)
    for node in nodes:
        counts[node.agent] += 1
    by_agent: dict[str, list] = defaultdict(list)
    for node in nodes[page.first:page.stop]:
        by_agent[node.agent].append(node)
    groups = [
        {"agent": agent, "nodes": by_agent.get(agent.name, []), "count": counts[agent.name]}
        for agent in agents
        # An agent without nodes is shown on the first page.
        if agent.name in by_agent or (not counts[agent.name] and page.from_start)
    ]
    maintenance = await ctl.maintenance.list_maintenance(admin)
    health = await ctl.health.node_health(admin)
    return await render(
        request,
        "admin/nodes.html",
        {
            "groups": groups,
            "agents": agents,
            "page": page,
            "maintenance": {m.node_name: m for m in maintenance},
            "health": health,
            # In maintenance but listed by no agent: still never handed out if it comes back.
            "unlisted": [m for m in maintenance if not m.agent],
            "values": values or {},
            "form_error": form_error,
        },
        status=status,
    )


async def node_action(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    form = await request.post()
    op = field(form, "op", label="operation")
    inventory = request.app[CONTROLLER].inventory
    if op == "add":
        _redraw(request, _nodes_page, admin, "add", _posted(form, "agent", "name", "properties"))
        agent = field(form, "agent", max_length=64)
        with about(request, "add.name"):
            name = field(form, "name", max_length=64)
        with about(request, "add.properties"):
            properties = parse_properties(field(form, "properties", required=False, max_length=MAX_LONG))
        try:
            await inventory.add_node(admin, agent, name, properties)
        except ServiceError as error:
            request.setdefault(ERROR_FIELD, "add.properties" if "propert" in error.message else "add.name")
            raise
        await flash(request, f"Node {name} added to {agent}.", "success")
    elif op == "rename":
        name = field(form, "name", max_length=64)
        # Beside the node's own rename field, with what was typed.
        _redraw(request, _nodes_page, admin, f"rename.{name}", {f"rename.{name}": form.get("new_name", "")})
        with about(request, f"rename.{name}"):
            new_name = field(form, "new_name", max_length=64, label="new name")
            await inventory.rename_node(admin, name, new_name)
        await flash(request, f"Node {name} is now {new_name}.", "success")
    elif op == "delete":
        name = field(form, "name", max_length=64)
        _redraw(request, _nodes_page, admin, f"rename.{name}", {})
        removal = await request.app[CONTROLLER].maintenance.remove_node(
            admin, name, force=form.get("force") == "on"
        )
        await _flash_removal(request, "Node", removal)
    elif op == "maintenance":
        name = field(form, "name", max_length=64)
        reason = field(form, "reason", max_length=500)
        await request.app[CONTROLLER].maintenance.enter(admin, name, reason)
        await flash(request, f"Node {name} is in maintenance: no new reservation gets it.", "success")
    elif op == "release":
        name = field(form, "name", max_length=64)
        await request.app[CONTROLLER].maintenance.release(admin, name)
        await flash(request, f"Node {name} released from maintenance.", "success")
    else:
        raise InvalidInput("unknown operation; choose add, rename, delete, maintenance or release")
    raise web.HTTPSeeOther("/admin/nodes")


# ---------------------------------------------------------------------------------------------
# environments


async def environments_page(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    return await _environments_page(request, admin)


async def _environments_page(
    request: web.Request,
    admin,
    *,
    values: dict[str, Any] | None = None,
    form_error: FormError | None = None,
    status: int = 200,
) -> web.Response:
    ctl = request.app[CONTROLLER]
    environments = await ctl.inventory.environments()
    agents = await ctl.agents.list_agents(admin)
    return await render(
        request,
        "admin/environments.html",
        {"environments": sorted(environments.items()), "agents": agents, "values": values or {},
         "form_error": form_error},
        status=status,
    )


async def environment_action(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    form = await request.post()
    op = field(form, "op", label="operation")
    form_name = "env" if op == "put" else "env-row"
    _redraw(request, _environments_page, admin, form_name, _posted(
        form, "agent", "name", "description", "image", "size_bytes", "default_user", "properties"))
    agent = field(form, "agent", max_length=64)
    with about(request, "env.name"):
        name = field(form, "name", max_length=64)
    inventory = request.app[CONTROLLER].inventory
    if op == "put":
        with about(request, "env.description"):
            description = field(form, "description", required=False, max_length=1024)
        with about(request, "env.image"):
            image = field(form, "image", max_length=1024)
        with about(request, "env.size_bytes"):
            size_bytes = parse_int(
                field(form, "size_bytes", label="size"), "size (bytes)", minimum=0, maximum=2**53
            )
        with about(request, "env.default_user"):
            default_user = field(form, "default_user", required=False, max_length=64,
                                 label="default user")
        with about(request, "env.properties"):
            properties = parse_properties(
                field(form, "properties", required=False, max_length=MAX_LONG)
            )
        environment = Environment(
            name=name, description=description, image=image, size_bytes=size_bytes,
            default_user=default_user, properties=properties,
        )
        await inventory.put_environment(admin, agent, environment)
        await flash(request, f"Environment {name} saved on {agent}.", "success")
    elif op == "delete":
        await inventory.remove_environment(admin, agent, name)
        await flash(request, f"Environment {name} removed from {agent}.", "success")
    else:
        raise InvalidInput("unknown operation; choose put or delete")
    raise web.HTTPSeeOther("/admin/environments")


# ---------------------------------------------------------------------------------------------
# overview

# Days of utilisation the overview draws: four weeks back and the coming week.
PAST_DAYS = 28
COMING_DAYS = 7
# Pages of ended reservations read for the chart at most (HISTORY_LIMIT each).
MAX_HISTORY_PAGES = 50
NODE_STATE_COLOURS = (
    ("free", "Free", "#2e7d32"),
    ("reserved", "Reserved, idle", "#8d9bb0"),
    ("in_progress", "Deploying or wiping", "#1f5f8b"),
    ("offline", "Agent offline", "#b3261e"),
)


async def overview_page(request: web.Request) -> web.StreamResponse:
    """The administrators' overview: nodes by state now, agents by status, and the share of
    node-hours reserved per day over the past four weeks and the coming one."""
    admin = await require_admin(request)
    ctl = request.app[CONTROLLER]
    tz = viewer_zone(request)
    now = int(time.time())
    nodes = await ctl.inventory.list_nodes()
    agents = await ctl.agents.list_agents(admin)
    controllers, leases = await ctl.agents.drivers(admin, ctl.settings.lease_seconds)
    open_now = await ctl.inventory.open_windows(admin, now)
    counts = dict.fromkeys((key for key, _, _ in NODE_STATE_COLOURS), 0)
    for node in nodes:
        if not node.connected:
            counts["offline"] += 1
        elif node.name not in open_now:
            counts["free"] += 1
        elif open_now[node.name] == "in_progress":
            counts["in_progress"] += 1
        else:
            counts["reserved"] += 1
    node_chart = charts.stacked_bar(
        [charts.Part(label, counts[key], colour) for key, label, colour in NODE_STATE_COLOURS],
        title="nodes by state now",
    )
    connected = sum(a.status == "connected" for a in agents)
    agent_chart = charts.stacked_bar(
        [charts.Part("Connected", connected, "#2e7d32"),
         charts.Part("Disconnected", len(agents) - connected, "#b3261e")],
        title="agents by status",
    )
    first_day = now - PAST_DAYS * 86400
    busy = await ctl.inventory.timeline(first_day, now + (COMING_DAYS + 1) * 86400, admin)
    # The windows still in the schedule, and the ended ones from the history (newest first,
    # paged until they ended before the chart starts).
    windows = [(b.start_date, b.end_date) for windows in busy.values() for b in windows]
    before = None
    for _ in range(MAX_HISTORY_PAGES):
        page = await ctl.reservations.admin_history(admin, before=before, limit=HISTORY_LIMIT)
        windows += [(h.start_date, h.end_date) for h in page if h.end_date > first_day]
        if len(page) < HISTORY_LIMIT or page[-1].ended_at < first_day:
            break
        before = page[-1].id
    days = charts.daily_utilisation(windows, len(nodes), first_day, PAST_DAYS + COMING_DAYS + 1, tz)
    utilisation = charts.utilisation_chart(days, now, tz, title="share of node-hours reserved per day")
    past = [share for midnight, share in days if midnight <= now]
    return await render(
        request,
        "admin/overview.html",
        {
            "node_chart": node_chart,
            "agent_chart": agent_chart,
            "utilisation": utilisation,
            "node_total": len(nodes),
            "agents": agents,
            "controllers": controllers,
            "driven": {
                lease.holder: [a for a, held in leases.items() if held.held and held.holder == lease.holder]
                for lease in leases.values() if lease.held
            },
            "leases": {agent: lease for agent, lease in leases.items() if lease.held},
            "this_controller": ctl.leases.instance,
            "lease_seconds": ctl.settings.lease_seconds,
            "average": sum(past) / len(past) if past else 0.0,
            "past_days": PAST_DAYS,
            "coming_days": COMING_DAYS,
            "history_kept": True,
        },
    )


# ---------------------------------------------------------------------------------------------
# everyone's reservations

RESERVATION_FILTERS = ("owner", "node", "agent", "status")
# Current reservations per page of the reservations page (?limit=, at most the maximum).
RESERVATION_ROWS_DEFAULT = 100
RESERVATION_ROWS_MAX = 500
HISTORY_PAGE = 100


async def reservations_page(request: web.Request) -> web.StreamResponse:
    """Current reservations (filtered by owner, node, agent, status) with end and move, or
    with ?state=ended everyone's history (filtered by owner and node, paged by ?before=ID)."""
    admin = await require_admin(request)
    ctl = request.app[CONTROLLER]
    tz = viewer_zone(request)
    filters = {
        key: clean_text(request.query[key], key, max_length=254)
        for key in RESERVATION_FILTERS
        if request.query.get(key, "").strip()
    }
    ended = request.query.get("state") == "ended"
    context = {"filters": filters, "statuses": ADMIN_STATUSES, "ended": ended}
    if ended:
        before = request.query.get("before")
        history = await ctl.reservations.admin_history(
            admin,
            owner=filters.get("owner"),
            node=filters.get("node"),
            before=parse_int(before, "before", minimum=1, maximum=2**62) if before else None,
            limit=HISTORY_PAGE,
        )
        context |= {"history": history, "older": history[-1].id if len(history) == HISTORY_PAGE else None}
        return await render(request, "admin/reservations.html", context)
    # One page of rows, by start date then node and owner (as the API's admin list).
    limit_text = request.query.get("limit")
    limit = paging.parse_limit(limit_text, default=RESERVATION_ROWS_DEFAULT, maximum=RESERVATION_ROWS_MAX)
    cursor_text = request.query.get("cursor", "")
    after = check_page_key("start", paging.decode_cursor(cursor_text, "admin-reservations")) if cursor_text else None
    page = await ctl.reservations.admin_page(
        admin, owner=filters.get("owner"), node=filters.get("node"), agent=filters.get("agent"),
        status=filters.get("status"), after=after, limit=limit,
    )
    rows = [
        {
            "r": r,
            "window": f"{format_epoch(r.start_date, tz)} → {format_epoch(r.end_date, tz)}",
            "state": f"{r.process}: {r.action_state}" if r.action_state else (r.pending or ""),
        }
        for r in page.reservations
    ]

    def link(cursor: str | None) -> str:
        query = list(filters.items())
        if limit != RESERVATION_ROWS_DEFAULT:
            query.append(("limit", str(limit)))
        if cursor:
            query.append(("cursor", cursor))
        return "/admin/reservations" + ("?" + urlencode(query) if query else "")

    return await render(request, "admin/reservations.html", context | {
        "rows": rows,
        "next_page": link(paging.encode_cursor("admin-reservations", page.next_key)) if page.next_key else None,
        "first_page": link(None) if after is not None else None,
        "limit": limit,
    })


async def reservation_action(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    form = await request.post()
    op = field(form, "op", label="operation")
    node = field(form, "node", max_length=64)
    owner = field(form, "owner", max_length=254)
    reservations = request.app[CONTROLLER].reservations
    if op == "end":
        await reservations.admin_end(admin, node, owner)
        await flash(request, f"The reservation of {node} by {owner} ends: the node is destroyed.", "success")
    elif op == "move":
        to = field(form, "to", required=False, max_length=64) or None
        moved = await reservations.admin_move(admin, node, owner, to=to)
        await flash(request, f"The reservation of {node} by {owner} is now on {moved.node_name}.", "success")
    else:
        raise InvalidInput("unknown operation; choose end or move")
    raise web.HTTPSeeOther("/admin/reservations")


# ---------------------------------------------------------------------------------------------
# the clock


async def confirm_clock(request: web.Request) -> web.StreamResponse:
    """The banner's button: the administrator says the wall clock is right (controller.clock)."""
    admin = await require_admin(request)
    form = await request.post()
    back = safe_next(field(form, "next", required=False, max_length=1024))
    await request.app[CONTROLLER].clock.confirm(admin)
    await flash(request, "Clock confirmed: reservations start and end by it again.", "success")
    raise web.HTTPSeeOther(back)
