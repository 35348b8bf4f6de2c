"""A driver's error reaches the reservation's owner and the administrators: a real agent (sim
driver) whose `partition` command hangs; the step's error, as the agent's action last_error,
arrives through the controller at the JSON API and the manage pages, and nobody else sees it."""

from __future__ import annotations

import html
import time

import pytest

from tests.web.conftest import ADMIN, ALICE, BOB
from tests.web.harness import Client, Testbed

pytestmark = pytest.mark.slow

PASSWORD = "a-secret-os-pass"


@pytest.fixture(scope="module")
def hanging_testbed(tmp_path_factory):
    bed = Testbed(tmp_path_factory.mktemp("action-errors")).start()
    try:
        for email in (ADMIN, ALICE, BOB):
            bed.create_user(email, admin=email == ADMIN)
        bed.register_agents(ADMIN, bed.start_agents([("hang", "raspberry", 1)], time_scale=0.001,
                                                    hang_commands=frozenset({"partition"})))
        yield bed
        assert not bed.server_errors, "\n\n".join(bed.server_errors)
    finally:
        bed.stop()


def test_a_failing_step_says_why_to_the_owner_and_the_admins_only(hanging_testbed):
    bed = hanging_testbed
    alice = Client(bed.url, token=bed.api_token(ALICE))
    admin = Client(bed.url, token=bed.api_token(ADMIN))
    taken = alice.request("POST", "/api/v1/reservations", json={
        "nodes": ["hang-001"], "start_date": int(time.time()), "duration_hours": 1})
    assert taken.status == 201, taken.text
    environment = alice.get("/api/v1/environments").json()["raspberry"][0]["name"]
    configured = alice.request("PUT", "/api/v1/reservations/hang-001", json={
        "environment": environment, "os_password": PASSWORD})
    assert configured.status == 200, configured.text

    # After the partition hangs past before_reboot, the agent power cycles the Pi and tries
    # again before the maintenance system is back: the step fails, and says so at once (the loss
    # itself, 1200 s of the agent's clock later, is the agent's tests' and the lab's to wait for).
    began = time.monotonic()
    deadline = began + 60
    while time.monotonic() < deadline:
        mine = alice.get("/api/v1/reservations/hang-001").json()
        if mine["action_error"]:
            break
        time.sleep(0.1)
    error = mine["action_error"]
    assert mine["action_state"] == "partition", mine
    assert error == "partition: hang-001: no network-booted system answers", mine
    print(f"\nthe error reached the API after {time.monotonic() - began:.1f} s")

    # The administrators see it, on the JSON API and their reservations page; the owner on her
    # manage page; another user sees neither the reservation nor its error.
    [row] = [r for r in admin.get("/api/v1/admin/reservations").json() if r["node_name"] == "hang-001"]
    assert row["action_error"] == error
    page = Client(bed.url)
    page.login(ALICE)
    assert error in html.unescape(page.get("/manage").text)
    admin_page = Client(bed.url)
    admin_page.login(ADMIN)
    assert error in html.unescape(admin_page.get("/admin/reservations").text)
    bob = Client(bed.url)
    bob.login(BOB)
    assert "hang-001" not in bob.get("/manage").text
    assert Client(bed.url, token=bed.api_token(BOB)).get("/api/v1/reservations").json() == []
