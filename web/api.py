"""The JSON API under /api/v1 (see DESIGN.md 'Interfaces'): bearer tokens, JSON in and out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from edgebed.controller.agents import AGENT_TYPES
from edgebed.controller.errors import AuthenticationFailed, InvalidInput
from edgebed.controller.reservations import (
    ADMIN_STATUSES,
    HISTORY_LIMIT,
    MAX_NODES_PER_REQUEST,
    PAGE_DEFAULT,
    PAGE_LIMIT,
    USER_ACTIONS,
    check_page_key,
)
from edgebed.tls import MAX_PEM
from edgebed.web import paging
from edgebed.web.auth import api_admin, api_user
from edgebed.web.forms import (
    MAX_PASSWORD,
    MAX_SHORT,
    clean_text,
    json_bool,
    json_int,
    json_number,
    json_optional_str,
    json_str,
    json_str_list,
    json_str_map,
    read_json,
    scalar_text,
)
from edgebed.web.keys import CONTROLLER, SETTINGS
from edgebed.web.openapi import openapi_document
from edgebed.web.views_common import (
    agent_json,
    clock_json,
    environment_json,
    history_json,
    maintenance_json,
    node_json,
    nodetype_json,
    removal_json,
    reservation_json,
    user_json,
)


def _path_param(request: web.Request, name: str) -> str:
    return clean_text(request.match_info[name], name, max_length=MAX_SHORT)


def _node_name(request: web.Request) -> str:
    return _path_param(request, "node")


def _allowed_keys(body: dict, allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        shown = ", ".join(repr(key[:40]) for key in unknown[:5])
        raise InvalidInput(f"unknown field(s) {shown}; expected {', '.join(sorted(allowed))}")


# -- query parameters: a misspelt one is refused, never silently ignored --------------------

STATES = ("current", "ended")
HISTORY_PAGE = 100


def _query(request: web.Request, allowed: set[str]) -> dict[str, str]:
    """The query parameters, each given once, none unknown; InvalidInput says which is wrong."""
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        shown = ", ".join(repr(key[:40]) for key in unknown[:5])
        raise InvalidInput(f"unknown query parameter(s) {shown}; expected {', '.join(sorted(allowed))}")
    values = {}
    for key in request.query:
        given = request.query.getall(key)
        if len(given) > 1:
            raise InvalidInput(f"query parameter {key!r} is given more than once")
        values[key] = clean_text(given[0], key)
    return values


def _query_int(query: dict[str, str], key: str, *, minimum: int, maximum: int) -> int | None:
    if key not in query:
        return None
    text = query[key]
    if not text.isdigit() or not minimum <= int(text) <= maximum:
        raise InvalidInput(f"{key} must be a whole number between {minimum} and {maximum}")
    return int(text)


def _query_state(query: dict[str, str]) -> str:
    state = query.get("state", "current")
    if state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(STATES)}")
    return state


def _query_bool(query: dict[str, str], key: str) -> bool:
    value = query.get(key, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise InvalidInput(f"{key} must be true or false")
    return value in ("true", "1")


async def openapi(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    return web.json_response(
        openapi_document(
            min_duration_hours=settings.min_duration_hours, max_duration_hours=settings.max_duration_hours
        )
    )


# ---------------------------------------------------------------------------------------------
# inventory


async def nodes(request: web.Request) -> web.StreamResponse:
    """Every node by name, paged: `limit` (default 100, at most 1000) and the `cursor` of the
    Link header (the last name of the page before)."""
    await api_user(request)
    node_list = await request.app[CONTROLLER].inventory.node_list()
    # node_list is by name already.
    keys = node_list.derived("api.keys", lambda nodes: [(node.name,) for node in nodes])
    return _memory_page(request, "nodes", node_list.nodes, keys, (str,), node_json)


async def environments(request: web.Request) -> web.StreamResponse:
    await api_user(request)
    by_type = await request.app[CONTROLLER].inventory.environments()
    return web.json_response(
        {type_name: [environment_json(e) for e in envs] for type_name, envs in by_type.items()}
    )


async def nodetypes(request: web.Request) -> web.StreamResponse:
    await api_user(request)
    types = await request.app[CONTROLLER].inventory.node_types()
    return web.json_response({name: nodetype_json(info) for name, info in types.items()})


# ---------------------------------------------------------------------------------------------
# reservations


# What POST /api/v1/reservations takes; the OpenAPI document says the same (RESERVATION_FIELDS).
RESERVATION_FIELDS = ("nodes", "filter", "count", "start_date", "duration_hours")


async def create_reservation(request: web.Request) -> web.StreamResponse:
    """Either "nodes", or "count" with an optional "filter" (never both), and the window. The
    window's rules (controller.validation) are checked by the service, with the same messages as
    the reserve form."""
    user = await api_user(request)
    body = await read_json(request)
    _allowed_keys(body, set(RESERVATION_FIELDS))
    for key in ("start_date", "duration_hours"):
        if key not in body:
            raise InvalidInput(f"{key} is missing")
    start, duration = body["start_date"], body["duration_hours"]
    reservations = request.app[CONTROLLER].reservations
    if "nodes" in body:
        if "filter" in body or "count" in body:
            raise InvalidInput("give either nodes, or filter and count, not both")
        names = json_str_list(body, "nodes")
        if names is None:
            raise InvalidInput("nodes must be a list of strings")
        if not names:
            raise InvalidInput("nodes is empty")
        reserved = await reservations.reserve(user, nodes=names, start_date=start, duration_hours=duration)
    elif "count" in body:
        count = json_int(body, "count", minimum=1, maximum=MAX_NODES_PER_REQUEST)
        filters = json_str_map(body, "filter") if "filter" in body else {}
        if filters is None:
            raise InvalidInput("filter must be an object of property names to values")
        reserved = await reservations.reserve(
            user, filter=filters, count=count, start_date=start, duration_hours=duration
        )
    else:
        raise InvalidInput('give "nodes": [names], or "count": N with an optional "filter"')
    return web.json_response({"nodes": list(reserved)}, status=201)


def _memory_page(
    request: web.Request, kind: str, rows: Sequence[Any], keys: list[tuple[Any, ...]], shape: tuple[type, ...],
    to_json: Callable[[Any], Any],
) -> web.Response:
    """One page of `rows` (held in memory, in the order of their sorted, unique `keys`) as a JSON
    array, after the request's `cursor`, at most its `limit`; the next page in a Link header."""
    query = _query(request, {"limit", "cursor"})
    limit = paging.parse_limit(query.get("limit"), default=PAGE_DEFAULT, maximum=PAGE_LIMIT)
    after = paging.cursor_key(query["cursor"], kind, shape) if "cursor" in query else None
    first, stop, following, _ = paging.page_of(keys, after, limit)
    more = None if following is None else paging.encode_cursor(kind, following)
    return web.json_response([to_json(row) for row in rows[first:stop]],
                             headers=_next_link(request, query, more, limit))


def _next_link(request: web.Request, query: dict[str, str], cursor: str | None, limit: int) -> dict[str, str]:
    """The `Link: <...>; rel="next"` header of a paged list: the same query with the next
    page's cursor (no header on the last page)."""
    if cursor is None:
        return {}
    following = {key: value for key, value in query.items() if key not in ("cursor", "before")}
    following |= {"limit": str(limit), "cursor": cursor}
    url = request.rel_url.with_query(following)
    return {"Link": f'<{url}>; rel="next"'}


def _history_before(query: dict[str, str], kind: str) -> int | None:
    """The history entry id a page of ended reservations starts before: from `cursor` (what the
    Link header gave) or `before` (an entry id, as before cursors existed); not both."""
    if "cursor" in query and "before" in query:
        raise InvalidInput("give cursor or before, not both")
    if "cursor" in query:
        key = paging.decode_cursor(query["cursor"], kind)
        if len(key) != 1 or type(key[0]) is not int or not 1 <= key[0] < 2**62:
            raise InvalidInput("cursor: it belongs to another list (a cursor pages on the list "
                               "that gave it out, with the same parameters)")
        return int(key[0])
    return _query_int(query, "before", minimum=1, maximum=2**62)


def _current_after(query: dict[str, str], kind: str, order: str) -> tuple | None:
    if "before" in query:
        raise InvalidInput("before applies to state=ended only; page on with cursor")
    if "cursor" not in query:
        return None
    return check_page_key(order, paging.decode_cursor(query["cursor"], kind))


async def list_reservations(request: web.Request) -> web.StreamResponse:
    """?state=current (default): the caller's reservations by node name; ?state=ended: their
    history, newest first. Both paged: `limit` rows (default 100, at most 1000), the next page
    by the `cursor` of the `Link: <...>; rel="next"` header (absent on the last page)."""
    user = await api_user(request)
    query = _query(request, {"state", "limit", "before", "cursor"})
    reservations = request.app[CONTROLLER].reservations
    if _query_state(query) == "ended":
        limit = paging.parse_limit(query.get("limit"), default=HISTORY_PAGE, maximum=HISTORY_LIMIT)
        history = await reservations.history(user, before=_history_before(query, "ended"), limit=limit)
        more = paging.encode_cursor("ended", [history[-1].id]) if len(history) == limit else None
        return web.json_response([history_json(h) for h in history],
                                 headers=_next_link(request, query, more, limit))
    limit = paging.parse_limit(query.get("limit"), default=PAGE_DEFAULT, maximum=PAGE_LIMIT)
    page = await reservations.list_page(
        user, order="node", after=_current_after(query, "mine", "node"), limit=limit)
    more = None if page.next_key is None else paging.encode_cursor("mine", page.next_key)
    return web.json_response([reservation_json(r) for r in page.reservations],
                             headers=_next_link(request, query, more, limit))


async def get_reservation(request: web.Request) -> web.StreamResponse:
    user = await api_user(request)
    reservation = await request.app[CONTROLLER].reservations.get_reservation(
        user, _node_name(request)
    )
    return web.json_response(reservation_json(reservation))


async def configure_reservation(request: web.Request) -> web.StreamResponse:
    user = await api_user(request)
    node = _node_name(request)
    body = await read_json(request)
    bin_name = json_optional_str(body, "bin", max_length=64)
    if len(body) > 100:
        raise InvalidInput("too many properties (at most 100)")
    properties = {}
    for key, value in body.items():
        if key == "bin":
            continue
        if len(key) > 64:
            raise InvalidInput("a property name is too long (at most 64 characters)")
        properties[clean_text(key, "property name")] = scalar_text(value, key)
    reservation = await request.app[CONTROLLER].reservations.configure(
        user, node, bin=bin_name, properties=properties
    )
    return web.json_response(reservation_json(reservation))


def act_on_reservation(action: str):
    """The handler of POST /api/v1/reservations/{node}/<action>."""

    async def handler(request: web.Request) -> web.StreamResponse:
        user = await api_user(request)
        hours = None
        if action == "extend" and request.can_read_body:
            # {"hours": N}: end N hours later; no body: double the duration (as before).
            body = await read_json(request)
            _allowed_keys(body, {"hours"})
            if body.get("hours") is not None:
                cap = request.app[CONTROLLER].settings.extend_cap_hours
                hours = json_number(body, "hours", minimum=0.01, maximum=cap)
        reservation = await request.app[CONTROLLER].reservations.act(
            user, _node_name(request), action, hours=hours
        )
        return web.json_response(reservation_json(reservation))

    return handler


# ---------------------------------------------------------------------------------------------
# the caller's account


async def change_password(request: web.Request) -> web.StreamResponse:
    """Every login session of the account ends; its API tokens too (this call's included) unless
    "keep_api_tokens" is true."""
    user = await api_user(request)
    body = await read_json(request)
    _allowed_keys(body, {"old_password", "new_password", "keep_api_tokens"})
    old = json_str(body, "old_password", max_length=MAX_PASSWORD)
    new = json_str(body, "new_password", max_length=MAX_PASSWORD)
    keep = json_bool(body, "keep_api_tokens") or False
    try:
        change = await request.app[CONTROLLER].accounts.change_password(
            user.email, old, new, keep_api_tokens=keep
        )
    except AuthenticationFailed as exc:
        # 401 would say the bearer token is wrong; here it is the old password.
        raise InvalidInput(exc.message) from None
    return web.json_response({"api_tokens_revoked": change.api_tokens_revoked, "sessions_ended": True})


# ---------------------------------------------------------------------------------------------
# admin: users


async def admin_list_users(request: web.Request) -> web.StreamResponse:
    admin = await api_admin(request)
    users = sorted(await request.app[CONTROLLER].accounts.list_users(admin), key=paging.user_key)
    return _memory_page(request, "users", users, [paging.user_key(u) for u in users], paging.USER_KEY_SHAPE,
                        user_json)


async def admin_create_user(request: web.Request) -> web.StreamResponse:
    admin = await api_admin(request)
    body = await read_json(request)
    _allowed_keys(body, {"email", "password", "admin", "authorized", "is_admin", "is_authorized"})
    email = json_str(body, "email")
    password = json_str(body, "password", max_length=MAX_PASSWORD)
    admin_flag = json_bool(body, "admin") or json_bool(body, "is_admin") or False
    authorized = json_bool(body, "authorized") or json_bool(body, "is_authorized") or False
    user = await request.app[CONTROLLER].accounts.add_user(
        admin, email, password, admin=admin_flag, authorized=authorized
    )
    return web.json_response(user_json(user), status=201)


async def admin_update_user(request: web.Request) -> web.StreamResponse:
    admin = await api_admin(request)
    email = _path_param(request, "email")
    body = await read_json(request)
    _allowed_keys(body, {"is_authorized", "is_admin", "authorized", "admin", "confirmed_email"})
    authorized = json_bool(body, "is_authorized")
    if authorized is None:
        authorized = json_bool(body, "authorized")
    promoted = json_bool(body, "is_admin")
    if promoted is None:
        promoted = json_bool(body, "admin")
    confirmed = json_bool(body, "confirmed_email")
    if authorized is None and promoted is None and confirmed is None:
        raise InvalidInput('give "is_authorized", "is_admin" and/or "confirmed_email" (true or false)')
    user = await request.app[CONTROLLER].accounts.update_flags(
        admin, email, authorized=authorized, admin=promoted, confirmed_email=confirmed
    )
    return web.json_response(user_json(user))


async def admin_delete_user(request: web.Request) -> web.StreamResponse:
    admin = await api_admin(request)
    await request.app[CONTROLLER].accounts.delete_user(admin, _path_param(request, "email"))
    return web.Response(status=204)


# ---------------------------------------------------------------------------------------------
# admin: agents


async def admin_list_agents(request: web.Request) -> web.StreamResponse:
    admin = await api_admin(request)
    agents = sorted(await request.app[CONTROLLER].agents.list_agents(admin), key=lambda a: a.name)
    return _memory_page(request, "agents", agents, [(a.name,) for a in agents], (str,), agent_json)


async def admin_add_agent(request: web.Request) -> web.StreamResponse:
    admin = await api_admin(request)
    body = await read_json(request)
    _allowed_keys(body, {"name", "type", "ip", "port", "token", "ca_pem"})
    name = json_str(body, "name", max_length=64)
    agent_type = json_str(body, "type")
    if agent_type not in AGENT_TYPES:
        raise InvalidInput(f"type must be one of {', '.join(AGENT_TYPES)}")
    ip = json_str(body, "ip", max_length=255)
    port = json_int(body, "port", minimum=1, maximum=65535)
    token = json_str(body, "token", max_length=1024)
    ca_pem = json_optional_str(body, "ca_pem", max_length=MAX_PEM) or ""
    agent = await request.app[CONTROLLER].agents.add_agent(admin, name, agent_type, ip, port, token, ca_pem)
    return web.json_response(agent_json(agent), status=201)


async def admin_reconnect_agent(request: web.Request) -> web.StreamResponse:
    admin = await api_admin(request)
    agent = await request.app[CONTROLLER].agents.reconnect(admin, _path_param(request, "name"))
    return web.json_response(agent_json(agent))


async def admin_delete_agent(request: web.Request) -> web.StreamResponse:
    """204 when removed; 409 (saying which) while its nodes have reservations; with ?force=true
    202 and the removal: its reservations end with a destroy and the agent goes once they are
    gone (it is retiring meanwhile)."""
    admin = await api_admin(request)
    force = _query_bool(_query(request, {"force"}), "force")
    removal = await request.app[CONTROLLER].maintenance.delete_agent(
        admin, _path_param(request, "name"), force=force
    )
    if removal.removed:
        return web.Response(status=204)
    return web.json_response(removal_json(removal), status=202)


# ---------------------------------------------------------------------------------------------
# admin: nodes and maintenance


async def admin_delete_node(request: web.Request) -> web.StreamResponse:
    """As admin_delete_agent, for one node (removed on its agent)."""
    admin = await api_admin(request)
    force = _query_bool(_query(request, {"force"}), "force")
    removal = await request.app[CONTROLLER].maintenance.remove_node(admin, _node_name(request), force=force)
    if removal.removed:
        return web.Response(status=204)
    return web.json_response(removal_json(removal), status=202)


async def admin_list_maintenance(request: web.Request) -> web.StreamResponse:
    admin = await api_admin(request)
    listed = await request.app[CONTROLLER].maintenance.list_maintenance(admin)
    return web.json_response([maintenance_json(m) for m in listed])


async def admin_enter_maintenance(request: web.Request) -> web.StreamResponse:
    admin = await api_admin(request)
    body = await read_json(request)
    _allowed_keys(body, {"reason"})
    entry = await request.app[CONTROLLER].maintenance.enter(
        admin, _node_name(request), json_str(body, "reason", max_length=500)
    )
    return web.json_response(maintenance_json(entry))


async def admin_release_maintenance(request: web.Request) -> web.StreamResponse:
    admin = await api_admin(request)
    await request.app[CONTROLLER].maintenance.release(admin, _node_name(request))
    return web.Response(status=204)


# ---------------------------------------------------------------------------------------------
# admin: everyone's reservations


async def admin_list_reservations(request: web.Request) -> web.StreamResponse:
    """?state=current (default): every current reservation by start date (then node, owner),
    filtered by owner, node, agent and status; ?state=ended: everyone's history, newest first,
    filtered by owner and node. Paged as /reservations (limit, cursor, Link header)."""
    admin = await api_admin(request)
    query = _query(request, {"state", "owner", "node", "agent", "status", "limit", "before", "cursor"})
    reservations = request.app[CONTROLLER].reservations
    if _query_state(query) == "ended":
        if {"agent", "status"} & set(query):
            raise InvalidInput("agent and status apply to state=current only")
        limit = paging.parse_limit(query.get("limit"), default=HISTORY_PAGE, maximum=HISTORY_LIMIT)
        history = await reservations.admin_history(
            admin,
            owner=query.get("owner"),
            node=query.get("node"),
            before=_history_before(query, "all-ended"),
            limit=limit,
        )
        more = paging.encode_cursor("all-ended", [history[-1].id]) if len(history) == limit else None
        return web.json_response([history_json(h) for h in history],
                                 headers=_next_link(request, query, more, limit))
    if "status" in query and query["status"] not in ADMIN_STATUSES:
        # An empty one too: the document's enum has no "" (the admin page's "any" sends none).
        raise InvalidInput(f"status must be one of {', '.join(ADMIN_STATUSES)}")
    limit = paging.parse_limit(query.get("limit"), default=PAGE_DEFAULT, maximum=PAGE_LIMIT)
    page = await reservations.admin_page(
        admin, owner=query.get("owner"), node=query.get("node"), agent=query.get("agent"),
        status=query.get("status"), after=_current_after(query, "all", "start"), limit=limit,
    )
    more = None if page.next_key is None else paging.encode_cursor("all", page.next_key)
    return web.json_response([reservation_json(r) for r in page.reservations],
                             headers=_next_link(request, query, more, limit))


async def admin_end_reservation(request: web.Request) -> web.StreamResponse:
    admin = await api_admin(request)
    reservation = await request.app[CONTROLLER].reservations.admin_end(
        admin, _node_name(request), _path_param(request, "owner")
    )
    return web.json_response(reservation_json(reservation))


async def admin_move_reservation(request: web.Request) -> web.StreamResponse:
    """Body {"to": NODE} names the node; {} (or no body) takes the first free node of the same
    type matching the filter the reservation was made with."""
    admin = await api_admin(request)
    body = await read_json(request) if request.can_read_body else {}
    _allowed_keys(body, {"to"})
    reservation = await request.app[CONTROLLER].reservations.admin_move(
        admin, _node_name(request), _path_param(request, "owner"), to=json_optional_str(body, "to", max_length=64)
    )
    return web.json_response(reservation_json(reservation))


# ---------------------------------------------------------------------------------------------
# admin: the clock


async def admin_clock(request: web.Request) -> web.StreamResponse:
    admin = await api_admin(request)
    return web.json_response(clock_json(await request.app[CONTROLLER].clock.status(admin)))


async def admin_confirm_clock(request: web.Request) -> web.StreamResponse:
    admin = await api_admin(request)
    return web.json_response(clock_json(await request.app[CONTROLLER].clock.confirm(admin)))


# ---------------------------------------------------------------------------------------------
# metrics


async def metrics(request: web.Request) -> web.StreamResponse:
    rendered = await request.app[CONTROLLER].metrics.render()
    return web.Response(
        text=rendered, content_type="text/plain", charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/v1/nodes", nodes)
    app.router.add_get("/api/v1/environments", environments)
    app.router.add_get("/api/v1/nodetypes", nodetypes)
    app.router.add_post("/api/v1/reservations", create_reservation)
    app.router.add_get("/api/v1/reservations", list_reservations)
    app.router.add_get("/api/v1/reservations/{node}", get_reservation)
    app.router.add_put("/api/v1/reservations/{node}", configure_reservation)
    for action in USER_ACTIONS:
        app.router.add_post(f"/api/v1/reservations/{{node}}/{action}", act_on_reservation(action))
    app.router.add_post("/api/v1/account/password", change_password)
    app.router.add_get("/api/v1/admin/users", admin_list_users)
    app.router.add_post("/api/v1/admin/users", admin_create_user)
    app.router.add_patch("/api/v1/admin/users/{email}", admin_update_user)
    app.router.add_delete("/api/v1/admin/users/{email}", admin_delete_user)
    app.router.add_get("/api/v1/admin/agents", admin_list_agents)
    app.router.add_post("/api/v1/admin/agents", admin_add_agent)
    app.router.add_post("/api/v1/admin/agents/{name}/reconnect", admin_reconnect_agent)
    app.router.add_delete("/api/v1/admin/agents/{name}", admin_delete_agent)
    app.router.add_delete("/api/v1/admin/nodes/{node}", admin_delete_node)
    app.router.add_get("/api/v1/admin/maintenance", admin_list_maintenance)
    app.router.add_put("/api/v1/admin/nodes/{node}/maintenance", admin_enter_maintenance)
    app.router.add_delete("/api/v1/admin/nodes/{node}/maintenance", admin_release_maintenance)
    app.router.add_get("/api/v1/admin/reservations", admin_list_reservations)
    app.router.add_post("/api/v1/admin/reservations/{node}/{owner}/end", admin_end_reservation)
    app.router.add_post("/api/v1/admin/reservations/{node}/{owner}/move", admin_move_reservation)
    app.router.add_get("/api/v1/admin/clock", admin_clock)
    app.router.add_post("/api/v1/admin/clock/confirm", admin_confirm_clock)
    app.router.add_get("/metrics", metrics)
