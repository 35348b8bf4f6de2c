"""`edgebed controller --role web` and `--role scheduler` on one database: a reservation made
through the web process deploys through the scheduler process; the web process never polls
(its /metrics counts no poll), the scheduler serves nothing but /metrics."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import free_port
from tests.controller.conftest import controller_for, make_settings
from tests.controller.fake_agent import FakeAgent, ServedAgent
from tests.processes import CommandProcess, start_all, stop_all, write_toml

pytestmark = pytest.mark.slow

SCHEDULER_READY = re.compile(r"^edgebed controller scheduler running; /metrics on http://(\S+):(\d+)$")


class WebProcess(CommandProcess):
    port = 0

    def wait_ready(self, timeout: float = 30.0) -> WebProcess:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2):
                    return self
            except OSError:
                if time.monotonic() > deadline or not self.running:
                    raise AssertionError(f"the web process did not serve /metrics:\n{self.log()[-3000:]}") from None
                time.sleep(0.1)


class SchedulerProcess(CommandProcess):
    def wait_ready(self, timeout: float = 30.0) -> SchedulerProcess:
        self.wait_output(SCHEDULER_READY, timeout=timeout)
        return self


def _call(url: str, token: str = "", method: str = "GET", body: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _polls(metrics: str) -> int:
    [line] = [line for line in metrics.splitlines() if line.startswith("edgebed_scheduler_polls_total ")]
    return int(line.split()[1])


@pytest.fixture
def served():
    agent = ServedAgent(FakeAgent("rpi", nodes=2))
    yield agent
    agent.stop()


def test_a_web_and_a_scheduler_process_deploy_a_reservation_together(tmp_path, served):
    web_port = free_port()
    settings = make_settings(tmp_path, listen=f"127.0.0.1:{web_port}")

    async def prepare() -> str:
        async with controller_for(settings) as ctl:
            admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
            await ctl.agents.add_agent(admin, "rpi", "raspberry", "127.0.0.1", served.port, served.fake.token)
            await ctl.accounts.create_user("alice@example.org", "user-password", authorized=True)
            return await ctl.accounts.create_api_token("alice@example.org", "roles test")

    token = asyncio.run(prepare())
    config = write_toml(
        tmp_path / "controller.toml",
        {
            "listen": settings.listen,
            "database": settings.database,
            "secret_key_file": settings.secret_key_file,
            "scheduler": {"poll_seconds": 0.2, "metrics_listen": "127.0.0.1:0"},
            "reservations": {"turnaround_seconds": 0},
        },
    )
    web = WebProcess(tmp_path, "web", "controller", "--role", "web", "--config", str(config))
    web.port = web_port
    scheduler = SchedulerProcess(tmp_path, "scheduler", "controller", "--role", "scheduler", "--config", str(config))
    start_all([web, scheduler])
    try:
        [ready] = scheduler.wait_output(SCHEDULER_READY)
        metrics_url = f"http://{ready.group(1)}:{ready.group(2)}"
        base = f"http://127.0.0.1:{web_port}/api/v1"
        status, text = _call(f"{base}/reservations", token, "POST", {
            "nodes": ["rpi-000"], "start_date": int(time.time()), "duration_hours": 1,
        })
        assert status == 201, text
        status, text = _call(f"{base}/reservations/rpi-000", token, "PUT", {"environment": "raspios-lite"})
        assert status == 200, text

        deadline = time.monotonic() + 60
        seen = set()
        while True:
            status, text = _call(f"{base}/reservations/rpi-000", token)
            assert status == 200, text
            reservation = json.loads(text)
            seen.add(reservation["action_state"])
            if reservation["action_state"] == "deployed":
                break
            assert time.monotonic() < deadline, f"not deployed: {reservation}\n{scheduler.log()[-2000:]}"
            time.sleep(0.1)
        assert reservation["status"] == "ready" and {"netboot", "deployed"} <= seen
        assert served.fake.started == [("rpi-000", "deploy")]

        # The scheduler polled; the web process did not. The scheduler serves only /metrics.
        status, scheduler_metrics = _call(f"{metrics_url}/metrics")
        assert status == 200 and _polls(scheduler_metrics) > 0
        status, web_metrics = _call(f"http://127.0.0.1:{web_port}/metrics")
        assert status == 200 and _polls(web_metrics) == 0
        # Both show among the controllers (the overview, /metrics): each heartbeats with its role.
        for role in ("web", "scheduler"):
            assert re.search(rf'edgebed_controller_up{{[^}}]*role="{role}"}} 1', web_metrics), web_metrics
        assert _call(f"{metrics_url}/")[0] == 404
        assert _call(f"{metrics_url}/api/v1/reservations", token)[0] == 404
        assert web.running and scheduler.running
    finally:
        stop_all([web, scheduler])
    assert (web.process.returncode, scheduler.process.returncode) == (0, 0)
