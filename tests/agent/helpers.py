"""Helpers for tests that run the agent as a real process."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^edgebed agent (\S+) listening on (\S+):(\d+)$")


def write_config(path: Path, **keys) -> Path:
    sim = keys.pop("sim", {})
    lines = [f"{key} = {_toml(value)}" for key, value in keys.items()]
    if sim:
        lines.append("[sim]")
        lines += [f"{key} = {_toml(value)}" for key, value in sim.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value).lower() if isinstance(value, bool) else repr(value)


def make_pki(folder: Path, *, agent_dns: tuple[str, ...] = ()) -> Path:
    """With edgebed.tls, in `folder`: a CA (ca.pem/key), an agent certificate for 127.0.0.1 (and
    `agent_dns`) (agent.pem/key), a client certificate (controller.pem/key); and in folder/other
    an unrelated CA with a client and an agent certificate of its own."""
    from edgebed.tls import create_ca, issue

    create_ca(folder)
    issue(folder, "agent", ips=["127.0.0.1"], dns=agent_dns)
    issue(folder, "controller", client=True)
    create_ca(folder / "other")
    issue(folder / "other", "controller", client=True)
    issue(folder / "other", "agent", ips=["127.0.0.1"])
    return folder


def edgebed_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgebed.cli", *args]


class AgentProcess:
    """`edgebed agent --config FILE` in a child process; `port` from its ready line."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.log = open(log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEBED_")}
        self.proc = subprocess.Popen(
            edgebed_command("agent", "--config", str(config)),
            stdout=subprocess.PIPE,
            stderr=self.log,
            cwd=ROOT,
            env=env,
        )
        self.port = self._read_port(timeout=20)

    def _read_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1)
                if not chunk:
                    break
                if chunk == b"\n":
                    match = LINE.match(line.decode())
                    if match:
                        return int(match.group(3))
                    line = b""
                else:
                    line += chunk
        self.proc.kill()
        raise AssertionError(f"the agent printed no ready line (exit code {self.proc.poll()})")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.close()

    def terminate(self, timeout: float = 15) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.log.close()
        return code
