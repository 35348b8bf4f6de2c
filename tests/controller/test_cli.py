"""`edgebed admin ...` and `edgebed controller` as subprocesses: output, exit codes, and one-line
messages on bad input."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from edgebed.controller.settings import load_settings
from tests.conftest import free_port
from tests.controller.conftest import controller_for
from tests.processes import REPO, CommandProcess, child_environment, edgebed_command

# Slow: every test runs `edgebed` as child processes (about 1 s of start-up each).
pytestmark = pytest.mark.slow


def write_config(tmp_path: Path, **extra: str) -> Path:
    config = tmp_path / "controller.toml"
    lines = {
        "listen": f'"127.0.0.1:{free_port()}"',
        "database": f'"{tmp_path / "var" / "controller.sqlite"}"',
        "secret_key_file": f'"{tmp_path / "var" / "secret.key"}"',
    }
    lines.update(extra)
    config.write_text("".join(f"{k} = {v}\n" for k, v in lines.items() if v is not None), encoding="utf-8")
    return config


def edgebed(*args: str, stdin: str | None = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        edgebed_command(*args),
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=child_environment(),
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


async def test_create_user_reads_the_password_from_stdin_or_generates_one(tmp_path):
    config = write_config(tmp_path)
    result = edgebed("admin", "create-user", "Root@Example.org", "--admin", "--authorized", "--config", str(config), stdin="a-long-password\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "created user root@example.org (admin, authorized)\n"

    result = edgebed("admin", "create-user", "new@example.org", "--config", str(config), stdin="")
    assert result.returncode == 0, result.stderr
    created, password_line = result.stdout.splitlines()
    assert created == "created user new@example.org"
    generated = password_line.removeprefix("password: ")
    assert len(generated) >= 12

    async with controller_for(load_settings(config)) as ctl:
        root = await ctl.accounts.authenticate("root@example.org", "a-long-password")
        assert root.is_admin and root.is_authorized
        await ctl.accounts.set_authorized(root, "new@example.org", True)
        assert (await ctl.accounts.authenticate("new@example.org", generated)).email == "new@example.org"

    line = one_line_error(edgebed("admin", "create-user", "root@example.org", "--config", str(config), stdin="another-password\n"))
    assert line == "edgebed: an account with the email root@example.org already exists"
    line = one_line_error(edgebed("admin", "create-user", "not-an-email", "--config", str(config), stdin="a-long-password\n"))
    assert line == "edgebed: the email address is malformed"
    line = one_line_error(edgebed("admin", "create-user", "x@example.org", "--config", str(config), stdin="short\n"))
    assert line == "edgebed: the password must have at least 8 characters"


async def test_add_agent_registers_it_connected_or_disconnected_and_api_token_prints_one(tmp_path, fake_agents):
    config = write_config(tmp_path)
    token_file = tmp_path / "agent.token"
    served = fake_agents("rpi", nodes=3)
    token_file.write_text(served.fake.token + "\n")
    result = edgebed("admin", "add-agent", "rpi", "--type", "raspberry", "--ip", "127.0.0.1", "--port", str(served.port), "--token-file", str(token_file), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "agent rpi added: connected (3 nodes)\n"

    silent = free_port()
    result = edgebed("admin", "add-agent", "gone", "--type", "node", "--ip", "127.0.0.1", "--port", str(silent), "--token-file", str(token_file), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("agent gone added: disconnected (unavailable: ")

    line = one_line_error(edgebed("admin", "add-agent", "rpi", "--type", "raspberry", "--ip", "127.0.0.1", "--port", "1", "--token-file", str(token_file), "--config", str(config)))
    assert line == "edgebed: an agent named rpi already exists"
    line = one_line_error(edgebed("admin", "add-agent", "x", "--type", "sensor", "--ip", "127.0.0.1", "--port", "70000", "--token-file", str(token_file), "--config", str(config)))
    assert line == "edgebed: the agent port must be a number between 1 and 65535"
    line = one_line_error(edgebed("admin", "add-agent", "x", "--type", "sensor", "--ip", "127.0.0.1", "--port", "5", "--token-file", str(tmp_path / "missing"), "--config", str(config)))
    assert line == f"edgebed: --token-file {tmp_path / 'missing'}: no such file"

    assert edgebed("admin", "create-user", "user@example.org", "--authorized", "--config", str(config), stdin="user-password\n").returncode == 0
    result = edgebed("admin", "api-token", "user@example.org", "--config", str(config))
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("edgebed_") and len(secret) > 40
    line = one_line_error(edgebed("admin", "api-token", "nobody@example.org", "--config", str(config)))
    assert line == "edgebed: no user with the email nobody@example.org"

    async with controller_for(load_settings(config)) as ctl:
        assert (await ctl.accounts.user_for_api_token(secret)).email == "user@example.org"
        admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
        agents = {a.name: (a.status, a.node_count) for a in await ctl.agents.list_agents(admin)}
        assert agents == {"rpi": ("connected", 3), "gone": ("disconnected", 0)}


def test_bad_configuration_stops_with_one_line_naming_the_key_and_file(tmp_path):
    config = write_config(tmp_path, listen=None)
    line = one_line_error(edgebed("admin", "api-token", "x@example.org", "--config", str(config)))
    assert line == f"edgebed: {config}: key 'listen' is missing"
    config = write_config(tmp_path, database='"mysql://db/edgebed"')
    line = one_line_error(edgebed("controller", "--config", str(config)))
    assert line.startswith(f"edgebed: {config}: key 'database' must be a file path, sqlite:///PATH or postgresql://")
    config = write_config(tmp_path, database=f'"postgresql://edgebed:pw@127.0.0.1:{free_port()}/edgebed"')
    line = one_line_error(edgebed("controller", "--config", str(config)))
    assert line.startswith("edgebed: database postgresql://edgebed:***@127.0.0.1:")
    assert "cannot open" in line and ":pw@" not in line
    line = one_line_error(edgebed("controller", "--config", str(tmp_path / "nope.toml")))
    assert line == f"edgebed: {tmp_path / 'nope.toml'}: no such configuration file"


def test_edgebed_controller_serves_the_web_application_on_listen(tmp_path):
    if not (REPO / "web" / "app.py").exists():
        pytest.fail("web/app.py is missing: `edgebed controller` has nothing to serve")
    port = free_port()
    config = write_config(tmp_path, listen=f'"127.0.0.1:{port}"')
    controller = CommandProcess(tmp_path, "controller", "controller", "--config", str(config)).spawn()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    body = response.read().decode()
                break
            except OSError:
                if time.monotonic() > deadline or not controller.running:
                    raise AssertionError(f"the controller did not serve /metrics:\n{controller.log()}") from None
                time.sleep(0.2)
        assert 'edgebed_reservations{status="ready"} 0' in body
        assert "edgebed_scheduler_polls_total" in body
        assert controller.terminate() == 0
    finally:
        controller.stop()
    assert (tmp_path / "var" / "secret.key").stat().st_mode & 0o777 == 0o600
