"""Fixtures of the web tests: the testbed (controller + web server + simulated agents), clients,
and a browser."""

from __future__ import annotations

import os

import pytest

from tests.conftest import component_missing
from tests.web.harness import Client, Testbed

ADMIN = "admin@example.org"
ALICE = "alice@example.org"
BOB = "bob@example.org"


# The agents of the web tests: raspberry, node and sensor, durations shrunk so a deploy takes a
# few seconds.
SIM_AGENTS = [("rpi", "raspberry", 4), ("srv", "node", 3), ("sens", "sensor", 3)]


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright's sync API, once per module. Give each test its own
    `browser.new_context(...)` and close it: contexts share no cookies, storage or pages.

    Not per session: while Playwright's sync API is open, its event loop counts as running in
    the main thread, and every asyncio test of another module run meanwhile would fail."""
    if not os.path.exists(CHROMIUM):
        component_missing("Chromium (/usr/bin/chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        component_missing("Playwright for Python")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    """The controller and web server with an admin and two authorized users, and three real
    agents (gRPC on loopback, sim driver) served from the testbed's loop, registered."""
    bed = Testbed(tmp_path_factory.mktemp("controller")).start()
    try:
        bed.create_user(ADMIN, admin=True)
        bed.create_user(ALICE)
        bed.create_user(BOB)
        bed.register_agents(ADMIN, bed.start_agents(SIM_AGENTS, time_scale=0.002))
        yield bed
        assert not bed.server_errors, "\n\n".join(bed.server_errors)
    finally:
        bed.stop()


@pytest.fixture(scope="module")
def accounts_testbed(tmp_path_factory):
    """A testbed without agents, for what only concerns accounts."""
    bed = Testbed(tmp_path_factory.mktemp("accounts")).start()
    try:
        bed.create_user(ADMIN, admin=True)
        yield bed
        assert not bed.server_errors, "\n\n".join(bed.server_errors)
    finally:
        bed.stop()


def client_for(bed: Testbed, email: str | None = None) -> Client:
    client = Client(bed.url)
    if email is not None:
        client.login(email)
    return client
