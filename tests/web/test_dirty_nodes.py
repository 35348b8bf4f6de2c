"""Never hand out a dirty node (issue #10), end to end: real `edgebed agent` processes (sim
driver), the real controller and its scheduler, driven through the JSON API and the pages.

- Deleting an agent while one of its nodes is deployed is refused (409, saying which); with
  force the node is destroyed first, and only then is the agent removed.
- A destroy that ends `lost` (agent "hang" has `[sim] hang_commands = "wipe"`: its wipe never
  completes) ends the reservation and puts the node in maintenance; a new reservation of it, by
  name or by filter, is refused until an administrator releases it.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.processes import AgentProcess, start_all, stop_all
from tests.web.conftest import ADMIN, ALICE, BOB
from tests.web.harness import Client, Testbed

pytestmark = pytest.mark.slow

WAIT = 60.0


@pytest.fixture(scope="module")
def agents(tmp_path_factory):
    # Sensor boards: a deploy takes well under a second at this scale; a wipe that hangs is
    # given up after its `lost` timeout (600 s, run 100 times faster by the agent's clock).
    directory = tmp_path_factory.mktemp("agents")
    started = start_all([
        AgentProcess(directory, "clean", type="sensor", nodes=2, time_scale=0.002),
        AgentProcess(directory, "hang", type="sensor", nodes=2, time_scale=0.002, sim={"hang_commands": "wipe"}),
    ])
    yield {agent.name: agent for agent in started}
    stop_all(started)


@pytest.fixture(scope="module")
def bed(tmp_path_factory, agents):
    testbed = Testbed(tmp_path_factory.mktemp("controller")).start()
    try:
        testbed.create_user(ADMIN, admin=True)
        testbed.create_user(ALICE)
        testbed.create_user(BOB)
        testbed.register_agents(ADMIN, list(agents.values()))
        yield testbed
        assert not testbed.server_errors, "\n\n".join(testbed.server_errors)
    finally:
        testbed.stop()


@pytest.fixture(scope="module")
def api(bed):
    return {email: Client(bed.url, token=bed.api_token(email)) for email in (ADMIN, ALICE, BOB)}


def wait_for(condition, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def deploy(client: Client, node: str) -> None:
    """Reserves `node` now for an hour, configures it, and waits until it is deployed."""
    reserved = client.request("POST", "/api/v1/reservations", json={
        "nodes": [node], "start_date": int(time.time()), "duration_hours": 1})
    assert reserved.status == 201, reserved.text
    environment = client.get("/api/v1/environments").json()["sensor"][0]["name"]
    configured = client.request("PUT", f"/api/v1/reservations/{node}", json={"environment": environment})
    assert configured.status == 200, configured.text

    def deployed():
        reservation = client.get(f"/api/v1/reservations/{node}").json()
        return reservation["action_state"] == "deployed"

    wait_for(deployed, f"{node} to be deployed")


def test_deleting_an_agent_whose_node_is_deployed_is_refused_and_force_destroys_it_first(bed, api, agents):
    admin, alice = api[ADMIN], api[ALICE]
    deploy(alice, "clean-001")

    refused = admin.request("DELETE", "/api/v1/admin/agents/clean")
    assert refused.status == 409
    assert re.search(r"agent clean has reservations: clean-001 \(alice@example.org, .* UTC\); "
                     r"remove it with force", refused.json()["error"])
    assert [a["name"] for a in admin.get("/api/v1/admin/agents").json()] == ["clean", "hang"]
    assert alice.get("/api/v1/reservations/clean-001").json()["action_state"] == "deployed"
    # The page says the same.
    page = Client(bed.url)
    page.login(ADMIN)
    refused_page = page.post("/admin/agents/action", {"name": "clean", "op": "delete"})
    assert refused_page.status == 409 and "clean-001" in refused_page.text

    forced = admin.request("DELETE", "/api/v1/admin/agents/clean?force=true")
    assert forced.status == 202, forced.text
    assert forced.json() == {"kind": "agent", "name": "clean", "removed": False,
                             "waiting_for": [{"node_name": "clean-001", "owner": ALICE}]}
    # Retiring: its other node takes no new reservation.
    taken = alice.request("POST", "/api/v1/reservations", json={
        "nodes": ["clean-002"], "start_date": int(time.time()), "duration_hours": 1})
    assert taken.status == 409 and "agent clean, which is being removed" in taken.json()["error"]

    wait_for(lambda: [a["name"] for a in admin.get("/api/v1/admin/agents").json()] == ["hang"],
             "the agent to be removed once its node is destroyed")
    log = agents["clean"].log()
    assert log.count("clean-001: destroy started") == 1
    assert "clean-001: destroy ended in destroyed" in log
    # The destroy ended before the controller forgot the agent: the history says destroyed.
    [ended] = alice.get("/api/v1/reservations?state=ended").json()
    assert (ended["node_name"], ended["ended"], ended["outcome"], ended["end_reason"], ended["ended_by"]) == (
        "clean-001", "destroyed", "destroyed", "agent_removed", ADMIN)
    assert alice.get("/api/v1/reservations").json() == []

    # Registered again: the node was wiped, so it may be reserved.
    agent = agents["clean"]
    again = admin.request("POST", "/api/v1/admin/agents", json={
        "name": "clean", "type": "sensor", "ip": agent.host, "port": agent.port, "token": agent.token})
    assert again.status == 201, again.text
    assert alice.request("POST", "/api/v1/reservations", json={
        "nodes": ["clean-001"], "start_date": int(time.time()) + 3600, "duration_hours": 1}).status == 201


def test_a_destroy_that_ends_lost_puts_the_node_in_maintenance_until_an_administrator_releases_it(bed, api, agents):
    admin, alice, bob = api[ADMIN], api[ALICE], api[BOB]
    deploy(alice, "hang-001")
    destroying = alice.request("POST", "/api/v1/reservations/hang-001/destroy")
    assert destroying.status == 200 and destroying.json()["ending"] is True

    # The wipe hangs until the state's lost timeout: the reservation ends all the same.
    wait_for(lambda: alice.get("/api/v1/reservations/hang-001").status == 404, "the reservation to end")
    assert "hang-001: destroy lost" in agents["hang"].log()
    [held] = admin.get("/api/v1/admin/maintenance").json()
    assert (held["node_name"], held["set_by"], held["agent"]) == ("hang-001", "edgebed", "hang")
    assert "\nedgebed_nodes_in_maintenance 1\n" in Client(bed.url).get("/metrics").text
    assert held["reason"].startswith("a destroy ended lost")
    [ended] = [h for h in alice.get("/api/v1/reservations?state=ended").json() if h["node_name"] == "hang-001"]
    assert (ended["ended"], ended["outcome"], ended["end_reason"]) == ("lost", "lost", "owner")
    nodes = {n["name"]: n for n in bob.get("/api/v1/nodes").json()}
    assert nodes["hang-001"]["maintenance"]["reason"] == held["reason"]
    assert nodes["hang-002"]["maintenance"] is None

    now = int(time.time())
    by_name = bob.request("POST", "/api/v1/reservations", json={
        "nodes": ["hang-001"], "start_date": now, "duration_hours": 1})
    assert by_name.status == 409
    assert by_name.json()["error"] == f"node hang-001 is in maintenance: {held['reason']}"
    by_filter = bob.request("POST", "/api/v1/reservations", json={
        "filter": {"agent": "hang"}, "count": 2, "start_date": now, "duration_hours": 1})
    assert by_filter.status == 409 and "1 more are in maintenance" in by_filter.json()["error"]
    one = bob.request("POST", "/api/v1/reservations", json={
        "filter": {"agent": "hang"}, "count": 1, "start_date": now + 7200, "duration_hours": 1})
    assert one.status == 201 and one.json() == {"nodes": ["hang-002"]}

    # The reserve page shows it, and its box cannot be ticked.
    page = Client(bed.url)
    page.login(BOB)
    row = re.search(r"<tr[^>]*>(?:(?!</tr>).)*value=\"hang-001\"(?:(?!</tr>).)*</tr>", page.get("/reserve").text, re.S)
    assert row and "disabled" in row.group(0) and "maintenance" in row.group(0)
    admin_page = Client(bed.url)
    admin_page.login(ADMIN)
    nodes_page = admin_page.get("/admin/nodes").text
    assert "a destroy ended lost" in nodes_page and 'name="op" value="release"' in nodes_page

    # Released: reserved by name and by filter again.
    assert admin.request("DELETE", "/api/v1/admin/nodes/hang-001/maintenance").status == 204
    assert admin.get("/api/v1/admin/maintenance").json() == []
    assert "\nedgebed_nodes_in_maintenance 0\n" in Client(bed.url).get("/metrics").text
    assert bob.request("POST", "/api/v1/reservations", json={
        "nodes": ["hang-001"], "start_date": now, "duration_hours": 1}).status == 201
    assert alice.request("POST", "/api/v1/reservations", json={
        "filter": {"agent": "hang"}, "count": 1, "start_date": now + 3 * 3600, "duration_hours": 1}).status == 201


def test_administrators_see_end_and_move_reservations_and_owners_are_told(bed, api):
    admin, alice, bob = api[ADMIN], api[ALICE], api[BOB]
    start = int(time.time()) + 20 * 3600
    assert bob.request("POST", "/api/v1/reservations", json={
        "filter": {"type": "sensor"}, "count": 1, "start_date": start, "duration_hours": 1}).status == 201
    [mine] = [r for r in bob.get("/api/v1/reservations").json() if r["start_date"] == start]
    listed = admin.get(f"/api/v1/admin/reservations?owner={BOB}&node={mine['node_name']}").json()
    assert [(r["node_name"], r["owner"], r["status"]) for r in listed] == [(mine["node_name"], BOB, "configuring")]
    assert admin.get("/api/v1/admin/reservations?status=nonsense").status == 400
    assert admin.get("/api/v1/admin/reservations?stat=ended").status == 400  # a misspelt parameter
    assert alice.get("/api/v1/admin/reservations").status == 403

    moved = admin.request("POST", f"/api/v1/admin/reservations/{mine['node_name']}/{BOB}/move", json={})
    assert moved.status == 200, moved.text
    target = moved.json()["node_name"]
    assert target != mine["node_name"] and moved.json()["start_date"] == start
    # The owner's manage page says what happened.
    page = Client(bed.url)
    page.login(BOB)
    live = {r["node_name"]: r for r in page.get("/manage/live").json()["reservations"]}
    assert live[target]["notice"].startswith(f"moved here from node {mine['node_name']} by an administrator")
    assert f"moved here from node {mine['node_name']}" in page.get("/manage").text

    admin_page = Client(bed.url)
    admin_page.login(ADMIN)
    listing = admin_page.get(f"/admin/reservations?owner={BOB}").text
    assert f'data-node="{target}" data-owner="{BOB}"' in listing
    ended = admin_page.post("/admin/reservations", {"op": "end", "node": target, "owner": BOB})
    assert ended.status == 303
    assert all(r["node_name"] != target for r in bob.get("/api/v1/reservations").json())
    history = page.get("/history").text
    assert f'data-node="{target}" data-ended="cancelled"' in history and "ended by an administrator" in history
    assert f'data-node="{target}"' in admin_page.get("/admin/reservations?state=ended").text
