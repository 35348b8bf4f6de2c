"""The clock guard: a wall clock that jumps pauses starting and ending reservations until the
clocks agree again or an administrator confirms the time (controller/clock.py)."""

from __future__ import annotations

import logging

import pytest

from edgebed.controller.clock import ClockGuard
from edgebed.controller.errors import Forbidden
from edgebed.controller.metrics import Metrics
from tests.controller.conftest import FakeClock, controller_for, make_settings
from tests.controller.test_scheduler import poll_until, reserve_ready, setup, states

HOUR = 3600


def _jump_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "edgebed.controller.clock" and "jumped" in r.getMessage()]


async def test_a_wall_clock_jump_pauses_starting_and_ending_until_the_clocks_agree_or_an_admin_confirms(
    tmp_path, clock, fake_agents, caplog
):
    caplog.set_level(logging.INFO, logger="edgebed.controller.clock")
    served = fake_agents("rpi", nodes=2)
    async with controller_for(make_settings(tmp_path, max_clock_jump_seconds=120), clock) as ctl:
        alice, bob = await setup(ctl, {"rpi": served}, users=("alice@example.org", "bob@example.org"))
        now = int(clock())
        await reserve_ready(ctl, alice, ["rpi-000"], now, hours=1)  # running now, ends in an hour
        await reserve_ready(ctl, alice, ["rpi-001"], now + 2 * HOUR, hours=1)  # starts in two hours
        await poll_until(ctl, alice, {"rpi-000": ("ready", "deployed"), "rpi-001": ("ready", "")})
        assert served.fake.started == [("rpi-000", "deploy")]

        # Someone sets the wall clock two hours and a minute ahead; no time passes.
        clock.jump(2 * HOUR + 60)
        for _ in range(3):
            report = await ctl.scheduler.poll()
            assert report.clock_paused and report.started == []
        assert served.fake.started == [("rpi-000", "deploy")]  # neither destroyed nor deployed early
        assert await states(ctl, alice) == {"rpi-000": ("ready", "deployed"), "rpi-001": ("ready", "")}
        assert len(_jump_records(caplog)) == 1  # logged once, however many polls
        assert "+7260 s" in _jump_records(caplog)[0].getMessage()
        status = await ctl.clock.status(ctl.admin)
        assert status.paused and status.offset_seconds == 2 * HOUR + 60 and status.paused_since == now + 2 * HOUR + 60
        rendered = await ctl.metrics.render()
        assert "edgebed_clock_paused 1\n" in rendered
        assert "edgebed_clock_offset_seconds 7260.000\n" in rendered

        # The clock is set right again: the clocks agree, the scheduler resumes, nothing was due.
        clock.jump(-(2 * HOUR + 60))
        report = await ctl.scheduler.poll()
        assert not report.clock_paused and not (await ctl.clock.status(ctl.admin)).paused
        assert "edgebed_clock_paused 0\n" in await ctl.metrics.render()
        assert served.fake.started == [("rpi-000", "deploy")]

        # It jumps again, and this time the new time is the right one: only an administrator
        # may say so; from then on the reservations follow it.
        clock.jump(2 * HOUR + 60)
        assert (await ctl.scheduler.poll()).clock_paused
        with pytest.raises(Forbidden):
            await ctl.clock.confirm(bob)
        assert (await ctl.scheduler.poll()).clock_paused
        confirmed = await ctl.clock.confirm(ctl.admin)
        assert not confirmed.paused and confirmed.paused_since is None
        report = await ctl.scheduler.poll()
        assert not report.clock_paused
        assert sorted(report.started) == ["rpi-000:destroy", "rpi-001:deploy"]
        assert len(_jump_records(caplog)) == 2  # one line per jump


async def test_time_passing_and_slow_drift_never_pause():
    """advance() moves both clocks; a wall clock slewed by NTP drifts a little at each reading,
    which the moving reference absorbs, while one step beyond the bound pauses."""
    clock = FakeClock()
    metrics = Metrics()
    guard = ClockGuard(wall=clock, monotonic=clock.monotonic, max_jump_seconds=120, metrics=metrics)
    for _ in range(1000):
        clock.advance(2)
        clock.jump(0.5)  # far faster than NTP ever slews: 500 s of drift in all
        assert not guard.check().paused
    clock.jump(-121)
    status = guard.check()
    assert status.paused and status.offset_seconds == -121
    assert metrics._clock_paused
    clock.advance(3600)
    assert guard.check().paused  # time passing does not end the pause, only agreeing clocks do
    clock.jump(121)
    assert not guard.check().paused
