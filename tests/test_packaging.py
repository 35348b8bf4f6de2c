"""The distribution installs one import namespace, `edgebed`, and nothing else at the top.

Built as a user's `pip install .` builds it (a wheel from the source tree), then installed into a
folder of its own: the wheel's top-level names, and what `import` finds from that folder, are the
facts a clash with another distribution would come from.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (built,) = out.glob("edgebed-*.whl")
    return built


def test_the_wheel_holds_only_the_edgebed_namespace(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        top = {name.split("/", 1)[0] for name in names}
        dist_info = next(name for name in top if name.endswith(".dist-info"))
        top_level = archive.read(f"{dist_info}/top_level.txt").decode().split()
    assert top == {"edgebed", dist_info}
    assert top_level == ["edgebed"]
    # The moved folders land inside the namespace, with the web package's data files.
    for inside in (
        "edgebed/agent/executor.py",
        "edgebed/controller/scheduler.py",
        "edgebed/web/app.py",
        "edgebed/web/templates/base.html",
        "edgebed/web/static/edgebed.css",
        "edgebed/nodetypes/base.py",
        "edgebed/v1/agent_pb2.py",
    ):
        assert inside in names, inside


def test_installed_it_imports_as_edgebed_and_never_as_agent(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()

    def python(code: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60
        )

    for old_name in ("agent", "controller", "web", "nodetypes"):
        result = python(f"import {old_name}")
        assert result.returncode != 0, f"import {old_name} succeeded"
        assert f"No module named '{old_name}'" in result.stderr

    found = python(
        "import edgebed.agent.executor, edgebed.controller.scheduler, edgebed.web.app, edgebed.nodetypes;"
        "print(edgebed.agent.executor.__file__); print(edgebed.web.app.__file__)"
    )
    assert found.returncode == 0, found.stderr
    assert all(line.startswith(str(target)) for line in found.stdout.split()), found.stdout
