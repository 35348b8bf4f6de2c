"""Fixtures of the web tests: simulated agents, the testbed (controller + web server), clients."""

from __future__ import annotations

import pytest

from tests.processes import start_agents, stop_all
from tests.web.harness import Client, Testbed

ADMIN = "admin@example.org"
ALICE = "alice@example.org"
BOB = "bob@example.org"


@pytest.fixture(scope="module")
def sim_agents(tmp_path_factory):
    """Three real agents with the sim driver; durations shrunk so a deploy takes a few seconds."""
    agents = start_agents(
        tmp_path_factory.mktemp("agents"),
        [("rpi", "raspberry", 4), ("srv", "node", 3), ("sens", "sensor", 3)],
        time_scale=0.002,
    )
    yield agents
    stop_all(agents)


@pytest.fixture(scope="module")
def testbed(tmp_path_factory, sim_agents):
    """The controller and web server with an admin and two authorized users, agents registered."""
    bed = Testbed(tmp_path_factory.mktemp("controller")).start()
    try:
        bed.create_user(ADMIN, admin=True)
        bed.create_user(ALICE)
        bed.create_user(BOB)
        bed.register_agents(ADMIN, sim_agents)
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
