"""Several controllers on one database: who drives which agent.

Any number of controllers may share one PostgreSQL database (on SQLite there is one, and this
runs the same way with a single holder). Each serves the pages and the API; the agents are shared
out among the live ones so that each agent is polled, refreshed and written for by ONE controller
at a time (after Ironic's conductors on a hash ring, and Kubernetes' leases):

- Heartbeat: every third of `[scheduler] lease_seconds` a controller stamps its row in
  `controller_instance` with the database's clock. A controller whose heartbeat is older than a
  lease is dead to the others.
- Shares: each agent (and LEADER, the work no agent owns) goes to the live controller with the
  highest rendezvous hash of (controller id, agent name); every controller computes the same
  shares from the same live set, and when one joins or dies only its share moves.
- Leases: a controller takes or renews the leases of its share in one compare-and-set UPDATE
  (store/leases.py): free, expired or already its own. A lease taken from another holder gets a
  new fencing token. One that a controller no longer should hold (a controller joined) is
  released at the start of its next poll, when none of its calls is under way, so the newcomer
  takes it at its next heartbeat.
- Fencing: every scheduler write carries the agent's Fence and checks it in its own transaction
  (store.schedule.update_schedule); a controller that lost an agent (killed, cut off from the
  database, paused past its lease) writes nothing after the new holder took it, even when it comes
  back.
- Local validity: a controller counts its lease from BEFORE it asked for it, on its monotonic
  clock, so it stops calling an agent no later than the database lets another controller take it.
  A StartAction is sent only while the lease stays valid for a whole call deadline.

When a controller dies its agents are taken over within about a lease and a third (the lease
expires, the next heartbeat of the successor takes it) plus one poll.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from edgebed.controller.store import LEADER, OPEN_ERRORS, WRITE_ERRORS, Fence, InstanceRecord, Store
from edgebed.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# The roles whose controllers drive agents (`edgebed controller --role`); a `web` controller
# serves pages and the API only.
DRIVING_ROLES = frozenset({"all", "scheduler"})

# What a heartbeat or lease query raises when the database is away: logged, and the leases then
# run out by themselves.
_DATABASE_ERRORS = tuple({*WRITE_ERRORS, *OPEN_ERRORS})


def new_instance_id() -> str:
    """An id for this controller process: host name, pid and a random part (a restarted process
    with the same pid is a new instance), at most 64 characters."""
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def owner_of(name: str, controllers: Iterable[str]) -> str | None:
    """The controller (among `controllers`' ids) that should drive agent `name`: the highest
    rendezvous hash of (controller, agent). None when there is no controller."""
    return max(
        controllers,
        key=lambda controller: hashlib.sha256(f"{controller}\0{name}".encode()).digest(),
        default=None,
    )


@dataclass(frozen=True)
class Ownership:
    """The agents this controller drives for one poll, with the fence each write carries."""

    fences: Mapping[str, Fence]

    def drives(self, agent: str) -> bool:
        return agent in self.fences

    def fence(self, agent: str) -> Fence | None:
        return self.fences.get(agent)


@dataclass(frozen=True)
class _Held:
    token: int
    valid_until: float  # this process's monotonic clock


class AgentLeases:
    """This controller's heartbeat and leases over `store.leases`.

    `lease_seconds`: how long a lease lasts without renewal (`[scheduler] lease_seconds`);
    `role`: what this controller does ("all", "scheduler", "web"); `on_gain`: called when this
    controller takes an agent it did not drive (the scheduler's wake, so the new agent's rows are
    polled at once); `monotonic`: the local clock leases are counted on.

    `exclusive`: no other controller can drive these agents (it holds the SQLite file's lock,
    which keeps any other scheduler out), so a lease it took never runs out on its own. Without
    it, a heartbeat delayed behind the controller's own writes (20,000 starts at once on a busy
    machine) let leases run out and the scheduler held back StartActions it alone could send.
    Its fences say so, and the store then accepts its writes under a lease the database sees
    expired (holder and token are still checked). The rows are still written, for the overview.
    """

    def __init__(
        self,
        store: Store,
        *,
        lease_seconds: float,
        role: str = "all",
        on_gain: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        instance: str | None = None,
        exclusive: bool = False,
    ) -> None:
        self._store = store
        self._exclusive = exclusive
        self.lease_seconds = lease_seconds
        self.role = role
        self.instance = instance or new_instance_id()
        self._on_gain = on_gain
        self._monotonic = monotonic
        self._held: dict[str, _Held] = {}
        self._to_release: set[str] = set()
        self._known: set[str] = set()
        self._last_tick = -float("inf")
        self._tick_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._failing = False

    @property
    def interval(self) -> float:
        """Seconds between heartbeats: a third of a lease."""
        return self.lease_seconds / 3

    # -- the background heartbeat --------------------------------------------------------------

    def start(self) -> None:
        """Starts the heartbeat task (every `interval` seconds)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="edgebed-leases")

    async def stop(self) -> None:
        """Stops the heartbeat and, when the database answers, releases this controller's
        leases and deletes its heartbeat row, so the others take its agents over at once."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        self._held.clear()
        try:
            await self._store.leases.leave(self.instance)
        except _DATABASE_ERRORS as exc:
            log.warning("could not release the leases of controller %s: %s", self.instance, exc)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
                if self._failing:
                    log.info("controller %s reaches the database again", self.instance)
                self._failing = False
            except _DATABASE_ERRORS as exc:
                # The leases run out by themselves (local validity) and another controller
                # takes the agents; this one takes its share again once the database answers.
                if not self._failing:
                    log.error("controller %s cannot renew its heartbeat and leases: %s", self.instance, exc)
                self._failing = True
            except Exception:
                # A bug in one heartbeat must not stop the next ones.
                log.exception("controller %s: heartbeat failed", self.instance)
            await asyncio.sleep(self.interval)

    async def tick(self) -> None:
        """One heartbeat: stamps this controller alive, computes its share among the live
        driving controllers and takes or renews those leases. Leases it should no longer hold
        are released at the next `owned()`. Raises the database's error when it cannot."""
        async with self._tick_lock:
            asked = self._monotonic()
            instances = await self._store.leases.heartbeat(
                self.instance, host=socket.gethostname(), pid=os.getpid(), role=self.role,
                lease_seconds=self.lease_seconds,
            )
            if self.role not in DRIVING_ROLES:
                self._last_tick = asked
                return
            live = {i.id for i in instances if i.alive and i.role in DRIVING_ROLES} | {self.instance}
            names = {agent.name for agent in await self._store.agents.list_agents()} | {LEADER}
            share = {name for name in names if owner_of(name, live) == self.instance}
            taken = await self._store.leases.acquire(self.instance, share, self.lease_seconds)
            gained = set(taken) - set(self._held)
            for name, token in taken.items():
                previous = self._held.get(name)
                if previous is not None and previous.token != token:
                    gained.add(name)  # lost and taken back meanwhile: a new token
                self._held[name] = _Held(token, math.inf if self._exclusive else asked + self.lease_seconds)
            for name in share - set(taken):
                self._held.pop(name, None)  # still another controller's: it releases it soon
            for name in set(self._held) - names:
                self._held.pop(name, None)  # the agent was removed
            self._to_release = set(self._held) - share
            self._known = names
            self._last_tick = asked
        if gained:
            log.info("controller %s drives %s", self.instance, ", ".join(sorted(gained)))
            if self._on_gain is not None:
                self._on_gain()

    # -- what the scheduler asks ---------------------------------------------------------------

    async def owned(self, agents: Iterable[str] = (), *, release: bool = True) -> Ownership:
        """The agents (and LEADER) this controller drives now, each with its fence. Called by
        the scheduler at the start of each poll, when none of its calls is under way: it first
        releases the leases another controller should have now (unless `release` is False: the
        inventory refresh, which runs beside the polls), and renews them first when the last
        heartbeat is older than its interval or `agents` names one not seen yet (a scheduler
        polled without its background task, an agent just added)."""
        if self._monotonic() - self._last_tick >= self.interval or not set(agents) <= self._known:
            await self.tick()
        if release and self._to_release:
            released = sorted(self._to_release)
            for name in released:
                self._held.pop(name, None)
            self._to_release = set()
            await self._store.leases.release(self.instance, released)
            log.info("controller %s hands over %s", self.instance, ", ".join(released))
        now = self._monotonic()
        return Ownership(
            {
                name: Fence(name, self.instance, held.token, exclusive=self._exclusive)
                for name, held in self._held.items()
                # Not those being handed over (still held when `release` is False).
                if held.valid_until > now and name not in self._to_release
            }
        )

    def valid_for(self, agent: str, seconds: float) -> bool:
        """Whether this controller's lease on `agent` lasts at least `seconds` more on its own
        clock: a StartAction is sent only then, so that it reaches the agent before another
        controller may take it over."""
        held = self._held.get(agent)
        return held is not None and held.valid_until - self._monotonic() >= seconds

    async def instances(self) -> list[InstanceRecord]:
        """Every controller known to the database (alive or not), for the overview."""
        return await self._store.leases.instances(self.lease_seconds)
