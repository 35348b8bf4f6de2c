"""The JSON API under /api/v1 with bearer tokens, /api/v1/openapi.json and /metrics, against the
real controller and real simulated agents."""

from __future__ import annotations

import time

import pytest
from openapi_spec_validator import validate

from tests.web.conftest import ADMIN, ALICE, BOB
from tests.web.harness import PASSWORD, Client


@pytest.fixture(scope="module")
def clients(testbed):
    return {
        email: Client(testbed.url, token=testbed.api_token(email)) for email in (ADMIN, ALICE, BOB)
    }


def test_openapi_json_is_served_and_valid(testbed):
    response = Client(testbed.url).get("/api/v1/openapi.json")
    assert response.status == 200 and response.headers["Content-Type"].startswith("application/json")
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.")
    assert {"/nodes", "/environments", "/nodetypes", "/reservations", "/admin/users",
            "/admin/agents"} <= set(document["paths"])


def test_inventory_calls_have_the_documented_shapes(clients):
    alice = clients[ALICE]
    nodes = alice.get("/api/v1/nodes").json()
    assert len(nodes) == 10
    for node in nodes:
        assert {"name", "agent", "type", "properties", "connected"} <= set(node)
        assert node["connected"] is True and isinstance(node["properties"], dict)
    assert {n["type"] for n in nodes} == {"raspberry", "node", "sensor"}

    environments = alice.get("/api/v1/environments").json()
    assert set(environments) == {"raspberry", "node", "sensor"}
    assert all("name" in env for envs in environments.values() for env in envs)

    types = alice.get("/api/v1/nodetypes").json()
    raspberry = types["raspberry"]
    assert raspberry["processes"]["deploy"][-1] == "deployed"
    specs = {spec["name"]: spec for spec in raspberry["properties"]}
    assert specs["environment"]["required"] is True
    assert specs["os_password"]["secret"] is True
    assert {"name", "required", "values", "secret"} <= set(specs["environment"])


def test_reserve_configure_deploy_and_destroy_through_the_api(clients):
    alice = clients[ALICE]
    now = int(time.time())
    taken = alice.request("POST", "/api/v1/reservations", json={
        "filter": {"type": "node"}, "count": 2, "start_date": now, "duration_hours": 1})
    assert taken.status == 201, taken.text
    names = taken.json()["nodes"]
    assert len(names) == 2 and all(name.startswith("srv-") for name in names)

    # Asking for more than exist, or for a node already taken, is a conflict.
    too_many = alice.request("POST", "/api/v1/reservations", json={
        "filter": {"type": "node"}, "count": 3, "start_date": now, "duration_hours": 1})
    assert too_many.status == 409 and "error" in too_many.json()
    clash = clients[BOB].request("POST", "/api/v1/reservations", json={
        "nodes": [names[0]], "start_date": now, "duration_hours": 1})
    assert clash.status == 409
    past = alice.request("POST", "/api/v1/reservations", json={
        "nodes": ["sens-001"], "start_date": now - 86400, "duration_hours": 1})
    assert past.status == 400 and "past" in past.json()["error"]

    listed = alice.get("/api/v1/reservations").json()
    assert {r["node_name"] for r in listed} == set(names)
    for reservation in listed:
        assert {"node_name", "bin", "start_date", "end_date", "status", "action_state",
                "progress"} <= set(reservation)
        assert reservation["status"] == "configuring"

    environment = clients[ALICE].get("/api/v1/environments").json()["node"][0]["name"]
    for name in names:
        configured = alice.request("PUT", f"/api/v1/reservations/{name}", json={
            "bin": "api-run", "environment": environment, "os_password": "server-pass-1"})
        assert configured.status == 200, configured.text
        assert configured.json()["status"] in ("ready", "in_progress")
        assert configured.json()["bin"] == "api-run"

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = {r["node_name"]: r for r in alice.get("/api/v1/reservations").json()}
        if all(r["action_state"] == "deployed" for r in states.values()):
            break
        time.sleep(0.2)
    assert all(r["action_state"] == "deployed" and r["progress"] == 100 for r in states.values()), states
    assert all(r["status"] == "ready" for r in states.values())

    for name in names:
        assert alice.request("POST", f"/api/v1/reservations/{name}/destroy").status == 200
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and alice.get("/api/v1/reservations").json():
        time.sleep(0.2)
    assert alice.get("/api/v1/reservations").json() == []


def test_admin_calls_manage_users_and_agents_without_showing_tokens(clients, testbed):
    admin = clients[ADMIN]
    created = admin.request("POST", "/api/v1/admin/users", json={
        "email": "ivan@example.org", "password": PASSWORD})
    assert created.status == 201 and created.json()["is_authorized"] is False
    users = admin.get("/api/v1/admin/users").json()
    assert users[0]["email"] == "ivan@example.org"  # pending first
    assert all("password" not in user for user in users)
    patched = admin.request("PATCH", "/api/v1/admin/users/ivan@example.org",
                            json={"is_authorized": True, "is_admin": True})
    assert patched.status == 200
    assert patched.json()["is_authorized"] is True and patched.json()["is_admin"] is True
    ivan = Client(testbed.url, token=testbed.api_token("ivan@example.org"))
    assert ivan.get("/api/v1/admin/agents").status == 200
    # An administrator cannot demote or delete themselves.
    assert admin.request("PATCH", f"/api/v1/admin/users/{ADMIN}", json={"is_admin": False}).status == 409
    assert admin.request("DELETE", "/api/v1/admin/users/ivan@example.org").status == 204
    assert ivan.get("/api/v1/nodes").status == 401

    agents = admin.get("/api/v1/admin/agents").json()
    assert {a["name"] for a in agents} >= {"rpi", "srv", "sens"}
    for agent in agents:
        assert {"name", "type", "ip", "port", "status"} <= set(agent)
        assert "token" not in agent
    assert all(a["status"] == "connected" for a in agents if a["name"] in ("rpi", "srv", "sens"))
    tokens = {agent.token for agent in testbed.agents}
    listing = admin.get("/api/v1/admin/agents").text
    assert not any(token in listing for token in tokens)
    reconnected = admin.request("POST", "/api/v1/admin/agents/rpi/reconnect")
    assert reconnected.status == 200 and reconnected.json()["status"] == "connected"
    assert admin.request("POST", "/api/v1/admin/agents/nobody/reconnect").status == 404


def test_an_agent_added_with_a_ca_is_called_over_tls_and_a_bad_ca_is_a_400(clients, tmp_path):
    from edgebed.tls import create_ca
    from tests.conftest import free_port

    admin = clients[ADMIN]
    ca_pem = create_ca(tmp_path / "ca")[0].read_text()
    body = {"name": "tls-offline", "type": "sensor", "ip": "127.0.0.1", "port": free_port(), "token": "t-9f1"}
    bad = admin.request("POST", "/api/v1/admin/agents", json={**body, "ca_pem": "-----BEGIN CERT"})
    assert bad.status == 400 and bad.json()["error"].startswith("the agent's CA: no PEM certificate"), bad.text
    assert admin.request("POST", "/api/v1/admin/agents", json={**body, "ca_pem": 7}).status == 400
    assert all(a["name"] != "tls-offline" for a in admin.get("/api/v1/admin/agents").json())

    added = admin.request("POST", "/api/v1/admin/agents", json={**body, "ca_pem": ca_pem})
    assert added.status == 201, added.text
    assert (added.json()["tls"], added.json()["status"]) == (True, "disconnected")
    listed = {a["name"]: a for a in admin.get("/api/v1/admin/agents").json()}
    assert listed["tls-offline"]["tls"] is True and listed["rpi"]["tls"] is False
    assert admin.request("DELETE", "/api/v1/admin/agents/tls-offline").status == 204


def test_metrics_are_prometheus_text(testbed):
    response = Client(testbed.url).get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.text
    for family in ("edgebed_reservations", "edgebed_actions", "edgebed_agent_calls_total",
                   "edgebed_agent_call_seconds"):
        assert f"# TYPE {family} " in text, family
    assert 'edgebed_agent_calls_total{agent="rpi",method="GetNodes",outcome="ok"}' in text
    assert "edgebed_agent_call_seconds_bucket{" in text
