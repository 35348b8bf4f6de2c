"""How `./scripts/test -n 2 --dist loadgroup` spreads the suite over two pytest-xdist workers.

The default of `./scripts/test` (EDGEBED_TEST_WORKERS=1 for one process).

Work is handed out in units:

- `lab`: every test marked `@pytest.mark.lab` that uses the session's hardware lab (the `lab`
  fixture of tests/labs.py). One unit, so one worker runs them one after another on one lab,
  started once. (A lab test that starts a lab of its own, in another slot, is an ordinary one.)
- every other test module: one unit, so a module-scoped fixture (a testbed, agent processes, a
  browser) is started by one worker only, as in a run without xdist.

The longest units go first (the lab, then the modules that drive a browser): they mostly wait on
timers and child processes, and the other worker runs the rest meanwhile.

Under xdist, print-outs (the lab tests' FIGURE lines) do not show even with `-s`.
"""

from __future__ import annotations

import os

import pytest


def group_of(item: pytest.Item) -> str | None:
    """The xdist_group of a test: "lab" for the shared lab's users, else None (its module)."""
    fixtures = getattr(item, "fixturenames", ())
    if item.get_closest_marker("lab") is not None and ("lab" in fixtures or "session_lab" in fixtures):
        return "lab"
    return None


def _rank(item: pytest.Item) -> int:
    if group_of(item) == "lab":
        return 0
    if "browser" in getattr(item, "fixturenames", ()):
        return 1
    return 2


# First: xdist's own hook (of loadgroup) reads the xdist_group marks added here.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for item in items:
        group = group_of(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    # Both workers sort alike (a stable sort of one collection), so their collections still agree.
    items.sort(key=_rank)


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # xdist's hook (unknown under -p no:xdist), before its own
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # type: ignore[no-untyped-def]
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModulesAndGroups(LoadScopeScheduling):
        """loadgroup (a test with xdist_group(name) is in unit `name`), but every other test
        is in its module's unit instead of a unit of its own; units in collection order."""

        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):
                return nodeid.rsplit("@", 1)[-1]
            return nodeid.split("::", 1)[0]

    config.option.loadscopereorder = False
    return ModulesAndGroups(config, log)
