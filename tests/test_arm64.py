"""The agent installs on a 64-bit Raspberry Pi from wheels alone: scripts/check-arm64 downloads
every dependency for CPython 3.11 on aarch64 (manylinux, glibc <= 2.36) with
`--only-binary=:all:`.

The download takes a minute or more (60 MB from the package registry), so the test is marked
`arm64` and deselected by default (pyproject's addopts `-m "not arm64"`): run it with
`./scripts/test -m arm64`, or run `scripts/check-arm64` itself. The wheel-name check below is fast
and always runs.

`scripts/check-arm64 --emulate` installs and runs the agent in an emulated arm64 Debian bookworm
(qemu-user, a few minutes); its test is marked `arm64` too, and needs root, mmdebstrap and
qemu-user-static: without them it skips naming what is missing (fails under CI=true)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import component_missing
from tests.processes import REPO

SCRIPT = REPO / "scripts" / "check-arm64"


def _script():
    loader = importlib.machinery.SourceFileLoader("check_arm64", str(SCRIPT))
    spec = importlib.util.spec_from_loader("check_arm64", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize(("name", "pi"), [
    ("grpcio-1.85.1-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl", True),
    ("protobuf-7.36.2-cp310-abi3-manylinux2014_aarch64.whl", True),
    ("peewee-4.5.3-py3-none-any.whl", True),
    ("grpcio-1.85.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", False),
    ("cffi-2.1.1-cp311-cp311-musllinux_1_1_aarch64.whl", False),
    ("peewee-3.17.0.tar.gz", False),
])
def test_which_files_a_64_bit_pi_installs(name, pi) -> None:
    assert _script().is_pi_wheel(name) is pi


def test_emulation_names_each_missing_tool_and_how_to_get_it(monkeypatch) -> None:
    module = _script()
    monkeypatch.setattr(module.shutil, "which", lambda name: None)
    missing = module.missing_tools(native=False)
    assert any(item.startswith("mmdebstrap") and "apt-get install mmdebstrap" in item for item in missing)
    assert any(item.startswith("qemu-aarch64-static") and "qemu-user-static" in item for item in missing)
    assert not any(item.startswith("qemu") for item in module.missing_tools(native=True))


def test_the_check_reads_the_dependencies_pyproject_lists() -> None:
    wanted = _script().requirements()
    assert any(item.startswith("grpcio==") for item in wanted)
    assert any(item.startswith("asyncssh") for item in wanted) and any(item.startswith("pysnmp") for item in wanted)


@pytest.mark.slow
@pytest.mark.arm64
def test_every_dependency_has_a_wheel_for_a_64_bit_pi(tmp_path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--keep", str(tmp_path / "wheels")],
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode == 2:
        component_missing(f"the package registry ({done.stderr.strip()})")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "all installable" in done.stdout
    wheels = {path.name.split("-")[0].lower() for path in (tmp_path / "wheels").iterdir()}
    assert {"grpcio", "protobuf", "cryptography", "asyncssh", "pysnmp", "peewee"} <= wheels
    print(done.stdout.splitlines()[-1])


@pytest.mark.slow
@pytest.mark.arm64
@pytest.mark.timeout(1800)
def test_the_agent_installs_and_runs_on_emulated_arm64() -> None:
    cache = REPO / "build" / "arm64-emulate"
    done = subprocess.run([sys.executable, str(SCRIPT), "--emulate", "--cache", str(cache)],
                          capture_output=True, text=True, timeout=1500, check=False)
    if done.returncode in (2, 3):
        component_missing(f"what the emulation needs ({done.stderr.strip()})")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "usage: edgebed agent" in done.stdout
    assert "aarch64: python 3.11" in done.stdout and "a server started on 127.0.0.1:" in done.stdout
    print(done.stdout)
