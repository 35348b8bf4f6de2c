"""The garbage collector's thresholds are set by the processes that start, not by importing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgebed.collector import THRESHOLDS

# Starts three interpreters.
pytestmark = pytest.mark.slow


def _thresholds_after(code: str) -> tuple[int, ...]:
    out = subprocess.run(
        [sys.executable, "-c", f"import gc\n{code}\nprint(*gc.get_threshold())"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    return tuple(int(value) for value in out.split())


def test_importing_changes_nothing_and_tune_collector_sets_the_thresholds() -> None:
    default = _thresholds_after("")
    assert _thresholds_after("import edgebed.collector, edgebed.agent.cli, edgebed.serve, edgebed.demo") == default
    assert _thresholds_after("from edgebed.collector import tune_collector\ntune_collector()") == THRESHOLDS
    assert THRESHOLDS != default
