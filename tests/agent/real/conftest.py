"""Fixtures the real drivers' end-to-end tests share (the raspberry and the server lab tests)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def user_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A user's own key pair (not the agent's), one per test module: private key path, public
    key line."""
    folder = tmp_path_factory.mktemp("user")
    key = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "user@lab", "-f", str(key)],
                   check=True)
    return key, (folder / "id_ed25519.pub").read_text().strip()
