"""A wall clock jump as administrators see it: the banner with its confirm button, the JSON API
and /metrics (the pause itself is tested in tests/controller/test_clock.py)."""

from __future__ import annotations

import re
import time

import pytest

from tests.web.conftest import ADMIN, ALICE, client_for
from tests.web.harness import Testbed

HOUR = 3600


class JumpingClock:
    """The real wall clock plus an offset a test sets: someone ran `date -s`."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def jumping():
    wall = JumpingClock()
    return wall


@pytest.fixture(scope="module")
def clock_testbed(tmp_path_factory, jumping):
    bed = Testbed(tmp_path_factory.mktemp("clock"), wall_clock=jumping).start()
    try:
        bed.create_user(ADMIN, admin=True)
        bed.create_user(ALICE)
        yield bed
        assert not bed.server_errors, "\n\n".join(bed.server_errors)
    finally:
        bed.stop()


def _wait_paused(api, wanted: bool) -> dict:
    deadline = time.monotonic() + 10
    while True:
        status = api.get("/api/v1/admin/clock").json()
        if status["paused"] is wanted:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


@pytest.mark.slow
def test_administrators_see_the_clock_jump_banner_and_confirm_the_time(clock_testbed, jumping):
    bed = clock_testbed
    admin, alice = client_for(bed, ADMIN), client_for(bed, ALICE)
    api = client_for(bed)
    api.token = bed.api_token(ADMIN)
    alice_api = client_for(bed)
    alice_api.token = bed.api_token(ALICE)
    assert "clock-banner" not in admin.get("/admin/users").text
    assert "edgebed_clock_paused 0\n" in admin.get("/metrics").text

    jumping.offset += 3 * HOUR
    status = _wait_paused(api, True)
    assert 3 * HOUR - 5 < status["offset_seconds"] < 3 * HOUR + 5 and status["max_jump_seconds"] == 120
    page = admin.get("/admin/users").text
    banner = re.search(r'<form class="flash flash-error clock-banner".*?</form>', page, re.S)
    assert banner, page[:2000]
    assert "The wall clock jumped +1080" in banner.group(0)  # +10800 s, give or take a second
    assert 'action="/admin/clock/confirm"' in banner.group(0) and 'name="csrf_token"' in banner.group(0)
    assert "clock-banner" not in alice.get("/reserve").text  # only administrators see it
    assert "edgebed_clock_paused 1\n" in admin.get("/metrics").text

    # The button is a form post: without the session's CSRF token it is refused.
    assert admin.post("/admin/clock/confirm", {"next": "/admin/users"}, csrf=False).status == 403
    assert alice.post("/admin/clock/confirm", {"next": "/reserve"}).status == 403
    _wait_paused(api, True)
    confirmed = admin.post("/admin/clock/confirm", {"next": "/admin/agents"})
    assert (confirmed.status, confirmed.location) == (303, "/admin/agents")
    after = admin.get("/admin/agents").text
    assert "clock-banner" not in after and "Clock confirmed" in after
    assert _wait_paused(api, False)["paused_since"] is None

    # The same through the JSON API, administrators only.
    jumping.offset -= 3 * HOUR
    _wait_paused(api, True)
    assert alice_api.request("POST", "/api/v1/admin/clock/confirm").status == 403
    answer = api.request("POST", "/api/v1/admin/clock/confirm")
    assert answer.status == 200 and answer.json()["paused"] is False
    assert "edgebed_clock_paused 0\n" in admin.get("/metrics").text
