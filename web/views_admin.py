"""Administrators' pages: users, agents, nodes (with maintenance), environments, and everyone's
reservations (current and ended)."""

from __future__ import annotations

from collections import defaultdict

from aiohttp import web

from edgebed.controller.agents import AGENT_TYPES
from edgebed.controller.domain import Environment
from edgebed.controller.errors import InvalidInput
from edgebed.controller.reservations import ADMIN_STATUSES
from edgebed.tls import MAX_PEM
from edgebed.web.auth import require_admin, safe_next
from edgebed.web.forms import MAX_LONG, MAX_PASSWORD, clean_text, field, format_epoch, parse_int
from edgebed.web.keys import CONTROLLER
from edgebed.web.render import flash, render, viewer_zone

USER_OPS = ("authorize", "revoke", "promote", "demote", "delete")


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
    users = await request.app[CONTROLLER].accounts.list_users(admin)
    return await render(request, "admin/users.html", {"users": users})


async def user_action(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    form = await request.post()
    email = field(form, "email")
    op = field(form, "op", label="operation")
    accounts = request.app[CONTROLLER].accounts
    if op == "authorize":
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
    past = {"authorize": "authorized", "revoke": "revoked", "promote": "promoted",
            "demote": "demoted", "delete": "deleted"}[op]
    await flash(request, f"{email} {past}.", "success")
    raise web.HTTPSeeOther("/admin/users")


async def create_user(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    form = await request.post()
    email = field(form, "email")
    password = field(form, "password", max_length=MAX_PASSWORD, strip=False)
    user = await request.app[CONTROLLER].accounts.add_user(
        admin, email, password, admin=form.get("admin") == "on", authorized=form.get("authorized") == "on"
    )
    await flash(request, f"{user.email} created.", "success")
    raise web.HTTPSeeOther("/admin/users")


# ---------------------------------------------------------------------------------------------
# agents


async def agents_page(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    agents = await request.app[CONTROLLER].agents.list_agents(admin)
    return await render(request, "admin/agents.html", {"agents": agents, "types": AGENT_TYPES})


async def add_agent(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    form = await request.post()
    name = field(form, "name", max_length=64)
    agent_type = field(form, "type")
    if agent_type not in AGENT_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(AGENT_TYPES)}")
    ip = field(form, "ip", max_length=255, label="address")
    port = parse_int(field(form, "port"), "port", minimum=1, maximum=65535)
    token = field(form, "token", max_length=1024)
    ca_pem = field(form, "ca_pem", required=False, max_length=MAX_PEM, label="CA certificate")
    agent = await request.app[CONTROLLER].agents.add_agent(admin, name, agent_type, ip, port, token, ca_pem)
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


async def nodes_page(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    ctl = request.app[CONTROLLER]
    refresh = request.query.get("refresh") == "1"
    nodes = await ctl.inventory.list_nodes(refresh=refresh)
    agents = await ctl.agents.list_agents(admin)
    by_agent: dict[str, list] = defaultdict(list)
    for node in nodes:
        by_agent[node.agent].append(node)
    groups = [
        {"agent": agent, "nodes": sorted(by_agent.get(agent.name, []), key=lambda n: n.name)}
        for agent in agents
    ]
    maintenance = await ctl.maintenance.list_maintenance(admin)
    return await render(
        request,
        "admin/nodes.html",
        {
            "groups": groups,
            "agents": agents,
            "maintenance": {m.node_name: m for m in maintenance},
            # In maintenance but listed by no agent: still never handed out if it comes back.
            "unlisted": [m for m in maintenance if not m.agent],
        },
    )


async def node_action(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    form = await request.post()
    op = field(form, "op", label="operation")
    inventory = request.app[CONTROLLER].inventory
    if op == "add":
        agent = field(form, "agent", max_length=64)
        name = field(form, "name", max_length=64)
        properties = parse_properties(field(form, "properties", required=False, max_length=MAX_LONG))
        await inventory.add_node(admin, agent, name, properties)
        await flash(request, f"Node {name} added to {agent}.", "success")
    elif op == "rename":
        name = field(form, "name", max_length=64)
        new_name = field(form, "new_name", max_length=64, label="new name")
        await inventory.rename_node(admin, name, new_name)
        await flash(request, f"Node {name} is now {new_name}.", "success")
    elif op == "delete":
        name = field(form, "name", max_length=64)
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
    ctl = request.app[CONTROLLER]
    environments = await ctl.inventory.environments()
    agents = await ctl.agents.list_agents(admin)
    return await render(
        request,
        "admin/environments.html",
        {"environments": sorted(environments.items()), "agents": agents},
    )


async def environment_action(request: web.Request) -> web.StreamResponse:
    admin = await require_admin(request)
    form = await request.post()
    op = field(form, "op", label="operation")
    agent = field(form, "agent", max_length=64)
    name = field(form, "name", max_length=64)
    inventory = request.app[CONTROLLER].inventory
    if op == "put":
        environment = Environment(
            name=name,
            description=field(form, "description", required=False, max_length=1024),
            image=field(form, "image", max_length=1024),
            size_bytes=parse_int(
                field(form, "size_bytes", label="size"), "size (bytes)", minimum=0, maximum=2**53
            ),
            default_user=field(form, "default_user", required=False, max_length=64,
                               label="default user"),
            properties=parse_properties(
                field(form, "properties", required=False, max_length=MAX_LONG)
            ),
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
# everyone's reservations

RESERVATION_FILTERS = ("owner", "node", "agent", "status")
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
    reservations = await ctl.reservations.admin_list(
        admin, owner=filters.get("owner"), node=filters.get("node"), agent=filters.get("agent"),
        status=filters.get("status"),
    )
    rows = [
        {
            "r": r,
            "window": f"{format_epoch(r.start_date, tz)} → {format_epoch(r.end_date, tz)}",
            "state": f"{r.process}: {r.action_state}" if r.action_state else (r.pending or ""),
        }
        for r in reservations
    ]
    return await render(request, "admin/reservations.html", context | {"rows": rows})


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
