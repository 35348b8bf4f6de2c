"""`edgebed demo`: one command gives a controller with three connected simulated agents and an
admin account; a second run reuses the same data."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import free_port
from tests.processes import CommandProcess, edgebed_command
from tests.web.harness import Client

# Slow: `edgebed demo` starts a controller and three agents, twice.
pytestmark = pytest.mark.slow

LINE = re.compile(r"^(url|admin|password|api-token|config): (.+)$")
AGENT_LINE = re.compile(r"^agent: (\S+) (raspberry|node|sensor) (127\.0\.0\.1:\d+)$")


def start_demo(directory, port: int, data_dir) -> tuple[CommandProcess, dict[str, str]]:
    demo = CommandProcess(directory, "demo", "demo", "--port", str(port), "--data-dir", str(data_dir))
    demo.spawn()
    try:
        matches = demo.wait_output(LINE, count=5, timeout=60)
        agents = demo.wait_output(AGENT_LINE, count=3, timeout=5)
    except BaseException:
        demo.kill()
        raise
    printed = {m.group(1): m.group(2) for m in matches}
    printed["agents"] = " ".join(m.group(0) for m in agents)
    return demo, printed


def test_demo_starts_a_working_testbed_and_reuses_its_data(tmp_path):
    port = free_port()
    data_dir = tmp_path / "demo"
    process, printed = start_demo(tmp_path, port, data_dir)
    try:
        assert printed["url"] == f"http://127.0.0.1:{port}"
        client = Client(printed["url"])
        client.login(printed["admin"], printed["password"])
        agents_page = client.get("/admin/agents").text
        assert agents_page.count('class="badge ok">Connected') == 3, agents_page
        nodes = client.get("/reserve").text
        assert "raspberry-sim-001" in nodes and "node-sim-001" in nodes and "sensor-sim-001" in nodes

        # The printed API token works; the agents' addresses are theirs, their tokens in files.
        api = Client(printed["url"], token=printed["api-token"])
        assert len(api.get("/api/v1/nodes").json()) == 18
        agents = {a["name"]: a for a in api.get("/api/v1/admin/agents").json()}
        for line in printed["agents"].split("agent: ")[1:]:
            name, agent_type, address = line.split()
            assert (agents[name]["type"], f"{agents[name]['ip']}:{agents[name]['port']}") == (agent_type, address)
            token = (data_dir / "agents" / f"{name}.token").read_text().strip()
            assert token and (data_dir / "agents" / f"{name}.token").stat().st_mode & 0o077 == 0
        # The written configuration is the running demo's: an admin command sees its accounts.
        assert printed["config"] == str(data_dir / "controller.toml")
        made = subprocess.run(
            edgebed_command("admin", "api-token", printed["admin"], "--config", printed["config"]),
            capture_output=True, text=True, timeout=60,
        )
        assert made.returncode == 0, made.stderr
        assert Client(printed["url"], token=made.stdout.strip()).get("/api/v1/reservations").status == 200
    finally:
        assert process.interrupt() == 0

    again, printed_again = start_demo(tmp_path, port, data_dir)
    try:
        assert printed_again == printed
        client = Client(printed_again["url"])
        client.login(printed_again["admin"], printed_again["password"])
        assert client.get("/admin/agents").text.count('class="badge ok">Connected') == 3
    finally:
        assert again.interrupt() == 0


def test_demo_refuses_a_bad_port_with_one_line():
    result = subprocess.run(
        edgebed_command("demo", "--port", "70000"),
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["edgebed: --port must be between 1 and 65535, got 70000"]
