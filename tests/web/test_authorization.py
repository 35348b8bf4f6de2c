"""The authorization matrix: every route against {anonymous, an account awaiting approval, a user,
another user, an administrator}, each with a valid CSRF token or API token where they have one,
so that what is checked is who they are. No user ever sees or acts on another's reservation."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.web.conftest import ADMIN, ALICE, BOB
from tests.web.harness import PASSWORD, Client, Testbed

PENDING = "pending@example.org"
VICTIM = "victim@example.org"
DOOMED = "doomed@example.org"
# Holds the reservations administrators end and move (rpi-003, rpi-004).
CAROL = "carol@example.org"
# The owner acts last, so that the others try her reservation while it is still there.
IDENTITIES = ("anonymous", "pending", "bob", "admin", "alice")
USERS = ("bob", "admin", "alice")
LOGIN = "303 /login"
NOT_FOUND_FOR_OTHERS = {"bob": 404, "admin": 404}
_counter = itertools.count(1)


@dataclass
class Case:
    method: str
    path: str
    expect: dict[str, int | str]
    body: Callable[[str], Any] | None = None

    @property
    def api(self) -> bool:
        return self.path.startswith("/api/")


def page(method: str, path: str, *, anonymous: int | str = LOGIN, users: int | str = 200,
         body=None, **overrides: int | str) -> Case:
    expect: dict[str, int | str] = {"anonymous": anonymous, "pending": anonymous}
    expect.update({name: users for name in USERS})
    expect.update(overrides)
    return Case(method, path, expect, body)


def admin_page(method: str, path: str, admin: int | str, body=None) -> Case:
    return page(method, path, users=403, admin=admin, body=body)


def api(method: str, path: str, *, users: int, body=None, **overrides: int) -> Case:
    expect: dict[str, int | str] = {"anonymous": 401, "pending": 403}
    expect.update({name: users for name in USERS})
    expect.update(overrides)
    return Case(method, path, expect, body)


def admin_api(method: str, path: str, admin: int, body=None) -> Case:
    return api(method, path, users=403, admin=admin, body=body)


def future(hours: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + hours * 3600))


def unique_email(_identity: str) -> str:
    return f"made{next(_counter)}@example.org"


CASES = [
    page("GET", "/", anonymous=LOGIN, users="303 /manage"),
    page("GET", "/login", anonymous=200, users="303 /reserve"),
    page("GET", "/signup", anonymous=200, users=200),
    page("GET", "/confirm", anonymous=400, users=400),
    page("GET", "/static/edgebed.css", anonymous=200, users=200),
    page("GET", "/metrics", anonymous=200, users=200),
    page("GET", "/api/v1/openapi.json", anonymous=200, users=200),
    page("GET", "/reserve"),
    page("GET", "/configure"),
    page("GET", "/manage"),
    page("GET", "/manage/live"),
    page("GET", "/settings"),
    page("GET", "/history"),
    page("POST", "/settings/ssh-key", users="303 /settings", body=lambda who: {"ssh_key": ""}),
    page("POST", "/settings/tokens", users="303 /settings", body=lambda who: {"label": f"matrix-{who}"}),
    page("POST", "/settings/password", users=400,
         body=lambda who: {"old_password": PASSWORD, "new_password": "a", "new_password_again": "b"}),
    # Each reserves a node of its own; the owner's node is rpi-001, bob's rpi-002.
    page("POST", "/reserve", users="303 /configure",
         body=lambda who: [("nodes", {"bob": "sens-001", "admin": "sens-002", "alice": "sens-003"}
                            .get(who, "sens-001")), ("start", future(30)), ("tz", "UTC"),
                           ("duration_hours", "1")]),
    page("POST", "/configure", users="303 /configure", **NOT_FOUND_FOR_OTHERS,
         body=lambda who: [("nodes", "rpi-001"), ("bin", "matrix")]),
    page("POST", "/manage/action", users="303 /manage", **NOT_FOUND_FOR_OTHERS,
         body=lambda who: [("nodes", "rpi-001"), ("action", "extend")]),
    page("POST", "/settings/tokens/revoke", users="303 /settings", **NOT_FOUND_FOR_OTHERS,
         body=lambda who: {"token_id": MATRIX["alice_token_id"]}),
    admin_page("GET", "/admin", 200),
    admin_page("GET", "/admin/users", 200),
    admin_page("GET", "/admin/agents", 200),
    admin_page("GET", "/admin/nodes", 200),
    admin_page("GET", "/admin/environments", 200),
    admin_page("GET", "/admin/reservations", 200),
    admin_page("GET", "/admin/reservations?state=ended", 200),
    admin_page("POST", "/admin/reservations", "303 /admin/reservations",
               body=lambda who: {"op": "end", "node": "rpi-003", "owner": CAROL}),
    admin_page("POST", "/admin/users", "303 /admin/users", body=lambda who: {"email": VICTIM, "op": "revoke"}),
    admin_page("POST", "/admin/clock/confirm", "303 /admin/nodes", body=lambda who: {"next": "/admin/nodes"}),
    admin_page("POST", "/admin/users/create", "303 /admin/users",
               body=lambda who: {"email": unique_email(who), "password": PASSWORD}),
    admin_page("POST", "/admin/agents", "303 /admin/agents",
               body=lambda who: {"name": "ghost", "type": "node", "ip": "127.0.0.1",
                                 "port": str(MATRIX["dead_port"]), "token": "t"}),
    admin_page("POST", "/admin/agents/action", "303 /admin/agents",
               body=lambda who: {"name": "ghost", "op": "reconnect"}),
    admin_page("POST", "/admin/nodes", 404,
               body=lambda who: {"op": "rename", "name": "no-such-node", "new_name": "x"}),
    admin_page("POST", "/admin/environments", 404,
               body=lambda who: {"op": "delete", "agent": "no-such-agent", "name": "x"}),
    api("GET", "/api/v1/nodes", users=200),
    api("GET", "/api/v1/environments", users=200),
    api("GET", "/api/v1/nodetypes", users=200),
    api("GET", "/api/v1/reservations", users=200),
    api("GET", "/api/v1/reservations?state=ended", users=200),
    # A too-short new password: every signed-in caller reaches the check (400), nobody changes it.
    api("POST", "/api/v1/account/password", users=400,
        body=lambda who: {"old_password": PASSWORD, "new_password": "a"}),
    api("POST", "/api/v1/reservations", users=201,
        body=lambda who: {"nodes": [{"bob": "srv-001", "admin": "srv-002", "alice": "srv-003"}
                                    .get(who, "srv-001")],
                          "start_date": int(time.time()) + 3600 * 40, "duration_hours": 1}),
    api("GET", "/api/v1/reservations/rpi-001", users=200, **NOT_FOUND_FOR_OTHERS),
    api("PUT", "/api/v1/reservations/rpi-001", users=200, **NOT_FOUND_FOR_OTHERS,
        body=lambda who: {"bin": "api"}),
    api("POST", "/api/v1/reservations/rpi-001/extend", users=200, **NOT_FOUND_FOR_OTHERS),
    # Not started yet: the owner is told so (409); the others are told nothing (404).
    api("POST", "/api/v1/reservations/rpi-001/reboot", users=409, **NOT_FOUND_FOR_OTHERS),
    api("POST", "/api/v1/reservations/rpi-001/deploy", users=409, **NOT_FOUND_FOR_OTHERS),
    api("POST", "/api/v1/reservations/rpi-002/destroy", users=404, bob=200),
    admin_api("GET", "/api/v1/admin/users", 200),
    admin_api("POST", "/api/v1/admin/users", 201,
              body=lambda who: {"email": unique_email(who), "password": PASSWORD}),
    admin_api("PATCH", f"/api/v1/admin/users/{VICTIM}", 200, body=lambda who: {"is_admin": False}),
    admin_api("DELETE", f"/api/v1/admin/users/{DOOMED}", 204),
    admin_api("GET", "/api/v1/admin/agents", 200),
    admin_api("POST", "/api/v1/admin/agents", 201,
              body=lambda who: {"name": "ghost2", "type": "sensor", "ip": "127.0.0.1",
                                "port": MATRIX["dead_port"], "token": "t"}),
    admin_api("POST", "/api/v1/admin/agents/ghost/reconnect", 200),
    admin_api("DELETE", "/api/v1/admin/agents/ghost2", 204),
    admin_api("GET", "/api/v1/admin/reservations", 200),
    admin_api("GET", "/api/v1/admin/reservations?state=ended", 200),
    admin_api("POST", f"/api/v1/admin/reservations/rpi-004/{CAROL}/move", 200, body=lambda who: {"to": "rpi-001"}),
    admin_api("POST", f"/api/v1/admin/reservations/rpi-001/{CAROL}/end", 200),
    admin_api("GET", "/api/v1/admin/clock", 200),
    admin_api("POST", "/api/v1/admin/clock/confirm", 200),
    admin_api("GET", "/api/v1/admin/maintenance", 200),
    admin_api("PUT", "/api/v1/admin/nodes/srv-003/maintenance", 200, body=lambda who: {"reason": "matrix"}),
    admin_api("DELETE", "/api/v1/admin/nodes/srv-003/maintenance", 204),
    admin_api("DELETE", "/api/v1/admin/nodes/no-such-node", 404),
]

# Filled by the fixture: values the cases need that exist only once the testbed runs.
MATRIX: dict[str, Any] = {}


@pytest.fixture(scope="module")
def identities(testbed: Testbed):
    from tests.conftest import free_port

    bed = testbed
    bed.create_user(PENDING)
    bed.create_user(VICTIM)
    bed.create_user(DOOMED)
    pending = Client(bed.url)
    pending.login(PENDING)
    pending_token = bed.api_token(PENDING)
    # Approved once, then revoked: its cookie and token are still around.
    admin_user = bed.call(bed.controller.accounts.get_user(ADMIN))
    bed.call(bed.controller.accounts.set_authorized(admin_user, PENDING, False))

    clients = {
        "anonymous": (Client(bed.url), Client(bed.url)),
        "pending": (pending, Client(bed.url, token=pending_token)),
    }
    for name, email in (("alice", ALICE), ("bob", BOB), ("admin", ADMIN)):
        clients[name] = (Client(bed.url), Client(bed.url, token=bed.api_token(email)))
        clients[name][0].login(email)
    alice, bob = clients["alice"][1], clients["bob"][1]
    start = int(time.time()) + 3600 * 20
    bed.create_user(CAROL)
    carol = Client(bed.url, token=bed.api_token(CAROL))
    for api_client, node, when in ((alice, "rpi-001", start), (bob, "rpi-002", start),
                                   (carol, "rpi-003", start), (carol, "rpi-004", start + 3600 * 10)):
        reserved = api_client.request("POST", "/api/v1/reservations", json={
            "nodes": [node], "start_date": when, "duration_hours": 2})
        assert reserved.status == 201, reserved.text
    bed.api_token(ALICE)
    tokens = bed.call(bed.controller.accounts.list_api_tokens(ALICE))
    MATRIX["alice_token_id"] = str(max(t.id for t in tokens))
    MATRIX["dead_port"] = free_port()
    return clients


def run_case(clients, case: Case, who: str):
    page_client, api_client = clients[who]
    body = case.body(who) if case.body else None
    if case.api:
        return api_client.request(case.method, case.path, json=body)
    if case.method == "GET":
        return page_client.get(case.path)
    return page_client.post(case.path, body or {})


def outcome(response) -> str | int:
    if response.status in (302, 303):
        return f"{response.status} {response.location.split('?')[0]}"
    return response.status


def test_every_route_answers_each_identity_as_expected(testbed, identities):
    mismatches = []
    for case in CASES:
        for who in IDENTITIES:
            response = run_case(identities, case, who)
            got = outcome(response)
            if got != case.expect[who]:
                mismatches.append(f"{case.method} {case.path} as {who}: {got}, expected "
                                  f"{case.expect[who]} ({response.text[:160]!r})")
            if response.status >= 400 and case.api:
                assert "error" in response.json(), (case.path, who)
            if response.status == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert not mismatches, "\n".join(mismatches)


def test_no_user_sees_another_users_reservations(testbed, identities):
    alice_page, alice_api = identities["alice"]
    bob_page, bob_api = identities["bob"]
    alice_nodes = {r["node_name"] for r in alice_api.get("/api/v1/reservations").json()}
    bob_nodes = {r["node_name"] for r in bob_api.get("/api/v1/reservations").json()}
    assert "rpi-001" in alice_nodes and "rpi-001" not in bob_nodes
    assert not alice_nodes & bob_nodes
    live = {r["node_name"] for r in alice_page.get("/manage/live").json()["reservations"]}
    assert live == alice_nodes
    for path in ("/manage", "/configure"):
        bob_html = bob_page.get(path).text
        assert not re.search(r'data-node="rpi-001"|value="rpi-001"', bob_html), path
    # The reserve page's timeline shows that a node is taken, never by whom.
    reserve = bob_page.get("/reserve").text
    assert ALICE not in reserve and 'class="busy"' in reserve and 'class="busy mine' in reserve


def test_the_owner_can_end_her_reservation_and_then_it_is_gone_for_her_too(testbed, identities):
    alice_api = identities["alice"][1]
    assert alice_api.request("POST", "/api/v1/reservations/rpi-001/destroy").status == 200
    assert alice_api.get("/api/v1/reservations/rpi-001").status == 404


# Open to anyone by design, and they change the session the other cases run in: signing up,
# logging in and out are tried in tests/web/test_accounts.py.
SESSION_ROUTES = {("POST", "/signup"), ("POST", "/login"), ("POST", "/logout")}


def test_the_matrix_covers_every_route(tmp_path):
    """A route added without its row in CASES fails here: each is tried by every identity."""
    from edgebed.controller.settings import Settings
    from edgebed.web.app import create_app

    app = create_app(Settings(listen="127.0.0.1:0", database=str(tmp_path / "db.sqlite"),
                              secret_key_file=str(tmp_path / "secret.key")))
    tried = {(case.method, case.path.split("?")[0]) for case in CASES} | SESSION_ROUTES
    missing = []
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource else {}
        pattern = info.get("path") or info.get("formatter") or info.get("prefix", "")
        regex = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(pattern))
                           + ("/.*" if "prefix" in info else "") + "$")
        if not any(method == route.method and regex.match(path) for method, path in tried):
            missing.append(f"{route.method} {pattern}")
    assert missing == []
