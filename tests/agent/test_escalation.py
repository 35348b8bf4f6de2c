"""The executor's escalation ladder (retry, hard reboot, power cut, then lost by the state's own
timeout), progress outside 0..100 as a driver error, and the action's monotonic duration."""

from __future__ import annotations

import asyncio
import time

import pytest

from edgebed.agent.clock import FastClock
from edgebed.nodetypes.base import (
    DEFAULT_LADDER,
    DEPLOYED,
    DONE,
    Ladder,
    NodeType,
    Poll,
    Rung,
    State,
    Step,
    process,
)
from edgebed.nodetypes.interfaces import Driver
from tests.agent.test_actions import _ExecutorOnStore, _Power


class _RecordingPower(_Power):
    """Records every power call with the executor clock's reading."""

    def __init__(self, clock) -> None:
        super().__init__()
        self.clock = clock
        self.calls: list[tuple[str, float]] = []

    async def set_power(self, node, on):
        self.calls.append(("on" if on else "off", self.clock.monotonic()))

    async def hard_reboot(self, node):
        await super().hard_reboot(node)
        self.calls.append(("hard_reboot", self.clock.monotonic()))


def _one_state_type(state: State) -> NodeType:
    return NodeType(
        name="raspberry", states=(state,), processes={"deploy": process("deploy", state, DEPLOYED)},
        properties=(), default_environments=(),
    )


def test_the_default_ladder_retries_then_reboots_then_cuts_the_power_and_stays_on_top() -> None:
    assert [DEFAULT_LADDER.rung(n) for n in range(1, 7)] == [
        Rung.RETRY, Rung.HARD_REBOOT, Rung.HARD_REBOOT, Rung.POWER_CUT, Rung.POWER_CUT, Rung.POWER_CUT,
    ]
    assert State("copy", Step(post=lambda ctx: DONE)).ladder is DEFAULT_LADDER


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"rungs": ()}, "at least one rung"),
        ({"rungs": ("retry",)}, "is not a Rung"),
        ({"power_cut_seconds": 0}, "power_cut_seconds must be > 0"),
        ({"power_cut_seconds": float("nan")}, "power_cut_seconds must be > 0"),
    ],
)
def test_a_malformed_ladder_is_refused(kwargs, error) -> None:
    with pytest.raises((ValueError, TypeError), match=error):
        Ladder(**kwargs)


def test_a_stall_count_starts_at_one() -> None:
    with pytest.raises(ValueError, match="counts from 1"):
        DEFAULT_LADDER.rung(0)


@pytest.mark.slow
async def test_a_state_that_never_progresses_climbs_the_ladder_then_ends_lost(tmp_path) -> None:
    """Every before_reboot (10 s) without progress takes the next rung: retry, hard reboot,
    power cut (off, 25 s on the executor's clock, on), the top rung again; `lost` (400 s, 2 s
    real) ends it. Each rung is in the transition log; only power cycles count as reboots."""
    clock = FastClock(200)
    power = _RecordingPower(clock)
    execs: list[float] = []

    async def start(ctx):
        execs.append(clock.monotonic())

    async def stuck(ctx):
        return Poll(done=False, progress=0)

    ladder = Ladder((Rung.RETRY, Rung.HARD_REBOOT, Rung.POWER_CUT), power_cut_seconds=25)
    hung = State("hung", Step(exec=start, post=stuck), before_reboot=10, lost=400, ladder=ladder)
    driver = Driver(power=power)
    async with _ExecutorOnStore(tmp_path / "ladder.sqlite", _one_state_type(hung), driver, clock=clock) as harness:
        await harness.run_one("hung")
        final = await harness.action()
        transitions = await harness.worker.call(harness.store.transitions, "n1")
    events = [t.event for t in transitions]
    assert events[0] == "enter" and events[-1] == "lost"
    rungs = events[1:-1]
    # How many rungs fit in `lost` depends on the machine's load (each is a commit); their
    # order does not.
    assert len(rungs) >= 4, rungs
    assert rungs == ["retry", "reboot"] + ["power_cut"] * (len(rungs) - 2), "past the top, the top rung again"
    assert final.state == "lost"
    # A retry cycles no power; each hard reboot and power cut does.
    assert final.reboots == rungs.count("reboot") + rungs.count("power_cut")
    assert power.reboots == rungs.count("reboot") == 1
    # The step ran again from its exec after each rung.
    assert len(execs) == 1 + len(rungs)
    # A power cut: off, then on no sooner than power_cut_seconds later on the executor's clock.
    # Under load a power call can itself stall past before_reboot on this fast clock; the cut is
    # then made again from its "off" (as designed), so the first "on" follows the latest "off".
    cut = [(what, at) for what, at in power.calls if what in ("off", "on")]
    first_on = next(i for i, (what, _) in enumerate(cut) if what == "on")
    assert first_on >= 1 and cut[first_on - 1][0] == "off", cut
    assert cut[first_on][1] - cut[first_on - 1][1] >= 25


async def test_a_power_cut_longer_than_before_reboot_is_not_taken_for_a_stall(tmp_path) -> None:
    """The cut's wait is the work itself: the before_reboot timer must not cut it short and
    start another rung while the power is off."""
    clock = FastClock(200)
    power = _RecordingPower(clock)

    async def post(ctx):
        # Stalls until the power came back on after a cut, then completes.
        return DONE if ("on" in [what for what, _ in power.calls]) else Poll(done=False, progress=0)

    ladder = Ladder((Rung.POWER_CUT,), power_cut_seconds=30)
    state = State("s", Step(post=post), before_reboot=5, lost=1000, ladder=ladder)
    driver = Driver(power=power)
    async with _ExecutorOnStore(tmp_path / "cut.sqlite", _one_state_type(state), driver, clock=clock) as harness:
        await harness.run_one("s")
        final = await harness.action()
        transitions = await harness.worker.call(harness.store.transitions, "n1")
    assert final.state == "deployed"
    assert [t.event for t in transitions] == ["enter", "power_cut", "enter"]
    assert [what for what, _ in power.calls] == ["off", "on"]
    assert final.reboots == 1


@pytest.mark.parametrize(
    "bad, rising",
    [(-1000, True), (101, True), (10**6, True), (50.5e9, False), (float("nan"), False),
     (float("inf"), False), (True, False)],
    ids=["negative", "just-over", "huge", "huge-float", "nan", "inf", "bool"],
)
async def test_progress_outside_0_to_100_is_a_driver_error_not_progress(tmp_path, bad, rising) -> None:
    """A post reporting a (rising) value outside 0..100 (a copy after a wall-clock step) makes
    no progress: the state stalls and climbs its ladder, and the progress shown stays in 0..100."""
    clock = FastClock(200)
    seen: list[int | None] = []
    polls = 0
    harness_box: list[_ExecutorOnStore] = []

    async def post(ctx):
        nonlocal polls
        polls += 1
        seen.append(harness_box[0].executor.live_progress("n1"))
        if polls > 60:
            return DONE
        return Poll(done=False, progress=bad + polls if rising else bad)

    state = State("copy", Step(post=post), before_reboot=5, lost=10_000, ladder=Ladder((Rung.RETRY,)))
    async with _ExecutorOnStore(tmp_path / "bad.sqlite", _one_state_type(state), clock=clock) as harness:
        harness_box.append(harness)
        await harness.run_one("copy")
        final = await harness.action()
        transitions = await harness.worker.call(harness.store.transitions, "n1")
    assert final.state == "deployed"
    assert all(p is not None and 0 <= p <= 100 for p in seen), sorted({p for p in seen})
    # Not progress: the state stalled and took its first rung.
    assert "retry" in [t.event for t in transitions]


async def test_a_fractional_percentage_in_range_is_progress(tmp_path) -> None:
    clock = FastClock(200)
    polls = 0

    async def post(ctx):
        nonlocal polls
        polls += 1
        return Poll(done=polls >= 30, progress=min(100.0, polls * 3.5))

    state = State("copy", Step(post=post), before_reboot=1000, lost=10_000)
    async with _ExecutorOnStore(tmp_path / "frac.sqlite", _one_state_type(state), clock=clock) as harness:
        await harness.run_one("copy")
        transitions = await harness.worker.call(harness.store.transitions, "n1")
    assert [t.event for t in transitions] == ["enter", "enter"]


async def test_the_duration_is_measured_on_the_duration_clock_not_the_wall_clock(tmp_path) -> None:
    """A wall clock stepping back an hour mid-action changes the stamps, not the duration."""
    wall = [2_000_000_000.0]

    async def step(ctx):
        wall[0] -= 3600
        await asyncio.sleep(0.05)

    a = State("a", Step(exec=step))
    node_type = _one_state_type(a)
    async with _ExecutorOnStore(tmp_path / "duration.sqlite", node_type, wall_clock=lambda: wall[0]) as harness:
        began = time.monotonic()
        await harness.run_one("a")
        took = time.monotonic() - began
        final = await harness.action()
    assert final.state == "deployed"
    assert 0.05 <= final.elapsed <= took
    # The stamps follow the wall clock, steps and all.
    assert final.updated_at == int(wall[0])


async def test_a_database_from_before_the_duration_column_gets_it_and_keeps_its_actions(tmp_path) -> None:
    import sqlite3

    from edgebed.agent.store import SaveAction, Store
    from tests.agent.test_actions import _record

    path = str(tmp_path / "old.sqlite")
    store = Store(path)
    store.open()
    store.apply([SaveAction(_record("a"))])
    store.close()
    with sqlite3.connect(path) as db:  # the table as an older agent created it
        db.execute('ALTER TABLE "action" DROP COLUMN "elapsed"')
    reopened = Store(path)
    reopened.open()
    try:
        [action] = reopened.list_actions()
        assert (action.state, action.elapsed) == ("a", 0.0)
    finally:
        reopened.close()


async def test_a_step_that_swallows_its_cancel_is_cancelled_again_and_ends_lost(tmp_path) -> None:
    """Python 3.11's asyncio.wait_for can return the inner call's outcome when it completes as
    the cancel arrives: the cancel is lost and the step goes on. The watchdog cancels a decided
    state again at each tick, so the action still ends `lost` (under CI load a Redfish step that
    failed fast once retried for minutes)."""
    clock = FastClock(200)
    cancels = 0

    async def stubborn(ctx):
        nonlocal cancels
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                cancels += 1
                if cancels >= 2:
                    raise
                # The first cancel is swallowed, as wait_for may do.

    state = State("stubborn", Step(exec=stubborn), lost=20)
    async with _ExecutorOnStore(tmp_path / "swallow.sqlite", _one_state_type(state), clock=clock) as harness:
        await harness.run_one("stubborn")
        final = await harness.action()
    assert cancels == 2
    assert final.state == "lost"


async def test_a_cancelled_error_the_step_raises_itself_is_a_step_error_tried_again(tmp_path) -> None:
    """A library's own CancelledError (a call inside the step cancelled; nobody cancelled the
    action) is an error of the step: retried under the state's timers, written to last_error,
    never the end of the action's task (which left the action undriven until a restart)."""
    calls = polls = 0

    async def flaky(ctx):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncio.CancelledError

    async def polled(ctx):
        nonlocal polls
        polls += 1
        if polls == 1:
            raise asyncio.CancelledError
        return Poll(done=True)

    state = State("flaky", Step(exec=flaky, post=polled), lost=20)
    async with _ExecutorOnStore(tmp_path / "within.sqlite", _one_state_type(state), clock=FastClock(200)) as harness:
        await harness.run_one("flaky")
        final = await harness.action()
    assert final.state == "deployed", final
    assert (calls, polls) == (2, 2)
    assert "raised CancelledError" in final.last_error, final.last_error
