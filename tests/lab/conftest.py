"""The hardware lab's tests: real snmpsim, network namespaces, loop devices and sshd (root, Linux).

A missing prerequisite fails the test under CI=true and skips it elsewhere, saying what is missing.
The session's lab (the `lab` fixture, tests/labs.py) serves the module; each test leaves its Pis
powered off.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.labs import require_lab  # noqa: F401  (imported from here)


@pytest.fixture(scope="session")
def user_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key pair of a user of a deployed node (not the agent's): private key path; .pub beside."""
    import subprocess

    key = tmp_path_factory.mktemp("user") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


async def wait_until(predicate, within: float, every: float = 0.2):  # type: ignore[no-untyped-def]
    """Awaits predicate() until it returns a truthy value (returned) or `within` seconds pass
    (then the last value, falsy, is returned)."""
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(every)
