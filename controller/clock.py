"""Watching the wall clock against a monotonic one, so that a step of the wall clock never starts
or ends reservations early.

Reservations start and end by the wall clock (epoch seconds). A wall clock stepped forward by an
hour (a wrong NTP server, an administrator's `date -s`, a virtual machine resumed on another
host) would deploy future reservations early and destroy running ones, and nothing would notice.
The scheduler therefore asks `ClockGuard.check()` before each poll: it compares how far the wall
clock moved with how far a monotonic clock moved since the last reading the two agreed on. When
they differ by more than `[scheduler] max_clock_jump_seconds`, starting and ending reservations
pauses (following the agents' reports and the users' own actions go on); the jump is logged once,
shown to administrators as a banner and on /metrics (`edgebed_clock_paused`), until the clocks
agree again (the wall clock is stepped back) or an administrator confirms the new time.

The monotonic clock is CLOCK_BOOTTIME where the system has one: it keeps counting while the
machine is suspended, so a laptop-sized controller waking up is not taken for a jump.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from edgebed.controller.authz import Authz
from edgebed.controller.domain import User
from edgebed.controller.metrics import Metrics

log = logging.getLogger(__name__)


def boot_clock() -> float:
    """Seconds since boot, counting suspended time (CLOCK_BOOTTIME); time.monotonic() where the
    system has no such clock."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return time.monotonic()
    return time.clock_gettime(boottime)


@dataclass(frozen=True)
class ClockStatus:
    """What the guard knows after its last reading.

    paused: starting and ending reservations is paused.
    offset_seconds: how far the wall clock moved beyond the monotonic one since the last reading
      they agreed on (positive: the wall clock jumped forward); about 0 when not paused.
    paused_since: the wall clock (epoch seconds, as it read then) when the pause began; None when
      not paused.
    max_jump_seconds: the bound, from `[scheduler] max_clock_jump_seconds`.
    wall_time: the wall clock at the last reading (epoch seconds).
    """

    paused: bool
    offset_seconds: float
    paused_since: int | None
    max_jump_seconds: float
    wall_time: int


class ClockGuard:
    """Compares `wall` (epoch seconds) with `monotonic` (seconds, only ever subtracted).

    The reference pair moves with every reading that agrees, so the slow drift NTP corrects by
    slewing (at most 0.5 ms per second) is absorbed and only a step beyond the bound between two
    readings pauses. While paused the reference stays where the clocks last agreed: a wall clock
    stepped back to the right time agrees again and resumes by itself.
    """

    def __init__(
        self,
        *,
        wall: Callable[[], float],
        monotonic: Callable[[], float],
        max_jump_seconds: float,
        metrics: Metrics | None = None,
    ) -> None:
        if max_jump_seconds <= 0:
            raise ValueError("max_jump_seconds must be positive")
        self._wall = wall
        self._monotonic = monotonic
        self._bound = float(max_jump_seconds)
        self._metrics = metrics
        self._reference = (wall(), monotonic())
        self._paused_since: float | None = None
        self._offset = 0.0
        self._last_wall = self._reference[0]
        self._publish()

    @property
    def paused(self) -> bool:
        return self._paused_since is not None

    def status(self) -> ClockStatus:
        """The status after the last reading (none is taken: the scheduler reads every poll)."""
        return ClockStatus(
            paused=self.paused,
            offset_seconds=round(self._offset, 3),
            paused_since=None if self._paused_since is None else int(self._paused_since),
            max_jump_seconds=self._bound,
            wall_time=int(self._last_wall),
        )

    def check(self) -> ClockStatus:
        """Reads both clocks: pauses on a jump beyond the bound (logged once), resumes when the
        clocks agree again. Returns the status."""
        wall, mono = self._wall(), self._monotonic()
        self._last_wall = wall
        offset = (wall - self._reference[0]) - (mono - self._reference[1])
        self._offset = offset
        if abs(offset) <= self._bound:
            if self._paused_since is not None:
                log.warning(
                    "the wall clock agrees with the monotonic clock again (off by %+.0f s): "
                    "reservations start and end again",
                    offset,
                )
                self._paused_since = None
            self._reference = (wall, mono)
            self._offset = 0.0
        elif self._paused_since is None:
            self._paused_since = wall
            log.error(
                "the wall clock jumped %+.0f s against the monotonic clock (bound: %g s, "
                "[scheduler] max_clock_jump_seconds): starting and ending reservations is paused "
                "until the clocks agree again or an administrator confirms the time",
                offset,
                self._bound,
            )
        self._publish()
        return self.status()

    def confirm(self, who: str) -> ClockStatus:
        """An administrator says the wall clock is right: its reading becomes the reference and
        reservations start and end by it from the next poll on."""
        wall, mono = self._wall(), self._monotonic()
        if self._paused_since is not None:
            log.warning(
                "%s confirmed the wall clock (off by %+.0f s against the monotonic clock): "
                "reservations start and end by it again",
                who,
                self._offset,
            )
        self._reference = (wall, mono)
        self._last_wall = wall
        self._paused_since = None
        self._offset = 0.0
        self._publish()
        return self.status()

    def _publish(self) -> None:
        if self._metrics is not None:
            self._metrics.record_clock(paused=self.paused, offset_seconds=self._offset)


class Clocks:
    """The administrators' side of the guard: its status, and confirming the wall clock."""

    def __init__(self, guard: ClockGuard, authz: Authz) -> None:
        self.guard = guard
        self._authz = authz

    async def status(self, actor: User) -> ClockStatus:
        """The guard's status; Forbidden unless `actor` is an administrator."""
        await self._authz.require_admin(actor)
        return self.guard.status()

    async def confirm(self, actor: User) -> ClockStatus:
        """Accepts the wall clock as it reads now (ends a pause); Forbidden unless `actor` is an
        administrator."""
        admin = await self._authz.require_admin(actor)
        return self.guard.confirm(admin.email)
