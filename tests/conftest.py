"""Fixtures shared by every side's tests. Side-specific ones live in tests/<side>/conftest.py."""

from __future__ import annotations

import os
import socket

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


# The hardware lab's fixtures (`lab`, `session_lab`), for tests/lab and tests/agent/real alike; at
# the end, since tests.labs imports component_missing from here.
from tests.labs import lab, session_lab  # noqa: E402, F401
