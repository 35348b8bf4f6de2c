"""`edgebed demo`: one command gives a controller with three connected simulated agents and an
admin account; a second run reuses the same data."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import free_port
from tests.web.harness import Client

LINE = re.compile(r"^(url|admin|password): (.+)$")
# The console script that `pip install` puts next to the interpreter, as a user runs it.
EDGEBED = str(Path(sys.executable).with_name("edgebed"))


def start_demo(port: int, data_dir) -> tuple[subprocess.Popen, dict[str, str]]:
    process = subprocess.Popen(
        [EDGEBED, "demo", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    printed: dict[str, str] = {}
    seen = []
    deadline = time.monotonic() + 60
    while len(printed) < 3 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = LINE.match(line.strip())
        if match:
            printed[match.group(1)] = match.group(2)
    if len(printed) < 3:
        process.kill()
        raise AssertionError("demo did not print its credentials:\n" + "".join(seen))
    return process, printed


def stop_demo(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()


def test_demo_starts_a_working_testbed_and_reuses_its_data(tmp_path):
    port = free_port()
    data_dir = tmp_path / "demo"
    process, printed = start_demo(port, data_dir)
    try:
        assert printed["url"] == f"http://127.0.0.1:{port}"
        client = Client(printed["url"])
        client.login(printed["admin"], printed["password"])
        agents_page = client.get("/admin/agents").text
        assert agents_page.count('class="badge ok">connected') == 3, agents_page
        nodes = client.get("/reserve").text
        assert "raspberry-sim-001" in nodes and "node-sim-001" in nodes and "sensor-sim-001" in nodes
    finally:
        assert stop_demo(process) == 0

    again, printed_again = start_demo(port, data_dir)
    try:
        assert printed_again == printed
        client = Client(printed_again["url"])
        client.login(printed_again["admin"], printed_again["password"])
        assert client.get("/admin/agents").text.count('class="badge ok">connected') == 3
    finally:
        assert stop_demo(again) == 0


def test_demo_refuses_a_bad_port_with_one_line():
    result = subprocess.run(
        [EDGEBED, "demo", "--port", "70000"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["edgebed: --port must be between 1 and 65535, got 70000"]
