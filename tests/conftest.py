"""Fixtures shared by every side's tests. Side-specific ones live in tests/<side>/conftest.py."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.xdist_plan import pytest_collection_modifyitems, pytest_xdist_make_scheduler  # noqa: F401


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def component_missing(what: str) -> None:
    """A test needs `what` and it is absent: a failure in CI, a skip on a developer's machine."""
    message = f"{what} is not available"
    if running_in_ci():
        pytest.fail(message + " (CI=true: a missing component fails the run)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago, for a child process's config file."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmallDisk:
    """A tmpfs of a few MiB mounted for one test: a disk that a test fills up and frees again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._filler = path / "filler"

    def fill(self) -> None:
        """Takes every free block (the filler file grows until ENOSPC)."""
        block = b"\xff" * 65536
        # Unbuffered: a buffered file would fail in close() with the bytes it could not write.
        with self._filler.open("ab", buffering=0) as out:
            while True:
                try:
                    if not out.write(block):
                        break
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
        assert os.statvfs(self.path).f_bavail == 0

    def free(self) -> None:
        """Gives the filler's blocks back."""
        self._filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path) -> Iterator[SmallDisk]:
    """A 16 MiB tmpfs under tmp_path (mounting needs root: a missing component otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        component_missing("mounting a small tmpfs (root and mount(8))")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        component_missing(f"mounting a small tmpfs ({result.stderr.strip()})")
    try:
        yield SmallDisk(mount)
    finally:
        # Lazy: a process the test left behind still holding a file must not fail the unmount.
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)


# The hardware lab's fixtures (`lab`, `session_lab`), for tests/lab and tests/agent/real alike; at
# the end, since tests.labs imports component_missing from here.
from tests.labs import lab, session_lab  # noqa: E402, F401
from tests.postgres import postgres_server, postgres_url  # noqa: E402, F401
