"""The controller's database on a disk that fills up (a small tmpfs): writes answer 503 saying the
disk is full, logged once a minute; reads go on; nothing committed is lost, and everything works
again once there is space."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

from tests.web.conftest import ADMIN, ALICE, client_for
from tests.web.harness import PASSWORD, Client, Testbed

pytestmark = pytest.mark.slow


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}" + ("\nTraceback" if record.exc_info else ""))


def _checkpoint(database: Path) -> None:
    """Empties the WAL into the database file and truncates it: on a full disk, the controller's
    very next write needs a block it cannot have."""
    connection = sqlite3.connect(database, timeout=10)
    try:
        while connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] != 0:
            time.sleep(0.01)
    finally:
        connection.close()


def _wait(condition, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return result


def test_a_full_disk_answers_503_logs_once_a_minute_and_loses_nothing(tmp_path, small_disk):
    database = small_disk.path / "controller.sqlite"
    bed = Testbed(tmp_path / "controller", database=str(database))
    lines = _Lines()
    for name in ("edgebed.controller", "edgebed.web"):
        logging.getLogger(name).addHandler(lines)
    try:
        bed.start()
        bed.create_user(ADMIN, admin=True)
        bed.create_user(ALICE)
        # Agents in the testbed's folder, off the small disk: only the controller's is full.
        bed.register_agents(ADMIN, bed.start_agents([("rpi", "raspberry", 2)], time_scale=0.002))
        admin_api = Client(bed.url, token=bed.api_token(ADMIN))
        alice_api = Client(bed.url, token=bed.api_token(ALICE))
        admin_page = client_for(bed, ADMIN)
        environment = alice_api.get("/api/v1/environments").json()["raspberry"][0]["name"]
        assert admin_api.request("POST", "/api/v1/admin/users", json={
            "email": "before@example.org", "password": PASSWORD}).status == 201

        # A reservation the scheduler must start while the disk is full.
        waiting = alice_api.request("POST", "/api/v1/reservations", json={
            "nodes": ["rpi-002"], "start_date": int(time.time()) + 1, "duration_hours": 1})
        assert waiting.status == 201, waiting.text
        assert alice_api.request("PUT", "/api/v1/reservations/rpi-002", json={"environment": environment}).status == 200

        _checkpoint(database)
        small_disk.fill()
        full = f"the disk holding {database} is full: nothing was saved; free some space there and try again"

        answer = admin_api.request("POST", "/api/v1/admin/users", json={
            "email": "during@example.org", "password": PASSWORD})
        assert (answer.status, answer.json(), answer.headers["Retry-After"]) == (503, {"error": full}, "60")
        answer = alice_api.request("POST", "/api/v1/reservations", json={
            "nodes": ["rpi-001"], "start_date": int(time.time()), "duration_hours": 1})
        assert (answer.status, answer.json()) == (503, {"error": full})
        page = admin_page.post("/admin/users/create", {"email": "form@example.org", "password": PASSWORD})
        # The form is drawn again with the message (or the error page, titled "Disk full").
        assert page.status == 503 and page.headers["Content-Type"].startswith("text/html")
        assert full in page.text and page.headers["Retry-After"] == "60"
        # Reads go on.
        users = admin_api.get("/api/v1/admin/users")
        assert users.status == 200 and "before@example.org" in {u["email"] for u in users.json()}
        time.sleep(2)  # ten scheduler polls and more requests, all while the disk is full
        assert alice_api.get("/api/v1/reservations/rpi-002").json()["action_state"] == ""  # not started
        for _ in range(10):
            assert admin_api.request("POST", "/api/v1/admin/users", json={
                "email": "again@example.org", "password": PASSWORD}).status == 503
        full_lines = [line for line in lines.lines if "is full" in line]
        assert full_lines == [f"edgebed.controller.store.engine: the disk holding {database} is full: "
                              "writes fail until there is space again"], lines.lines
        assert not [line for line in lines.lines if "Traceback" in line], lines.lines
        assert not bed.server_errors

        small_disk.free()
        assert admin_api.request("POST", "/api/v1/admin/users", json={
            "email": "after@example.org", "password": PASSWORD}).status == 201
        reserved = alice_api.request("POST", "/api/v1/reservations", json={
            "nodes": ["rpi-001"], "start_date": int(time.time()), "duration_hours": 1})
        assert reserved.status == 201, reserved.text
        assert alice_api.request("PUT", "/api/v1/reservations/rpi-001", json={"environment": environment}).status == 200
        for node in ("rpi-001", "rpi-002"):
            _wait(lambda node=node: alice_api.get(f"/api/v1/reservations/{node}").json()["action_state"] == "deployed",
                  f"the deploy of {node} after the disk had space again")
        emails = {u["email"] for u in admin_api.get("/api/v1/admin/users").json()}
        # Everything committed before is there; nothing refused was half written.
        assert {ADMIN, ALICE, "before@example.org", "after@example.org"} == emails
        assert not bed.server_errors
    finally:
        for name in ("edgebed.controller", "edgebed.web"):
            logging.getLogger(name).removeHandler(lines)
        if bed.app is not None:
            bed.stop()
