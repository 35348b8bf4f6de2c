"""The hardware lab (edgebed.lab, docs/lab.md) for tests: one lab per test session, shared by every
module that needs one.

    pytestmark = [pytest.mark.slow, pytest.mark.lab]

    def test_something(lab):              # a LabDescription: lab.pis[i].ip, lab.switch, ...
        ...

`lab` (module scope) is the session's lab after a reset: every PoE port off, network boot off
for every Pi, every Pi seen powered off. A module leaves its Pis however it likes; the next module
gets them reset. Cards keep their contents (as real cards do): a test that needs a known card
writes it. The lab has LAB_PIS Pis; tests of one module use distinct Pis when they may leave
one on. A test that must own a lab of its own (one it kills, say) starts it with lab_process().

The lab runs in a process of its own (`python -m edgebed.lab up`), so that nothing a test does in
its own event loop slows the lab's firmware. Tests marked `lab` run on one pytest-xdist worker,
one after another (tests/xdist_plan.py), so the session's lab is started once per run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import component_missing
from tests.processes import REPO, LabUp

LAB_PIS = 8
BOOT_DELAY = 0.5
# A dark Pi (nothing to boot) tries again after this many seconds.
RETRY_SECONDS = 2.0


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


@contextmanager
def lab_up(module: str, directory: Path, *args: str, ready_seconds: float, stop_seconds: float,
           down: bool) -> Iterator[LabUp]:
    """`python -m MODULE up --dir DIRECTORY ARGS...` (tests/processes.py's LabUp) until its
    `ready:` line (AssertionError, with its output and log, after `ready_seconds`); yields it.
    Afterwards, also after a failure: SIGTERM, SIGKILL after `stop_seconds`, and with `down`
    `python -m MODULE down --dir DIRECTORY` for what a killed lab left behind."""
    directory.mkdir(parents=True, exist_ok=True)
    up = LabUp(module, directory, *args)
    try:
        # spawn, not start: one that does not come up gets SIGTERM below (start would SIGKILL
        # it, and what it had started would stay).
        up.spawn()
        up.wait_ready(ready_seconds)
        yield up
    finally:
        up.stop(stop_seconds)
        if down:
            subprocess.run([sys.executable, "-m", module, "down", "--dir", str(directory)],
                           cwd=REPO, capture_output=True, check=False, timeout=120)


@contextmanager
def lab_process(directory: Path, pis: int, boot_delay: float = BOOT_DELAY,
                retry_seconds: float | None = None) -> Iterator:
    """`python -m edgebed.lab up` in `directory` until the `ready:` line; yields the
    LabDescription; down afterwards (also after a failure)."""
    require_lab()
    from edgebed.lab.description import LabDescription

    args = ["--pis", str(pis), "--boot-delay", str(boot_delay)]
    if retry_seconds is not None:
        args += ["--retry-seconds", str(retry_seconds)]
    with lab_up("edgebed.lab", directory, *args, ready_seconds=120, stop_seconds=60, down=True):
        yield LabDescription.load(directory.resolve())


def reset(lab, within: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Every PoE port off and every network-boot link removed, then waits until every Pi says it
    is powered off (its processes are gone by then). AssertionError after `within` seconds."""
    oids = []
    for pi in lab.pis:
        oids += [f"{lab.switch.poe_oid}.{pi.switch_port}", "i", "2"]
    done = subprocess.run(["snmpset", "-v2c", "-c", lab.switch.community, "-t", "5", "-r", "2",
                           lab.switch.address, *oids], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"the lab's switch refused the reset: {done.stderr.strip()}"
    for pi in lab.pis:
        link = Path(lab.tftp_root) / pi.serial
        if link.is_symlink() or link.exists():
            link.unlink()
    deadline = time.monotonic() + within
    while True:
        on = [pi.netns for pi in lab.pis if _power(pi) != "off"]
        if not on:
            return
        assert time.monotonic() < deadline, f"still powered after the reset: {on}"
        time.sleep(0.1)


def _power(pi) -> str:  # type: ignore[no-untyped-def]
    try:
        return str(json.loads((Path(pi.folder) / "state.json").read_text()).get("power"))
    except (OSError, ValueError):
        return "unknown"


@pytest.fixture(scope="session")
def session_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The session's lab (LAB_PIS Pis) as a LabDescription, not reset: use `lab`."""
    with lab_process(tmp_path_factory.mktemp("lab") / "lab", pis=LAB_PIS,
                     retry_seconds=RETRY_SECONDS) as description:
        yield description


@pytest.fixture(scope="module")
def lab(session_lab):  # type: ignore[no-untyped-def]
    """The session's lab, reset for this module (see the module docstring)."""
    reset(session_lab)
    return session_lab
