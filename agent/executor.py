"""Drives every ongoing action through the states of its process, each on its own asyncio task.

For each state: `exec` runs once when the state is entered, then `post` is polled until done;
then the next state is committed, and only once it is durable does its step start. A state that
makes no progress for `before_reboot` seconds climbs its escalation ladder (`State.ladder`): the
n-th stall takes the n-th rung — retry the step, hard reboot, a longer power cut — and the state
is tried again from its `exec`; a state that lasts `lost` seconds ends the action in `lost`. One
watchdog task checks every action's timers, so a hung step (a driver call that never returns) on
one node is cancelled without delaying any other.

Progress is what a `post` reports in 0..100; a value outside that range is a driver error (logged,
polled again, the state's timeouts apply), never progress: a copy whose percentage went negative
after a clock step must not look like a copy that stalled, nor a huge value like one that moved.

Errors: every exception a step (or a power call of the ladder) raises is logged and retried, and
its message, prefixed with the state, scrubbed of the action's secrets and cut to one line, is
the action's `last_error`, committed when it changes (one write per new message, not per
retry). It stays for the rest of the action (a deploy that ended well may say what it
overcame); a lost action says why it was lost, followed by the last error before that. A new
action starts without one.

Two clocks: `clock` runs the timeouts (a simulated testbed speeds it up along with its
hardware); `duration_clock` (time.monotonic) measures, in real seconds, how long the agent has
driven each action (`ActionRecord.elapsed`, reported to the controller). Neither is the wall
clock, which only stamps what is stored (updated_at, the transition log).

The database is the truth: after a crash, `resume` takes every unfinished action from the state
it recorded and runs that state's step again, which is harmless because steps are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import ParamSpec

from edgebed.agent.clock import Clock, SystemClock
from edgebed.agent.domain import ActionRecord, TransitionRecord
from edgebed.agent.errors import Busy, DiskFull
from edgebed.agent.store import Change, LogTransition, SaveAction, UpdateState
from edgebed.nodetypes.base import (
    FINAL_STATES,
    LOST,
    DriverError,
    NodeRef,
    NodeType,
    Poll,
    Process,
    Rung,
    State,
    StepContext,
)
from edgebed.nodetypes.interfaces import Driver, PowerInterface
from edgebed.redact import error_line
from edgebed.tasks import cancel_and_wait

log = logging.getLogger(__name__)

_P = ParamSpec("_P")

# What a watched piece of work came to: done, no progress for before_reboot, or lost.
DONE = "done"
STALLED = "stalled"

# Actions started together (StartActions) begin driving this many per turn of the event loop.
SPAWN_SLICE = 100

# async write(changes): returns when they are committed (agent.dbworker.GroupCommitter.write).
Write = Callable[[Sequence[Change]], Awaitable[None]]


@dataclass(frozen=True)
class Timing:
    """Real seconds between polls of a `post`, and between tries of a failing step."""

    poll_seconds: float = 2.0
    retry_seconds: float = 2.0
    # How often the watchdog checks the timers (in real seconds).
    watchdog_seconds: float = 0.05
    # A driver's hint is followed, but never polls faster than this.
    min_poll_seconds: float = 0.001


@dataclass(slots=True)
class _Run:
    """An action being driven: its committed record and the watchdog's view of its step."""

    record: ActionRecord
    process: Process
    node: NodeRef
    task: asyncio.Task | None = None
    progress: int = 0
    # What its steps are given (Executor._context), made once.
    context: StepContext | None = None
    # The action's task while a step or a hard reboot runs in it (_watched), for the watchdog;
    # and how many times the watchdog has cancelled it there.
    watched: asyncio.Task | None = None
    cancels: int = 0
    spec: State | None = None
    state_entered: float = 0.0
    last_progress: float = 0.0
    verdict: str | None = None
    failures: int = 0
    # Until then (executor clock) the state is deliberately waiting (a power cut's off time):
    # no stall, whatever last_progress says.
    held_until: float = 0.0
    # ActionRecord.elapsed when this run began to drive it, and the duration clock then.
    elapsed_base: float = 0.0
    driven_since: float = 0.0
    # While > 0 the action waits for the agent itself (agent_wait): its timers are paused.
    agent_waits: int = 0
    # When the outermost of those waits began (executor clock), and Executor._forgiven then.
    wait_began: float = 0.0
    forgiven_then: float = 0.0


# The action (and its executor) whose task is running: set by _drive for its task (where its
# steps run) and the tasks a step creates (a context is copied into each new task), read by
# agent_wait.
_CURRENT: contextvars.ContextVar[tuple[Executor, _Run] | None] = contextvars.ContextVar(
    "edgebed_agent_current_run", default=None
)


@contextlib.contextmanager
def agent_wait() -> Iterator[None]:
    """Marks a wait on the agent itself (a commit, a read of the agent's database) from inside a
    step: the action's timers do not run meanwhile, as `_forgive_stall` does for a busy event
    loop. A thousand nodes starting at once must not make one of them `lost` because its
    step's save waited behind their commits. Outside an action's task it does nothing."""
    current = _CURRENT.get()
    if current is None:
        yield
        return
    executor, run = current
    executor._wait_began(run)
    try:
        yield
    finally:
        executor._wait_ended(run)


class Executor:
    def __init__(
        self,
        node_type: NodeType,
        driver: Driver,
        write: Write,
        *,
        clock: Clock | None = None,
        timing: Timing = Timing(),
        wall_clock: Callable[[], float] = time.time,
        duration_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._type = node_type
        # The executor itself only ever power cycles a node (a state without progress); the rest
        # of the driver is for the step functions, handed over in their StepContext.
        self._power: PowerInterface = driver.power
        self._driver = driver
        self._write = write
        self._clock = clock or SystemClock()
        self._timing = timing
        self._wall = wall_clock
        self._duration_clock = duration_clock
        self._runs: dict[str, _Run] = {}
        self._watchdog: asyncio.Task | None = None
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        # Executor-clock seconds forgiven to every action by _forgive_stall so far: a wait
        # (agent_wait) that saw a stall is not forgiven that part twice.
        self._forgiven = 0.0
        # Called with the real seconds from a step's end to the start of the next one (the
        # commit between them), when set (benchmarks).
        self.on_step_gap: Callable[[float], None] | None = None

    # What the service layer asks.

    def is_running(self, node_name: str) -> bool:
        return node_name in self._runs

    def live_progress(self, node_name: str) -> int | None:
        run = self._runs.get(node_name)
        return None if run is None else run.progress

    @property
    def running_count(self) -> int:
        return len(self._runs)

    async def wait_idle(self) -> None:
        """Returns when no action is running (tests and benchmarks)."""
        await self._idle.wait()

    # Starting and resuming.

    def start_watchdog(self) -> None:
        self._watchdog = asyncio.create_task(self._watch_timers(), name="executor-watchdog")

    async def start(self, record: ActionRecord, node: NodeRef) -> ActionRecord:
        """Commits `record` (the first state of its process) and starts driving it."""
        await self.start_many([(record, node)])
        return record

    async def start_many(self, starts: Sequence[tuple[ActionRecord, NodeRef]]) -> None:
        """Commits each record (the first state of its process) in one commit, then starts
        driving each. Busy, starting none, when the agent is stopping or one of the nodes runs
        an action; the store's error, starting none, when the commit fails."""
        if self._stopping:
            raise Busy("the agent is stopping")
        for record, _ in starts:
            if record.node_name in self._runs:
                raise Busy(f"node {record.node_name!r} is busy with an unfinished action")
        runs = [
            _Run(record=record, process=self._type.processes[record.process], node=node)
            for record, node in starts
        ]
        changes: list[Change] = []
        for run in runs:
            self._claim(run)
            changes += [SaveAction(run.record), LogTransition(self._entry(run.record, "enter"))]
        # The commit runs on its own: when the caller is cancelled (the controller's RPC went away)
        # the write may still land, and an action committed but never spawned would sit in its
        # first state, refusing every StartAction until a restart.
        commit = asyncio.ensure_future(self._write(changes))

        def spawn_each(done: asyncio.Future) -> None:
            # A slice per turn of the event loop: a thousand actions spawned at once would run
            # their first steps in one turn and all end them together, each then waiting for
            # the others' commits.
            for run in runs[:SPAWN_SLICE]:
                self._spawn_if_committed(run, done)
            del runs[:SPAWN_SLICE]
            if runs:
                asyncio.get_running_loop().call_soon(spawn_each, done)

        commit.add_done_callback(spawn_each)
        await asyncio.shield(commit)

    def resume(self, actions: list[ActionRecord], nodes: Mapping[str, NodeRef]) -> list[str]:
        """Starts driving unfinished actions found in the store; returns the resumed node names."""
        resumed = []
        for record in actions:
            if record.final or record.node_name in self._runs:
                continue
            node = nodes.get(record.node_name) or NodeRef(record.node_name, {"ip": record.node_ip})
            process = self._type.processes.get(record.process)
            if process is None:
                # The node type no longer has this process (an upgrade changed it); a run with
                # no states, only ever lost.
                process = Process(record.process, ())
            run = _Run(record=record, process=process, node=node)
            if not self._locate(run):
                # The node type no longer has this process or state (an upgrade changed it).
                self._claim(run)
                run.task = asyncio.create_task(self._lose(run, "its state no longer exists"))
                continue
            self._claim(run)
            self._spawn(run)
            resumed.append(record.node_name)
        if resumed:
            log.info("resumed %d unfinished action(s)", len(resumed))
        return resumed

    def _locate(self, run: _Run) -> bool:
        names = run.process.state_names
        idx = run.record.state_idx
        if 0 <= idx < len(names) and names[idx] == run.record.state:
            return True
        if run.record.state in names:
            run.record = replace(run.record, state_idx=names.index(run.record.state))
            return True
        return False

    def _claim(self, run: _Run) -> None:
        run.elapsed_base = run.record.elapsed
        run.driven_since = self._duration_clock()
        self._runs[run.record.node_name] = run
        self._idle.clear()

    def _release(self, run: _Run) -> None:
        # The context holds the action's secrets; the run may outlive this a little (a task).
        run.context = None
        if self._runs.get(run.record.node_name) is run:
            del self._runs[run.record.node_name]
        if not self._runs:
            self._idle.set()

    def _spawn_if_committed(self, run: _Run, commit: asyncio.Future) -> None:
        # The one place that knows the commit landed, whether or not the caller still awaits it
        # (a cancelled StartAction returns nothing): the "started" line is written here, once.
        record = run.record
        if commit.cancelled() or commit.exception() is not None:
            self._release(run)
        elif self._stopping:
            # Committed after stop() (SIGTERM during StartAction): the next start resumes it.
            log.info("%s: %s committed while stopping; the next start resumes it",
                     record.node_name, record.process)
            self._release(run)
        else:
            log.info("%s: %s started in state %s", record.node_name, record.process, record.state)
            self._spawn(run)

    def _spawn(self, run: _Run) -> None:
        run.task = asyncio.create_task(self._drive(run), name=f"action-{run.record.node_name}")

    # Driving one action.

    async def _drive(self, run: _Run) -> None:
        # This task's own context (a copy): the steps run in it, agent_wait reads it.
        _CURRENT.set((self, run))
        step_ended: float | None = None
        try:
            while not run.record.final:
                spec = run.process.states[run.record.state_idx]
                if step_ended is not None and self.on_step_gap is not None:
                    self.on_step_gap(time.perf_counter() - step_ended)
                step_ended = None
                try:
                    verdict = await self._run_state(run, spec)
                    if verdict == DONE:
                        step_ended = time.perf_counter()
                        await self._enter(run, run.record.state_idx + 1)
                    else:
                        await self._lose(run, f"state {spec.name} timed out after {spec.lost:g} s")
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # A store failure (disk full, database gone): the recorded state is still
                    # right, so wait and try the state again.
                    log.exception("%s: %s failed; trying again", run.record.node_name, spec.name)
                    await asyncio.sleep(self._timing.retry_seconds)
        finally:
            self._release(run)

    async def _run_state(self, run: _Run, spec: State) -> str:
        run.state_entered = self._clock.monotonic()
        run.progress = 0
        # Stalls of this state in this run: an agent restart starts the ladder (and the timers)
        # again from the bottom, as it runs the state again from its exec.
        stalls = 0
        while True:
            verdict = await self._watched(run, spec, self._perform(run, spec))
            if verdict != STALLED:
                return verdict
            stalls += 1
            rung = spec.ladder.rung(stalls)
            log.warning(
                "%s: no progress in %s for %g s (stall %d): %s",
                run.record.node_name, spec.name, spec.before_reboot, stalls, rung.name.lower(),
            )
            if await self._escalate(run, spec, rung) == LOST:
                return LOST

    async def _escalate(self, run: _Run, spec: State, rung: Rung) -> str:
        """Takes one rung of the state's ladder, logged in the transition log under the rung's
        name; a power cycle (hard reboot or power cut) also counts in `reboots`. LOST when the
        state's `lost` timer ran out meanwhile, else DONE. A power call that itself makes no
        progress for before_reboot seconds is made again."""
        if rung is Rung.RETRY:
            with agent_wait():
                await self._commit([LogTransition(self._entry(run.record, rung.value))])
            return DONE
        while True:
            work = self._hard_reboot(run) if rung is Rung.HARD_REBOOT else self._power_cut(run, spec)
            verdict = await self._watched(run, spec, work)
            if verdict == LOST:
                return LOST
            if verdict == DONE:
                break
        run.record = run.record.but(reboots=run.record.reboots + 1, elapsed=self._elapsed(run))
        with agent_wait():
            await self._commit([UpdateState(run.record), LogTransition(self._entry(run.record, rung.value))])
        return DONE

    async def _watched(
        self, run: _Run, spec: State, work: Coroutine[object, object, None]
    ) -> str:
        """Runs `work` under the state's timers; DONE, STALLED or LOST.

        `work` runs in the action's own task, which the watchdog cancels to end it, as
        asyncio.timeout does (no task per state: a thousand nodes make twelve thousand of
        them). The watchdog's cancels are counted (run.cancels) and taken back here with
        Task.uncancel; any other cancel (stop()) still ends the action's task."""
        task = asyncio.current_task()
        assert task is not None, "the executor drives actions in tasks"
        run.spec = spec
        run.verdict = None
        run.cancels = 0
        run.last_progress = self._clock.monotonic()
        run.watched = task
        try:
            await work
        except asyncio.CancelledError:
            if run.verdict is None:
                raise
        except Exception:
            if run.verdict is None:
                raise
        finally:
            run.watched = None
            for _ in range(run.cancels):
                task.uncancel()
            run.cancels = 0
        # Cancelled by someone else too, whether `work` let the cancel through or swallowed it.
        if task.cancelling():
            raise asyncio.CancelledError
        return DONE if run.verdict is None else run.verdict

    async def _watch_timers(self) -> None:
        real_before, clock_before = time.monotonic(), self._clock.monotonic()
        while True:
            await asyncio.sleep(self._timing.watchdog_seconds)
            real_now, clock_now = time.monotonic(), self._clock.monotonic()
            try:
                self._forgive_stall(real_now - real_before, clock_now - clock_before)
                self._check_timers()
            except Exception:
                # The watchdog must outlive a bad clock reading or a bug in one check.
                log.exception("watchdog check failed")
            real_before, clock_before = real_now, clock_now

    def _forgive_stall(self, real_elapsed: float, clock_elapsed: float) -> None:
        """A late wake-up means the agent's own event loop was too busy to run anything (a
        thousand StartActions at once, a slow disk): no step could progress then, so that time
        does not count against the nodes' timeouts. It matters when sim timeouts are compressed
        to a second or so; with real timeouts a stall is far shorter than any of them."""
        late = real_elapsed - self._timing.watchdog_seconds
        if late < max(0.1, self._timing.watchdog_seconds) or real_elapsed <= 0:
            return
        shift = clock_elapsed * late / real_elapsed
        self._forgiven += shift
        for run in self._runs.values():
            run.state_entered += shift
            run.last_progress += shift

    def _wait_began(self, run: _Run) -> None:
        run.agent_waits += 1
        if run.agent_waits == 1:
            run.wait_began = self._clock.monotonic()
            run.forgiven_then = self._forgiven

    def _wait_ended(self, run: _Run) -> None:
        run.agent_waits -= 1
        if run.agent_waits:
            return
        # The wait's length on the executor's clock, less what _forgive_stall already gave back
        # meanwhile: the timers continue where they were when the wait began.
        shift = (self._clock.monotonic() - run.wait_began) - (self._forgiven - run.forgiven_then)
        if shift > 0:
            run.state_entered += shift
            run.last_progress += shift

    def _check_timers(self) -> None:
        now = self._clock.monotonic()
        for run in list(self._runs.values()):
            task, spec = run.watched, run.spec
            if task is None or task.done() or spec is None:
                continue
            if run.verdict is not None:
                # Decided, and the work still runs: its cancel was swallowed (Python 3.11's
                # asyncio.wait_for returns the inner outcome when it completes as the cancel
                # arrives; a step failing fast then retried forever, never lost). Ask again.
                self._cancel_watched(run, task)
                continue
            if run.agent_waits:
                # Waiting for the agent itself: the timers are paused (agent_wait).
                continue
            if spec.lost and now - run.state_entered >= spec.lost:
                run.verdict = LOST
                self._cancel_watched(run, task)
            elif spec.before_reboot and now - max(run.last_progress, run.held_until) >= spec.before_reboot:
                run.verdict = STALLED
                self._cancel_watched(run, task)

    @staticmethod
    def _cancel_watched(run: _Run, task: asyncio.Task) -> None:
        run.cancels += 1
        task.cancel()

    def _context(self, run: _Run) -> StepContext:
        # One per action: what it holds does not change while the action runs (only a final
        # state drops the secrets, and a final state runs no step).
        if run.context is None:
            run.context = StepContext(
                node=run.node,
                process=run.record.process,
                environment=run.record.environment_spec,
                properties=run.record.properties,
                driver=self._driver,
            )
        return run.context

    async def _perform(self, run: _Run, spec: State) -> None:
        step = spec.step
        if step is None:
            # Only final states have no step, and a final state is never driven.
            return
        ctx = self._context(run)
        run.failures = 0
        # Progress counts from this attempt: a copy started again after a reboot makes progress
        # from 0, not only once it passes where the hung copy stopped.
        run.progress = 0
        if step.exec is not None:
            await self._retrying(run, spec.name, step.exec, ctx)
        post = step.post
        if post is None:
            return
        while True:
            try:
                poll = _checked(await post(ctx))
            except asyncio.CancelledError:
                if not _cancelled_from_within():
                    raise
                await self._failed(run, spec.name, DriverError(_CANCELLED_WITHIN))
                poll = Poll(done=False)
            except Exception as exc:
                await self._failed(run, spec.name, exc)
                poll = Poll(done=False)
            if poll.progress is not None:
                if poll.progress > run.progress:
                    run.last_progress = self._clock.monotonic()
                run.progress = poll.progress
            if poll.done:
                return
            await asyncio.sleep(self._poll_delay(poll))

    def _poll_delay(self, poll: Poll) -> float:
        if poll.retry_after is None:
            return self._timing.poll_seconds
        return min(max(poll.retry_after, self._timing.min_poll_seconds), self._timing.poll_seconds)

    async def _retrying(
        self, run: _Run, what: str, call: Callable[_P, Awaitable[None]], *args: _P.args, **kwargs: _P.kwargs
    ) -> None:
        """call(*args) until it returns, each failure recorded (_failed) and followed by a pause."""
        while True:
            try:
                await call(*args, **kwargs)
                return
            except asyncio.CancelledError:
                if not _cancelled_from_within():
                    raise
                await self._failed(run, what, DriverError(_CANCELLED_WITHIN))
            except Exception as exc:
                await self._failed(run, what, exc)
            await asyncio.sleep(self._timing.retry_seconds)

    async def _failed(self, run: _Run, what: str, exc: Exception) -> None:
        if isinstance(exc, DiskFull):
            # A driver that saves its state (the sim) on a full disk: the database worker says
            # so once a minute for every node at once.
            return
        run.failures += 1
        level = logging.INFO if run.failures == 1 else logging.DEBUG
        log.log(level, "%s: %s: %s (trying again)", run.record.node_name, what, exc)
        message = self._error_line(run.record, f"{what}: {exc or type(exc).__name__}")
        if message == run.record.last_error:
            return
        run.record = run.record.but(last_error=message, elapsed=self._elapsed(run))
        try:
            await self._write([SaveAction(run.record)])
        except DiskFull:
            # The error stays in run.record, committed with the next state (the database worker
            # says the disk is full); the step's own retry does not wait for space.
            pass
        except Exception:
            log.exception("%s: could not record the error", run.record.node_name)

    async def _hard_reboot(self, run: _Run) -> None:
        run.failures = 0
        await self._retrying(run, "hard reboot", self._power.hard_reboot, run.node)

    async def _power_cut(self, run: _Run, spec: State) -> None:
        run.failures = 0
        await self._retrying(run, "power cut: off", self._power.set_power, run.node, False)
        await self._hold(run, spec.ladder.power_cut_seconds)
        await self._retrying(run, "power cut: on", self._power.set_power, run.node, True)

    async def _hold(self, run: _Run, seconds: float) -> None:
        """Waits `seconds` on the executor's clock (a simulated testbed's clock runs fast). The
        wait is the work itself, so it counts as progress for the state's before_reboot timer;
        its `lost` timer still runs."""
        until = self._clock.monotonic() + seconds
        run.held_until = until
        while (left := until - self._clock.monotonic()) > 0:
            # In real seconds, never more than a poll: a fast clock's seconds are shorter.
            await asyncio.sleep(min(left, self._timing.poll_seconds))
        run.last_progress = self._clock.monotonic()

    def _elapsed(self, run: _Run) -> float:
        """Real seconds this action has been driven, over every run of the agent."""
        return run.elapsed_base + max(0.0, self._duration_clock() - run.driven_since)

    # Commits.

    async def _commit(self, changes: Sequence[Change]) -> None:
        """Writes `changes` once they can be: while the disk is full (the database worker says so
        in the log, once a minute) it waits and writes them again, so a step that is done is not
        run again and nothing it did is lost; the action goes on when there is space."""
        while True:
            try:
                await self._write(changes)
                return
            except DiskFull:
                await asyncio.sleep(self._timing.retry_seconds)

    def _entry(self, record: ActionRecord, event: str) -> TransitionRecord:
        return TransitionRecord(
            node_name=record.node_name,
            action_id=record.action_id,
            process=record.process,
            state=record.state,
            state_idx=record.state_idx,
            event=event,
            at=self._wall(),
        )

    async def _enter(self, run: _Run, idx: int) -> None:
        state = run.process.states[idx].name
        record = run.record.but(
            state=state, state_idx=idx, updated_at=int(self._wall()), progress=0,
            elapsed=self._elapsed(run),
        )
        # Within an action only the state columns change; a final state also drops the secrets,
        # so the whole row is written.
        change: Change = UpdateState(record)
        if state in FINAL_STATES:
            record = self._without_secrets(record)
            change = SaveAction(record)
        await self._commit([change, LogTransition(self._entry(record, "enter"))])
        run.record = record
        run.progress = 0
        if record.final:
            log.info("%s: %s ended in %s", record.node_name, record.process, state)
        else:
            log.debug("%s: %s -> %s", record.node_name, record.process, state)

    async def _lose(self, run: _Run, why: str) -> None:
        before = run.record.last_error
        reason = f"lost: {why}" + (f"; last error: {before}" if before else "")
        record = self._without_secrets(
            replace(
                run.record, state=LOST, updated_at=int(self._wall()), progress=run.progress,
                elapsed=self._elapsed(run), last_error=self._error_line(run.record, reason),
            )
        )
        await self._commit([SaveAction(record), LogTransition(self._entry(record, "lost"))])
        run.record = record
        self._release(run)
        log.error("%s: %s lost: %s", record.node_name, record.process, why)

    def _error_line(self, record: ActionRecord, message: str) -> str:
        """`message` as a last_error: the action's secret property values and whatever looks
        like a credential scrubbed, one line, at most MAX_LAST_ERROR characters."""
        secret = {spec.name for spec in self._type.properties if spec.secret}
        return error_line(message, [v for k, v in record.properties.items() if k in secret])

    def _without_secrets(self, record: ActionRecord) -> ActionRecord:
        # A finished action needs no password any more; it is not kept on disk.
        secret = {spec.name for spec in self._type.properties if spec.secret}
        kept = {k: v for k, v in record.properties.items() if k not in secret}
        return replace(record, properties=kept)

    # Stopping.

    async def stop(self) -> None:
        """Stops every action between two commits: a commit already handed over completes, a
        step in progress is abandoned and runs again on the next start."""
        self._stopping = True
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        if self._watchdog is not None:
            tasks.append(self._watchdog)
        await cancel_and_wait(tasks)


_CANCELLED_WITHIN = "the step raised CancelledError (a cancelled call inside it), nobody cancelled it"


def _cancelled_from_within() -> bool:
    """Whether a CancelledError caught in an action's task came from the step itself (a
    library's cancelled future) rather than a cancel of the task (the watchdog's verdict,
    stop()): then it is a step error like any other, tried again under the state's timers,
    instead of ending the action's task and leaving the action undriven until a restart."""
    task = asyncio.current_task()
    return task is not None and not task.cancelling()


def _checked(poll: Poll) -> Poll:
    """`poll` when its progress is a percentage (0..100, or None); DriverError otherwise."""
    progress = poll.progress
    if progress is None:
        return poll
    if (
        isinstance(progress, bool)
        or not isinstance(progress, (int, float))
        or not math.isfinite(progress)
        or not 0 <= progress <= 100
    ):
        raise DriverError(f"the driver reported progress {progress!r}, outside 0..100")
    return poll if isinstance(progress, int) else replace(poll, progress=int(progress))
