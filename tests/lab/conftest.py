"""The hardware lab's tests: real snmpsim, network namespaces, loop devices and sshd (root, Linux).

A missing prerequisite fails the test under CI=true and skips it elsewhere, saying what is missing.
One lab (two Pis) serves the whole module; each test leaves its Pis powered off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.conftest import component_missing


def require_lab() -> None:
    """Fails (CI) or skips (elsewhere) when this machine cannot run a lab."""
    try:
        from edgebed.lab import missing_prerequisites
    except ImportError as error:  # pysnmp absent: the lab module cannot even load
        component_missing(f"the lab's Python packages ({error})")
        return
    missing = missing_prerequisites()
    if missing:
        component_missing("the hardware lab's prerequisites: " + ", ".join(missing))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Lab]:  # noqa: F821
    require_lab()
    from edgebed.lab import Lab

    began = time.monotonic()
    async with Lab(tmp_path_factory.mktemp("lab"), pis=2, boot_delay=0.5, retry_seconds=2.0) as running:
        print(f"\nlab up in {time.monotonic() - began:.2f} s: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in running.timings.items()))
        yield running


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
