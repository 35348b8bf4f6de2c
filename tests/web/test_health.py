"""Node health on the administrators' nodes page and at /metrics, over HTTP, with outcomes
recorded in the controller's store and a fake agent holding the nodes."""

from __future__ import annotations

import re

import pytest

from edgebed.controller.domain import NodeOutcome
from tests.controller.fake_agent import FakeAgent, ServedAgent
from tests.web.conftest import ADMIN, ALICE, client_for
from tests.web.harness import Testbed


def _outcome(node: str, action_id: int, final_state: str, reboots: int) -> NodeOutcome:
    return NodeOutcome(
        node_name=node, type="raspberry", process="deploy", environment="raspios-lite", final_state=final_state,
        action_id=action_id, duration_seconds=300.0, reboots=reboots, finished_at=1_800_000_000,
    )


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    served = ServedAgent(FakeAgent("rpi", nodes=3))
    bed = Testbed(tmp_path_factory.mktemp("health")).start()
    try:
        bed.create_user(ADMIN, admin=True)
        bed.create_user(ALICE)
        admin = bed.call(bed.controller.accounts.get_user(ADMIN))
        agents = bed.controller.agents
        bed.call(agents.add_agent(admin, "rpi", "raspberry", "127.0.0.1", served.port, served.fake.token))
        bed.call(bed.controller.store.health.record_outcomes(
            [_outcome("rpi-000", 1, "deployed", 0), _outcome("rpi-000", 2, "deployed", 0),
             _outcome("rpi-001", 3, "deployed", 2), _outcome("rpi-001", 4, "lost", 5)],
            recorded_at=1, keep=20,
        ))
        yield bed
        assert not bed.server_errors, "\n\n".join(bed.server_errors)
    finally:
        bed.stop()
        served.stop()


def _health_cell(page: str, node: str) -> str:
    row = re.search(rf'<tr data-node="{node}">(.*?)</tr>', page, re.S)
    assert row, f"no row for {node}"
    cell = re.search(r'<td class="health">(.*?)</td>', row.group(1), re.S)
    assert cell, f"no health cell for {node}"
    return " ".join(cell.group(1).split())


def test_the_nodes_page_shows_each_nodes_health(bed):
    page = client_for(bed, ADMIN).get("/admin/nodes")
    assert page.status == 200
    healthy = _health_cell(page.text, "rpi-000")
    assert "100% ok" in healthy and "2 actions" in healthy and "0 reboots/action" in healthy
    assert 'class="badge ok"' in healthy
    shaky = _health_cell(page.text, "rpi-001")
    assert "50% ok" in shaky and "2 actions" in shaky and "3.5 reboots/action" in shaky
    assert 'class="badge warn"' in shaky
    assert "no action yet" in _health_cell(page.text, "rpi-002")


def test_the_nodes_page_stays_for_administrators(bed):
    assert client_for(bed, ALICE).get("/admin/nodes").status == 403


def test_metrics_export_the_health_without_a_login(bed):
    text = client_for(bed).get("/metrics").text
    assert 'edgebed_node_success_ratio{node="rpi-001"} 0.5' in text
    assert 'edgebed_node_reboots_per_action{node="rpi-001"} 3.5' in text
    assert 'edgebed_node_actions_recorded{node="rpi-000"} 2' in text
