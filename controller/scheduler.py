"""The scheduler: the background task that carries every reservation through its life.

It decides nothing itself: every decision is a pure function of controller/lifecycle.py (the
state table and the crash points are in its docstring); the scheduler gathers what they need,
writes what they decide (each a compare-and-set), and talks to the agents. Each poll (every
`poll_seconds`, or sooner when woken by a user's action):

1. The clock: `lifecycle.on_time` for every row it reads (start at start_date, or ahead of it
   with `[reservations] prestage`, controller/prestage.py; end at end_date), unless the wall
   clock jumped (controller.clock pauses this step until the clocks agree again or an
   administrator confirms the time). An ordinary poll reads only the rows the clock or an
   agent can change (`lifecycle.watched`); a full one, every `refresh_seconds`, every row
   started or starting.
2. One round per connected agent, each on its own task, so a slow or hung agent delays no
   other: ONE GetActionState for the agent's rows it must follow (an intention or an action
   under way, `lifecycle.may_change_on_agent`; in a full poll the deployed ones too); the
   report's decisions (`lifecycle.on_report`: mirror, adopt, remove, wait, or issue), the
   claims of the intentions to send among them, in one transaction; ONE StartActions for the
   claims written (AgentClient.start_actions: StartAction per node for an older agent);
   `lifecycle.after_start` for each item's result, in one transaction. `poll` waits for the
   rounds (the background task at most `poll_seconds`: a round still waiting for its agent
   goes on alone, and its agent is left out of later polls until it is over).
3. Removals waiting for reservations to end (an administrator's forced removal of an agent or
   node): each whose last reservation is gone is carried out.

Every write also applies the decision's effect on its node (store.schedule.update_schedule):
the history row of a reservation that ends, maintenance for a node whose destroy ended lost,
and the node's count of actions in a row that ended lost (`lifecycle.count_final` with the
`[maintenance] lost_in_a_row` setting).

Every action seen reaching a final state (in a report that led to a decision, or in
StartAction's answer) is recorded as the node's outcome (controller/health.py) before the
decisions are written, so a crash in between records it again, harmlessly, on the next poll.

Each agent's rows (and its actions' outcomes) are written in transactions of their own,
concurrently: a write the database refuses (a value it cannot hold, a lock lost) fails that
agent's writes only, which its next poll decides again, and says so in the agent's last_error;
the other agents' reservations go on. What an agent answers was checked before
(controller/replies.py, in the client): a bad reply leaves that agent's rows waiting, as if it
had not answered.

A claim (`pending_issued` and the `baseline`) is on disk before its StartAction is sent, so a
controller killed at any moment resolves, on restart, every intention that may have been sent
by comparing the baseline with what the agent reports.

Several controllers may share the database (controller/leases.py): each poll starts by asking
the leases which agents this controller drives now (`AgentLeases.owned`), and follows only
those agents' rows (the rows of no agent, and the removals, go with the LEADER lease). Every
write carries the agent's fence, checked in its own transaction, so a controller that lost an
agent to another changes none of its rows; a StartAction is sent only while the lease lasts a
whole call deadline more.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from edgebed.controller import health, lifecycle, replies
from edgebed.controller.agent_client import AgentClient, StartItem
from edgebed.controller.clock import ClockGuard
from edgebed.controller.domain import ActionState, AgentRecord, NodeOutcome, ScheduleRecord
from edgebed.controller.errors import AgentUnavailable, NotFound, ServiceError, StorageFull
from edgebed.controller.inventory import Inventory
from edgebed.controller.leases import AgentLeases, Ownership
from edgebed.controller.lifecycle import Decision, Outcome, StartResult, Transition
from edgebed.controller.metrics import Metrics
from edgebed.controller.prestage import Prestager
from edgebed.controller.settings import Settings
from edgebed.controller.store import LEADER, WRITE_ERRORS, CachedNode, LeaseLost, Store
from edgebed.tasks import cancel_and_wait

log = logging.getLogger(__name__)

# What an agent's last_error says when the database refused its rows' updates (replies.not_stored).
_NOT_STORED = "its reservations' updates"


@dataclass
class PollReport:
    """What one poll did; for tests and logs."""

    state_calls: dict[str, int] = field(default_factory=dict)  # agent -> GetActionState calls
    started: list[str] = field(default_factory=list)  # "node:process" accepted by StartAction
    adopted: list[str] = field(default_factory=list)  # "node:process" found running after all
    removed: list[str] = field(default_factory=list)  # nodes whose reservation's rows went
    clock_paused: bool = False  # the wall clock jumped: nothing started or ended by the clock
    finished: list[str] = field(default_factory=list)  # "node:final_state" outcomes recorded
    retired: list[str] = field(default_factory=list)  # "agent:NAME" or "node:NAME" removed


@dataclass(frozen=True)
class _Followed:
    """A row the scheduler follows, the agent of its node and that agent's report of it."""

    agent: AgentRecord
    row: ScheduleRecord
    action: ActionState | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.row.node_name, self.row.owner)


# What the log says when a decision is written; transitions not listed are routine.
_LOGGED: Mapping[Transition, tuple[int, str]] = {
    Transition.ORPHAN: (logging.WARNING, "node %s left the inventory; ending %s's reservation without destroy"),
    Transition.ADOPT: (logging.INFO, "adopting the action on %s for %s: the agent runs it already"),
    Transition.REMOVE: (logging.INFO, "reservation of %s by %s ended: the node is destroyed"),
    Transition.REMOVE_LOST: (
        logging.ERROR, "reservation of %s by %s ended: its destroy ended lost; the node is in maintenance",
    ),
    Transition.ABANDON: (
        logging.ERROR,
        "reservation of %s by %s ends without destroy: the agent refused it; the node is in maintenance",
    ),
    Transition.HOLD: (logging.WARNING, "node %s is in maintenance: the first deploy for %s waits"),
}



class Scheduler:
    def __init__(
        self,
        store: Store,
        client: AgentClient,
        inventory: Inventory,
        settings: Settings,
        metrics: Metrics,
        *,
        clock: Callable[[], float],
        guard: ClockGuard,
        leases: AgentLeases,
    ) -> None:
        self._store = store
        self._leases = leases
        # The agents this controller drives during the current poll, with their fences.
        self._ownership = Ownership({})
        self._client = client
        self._inventory = inventory
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._guard = guard
        self._count_final = functools.partial(lifecycle.count_final, limit=settings.lost_in_a_row)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._refresh_task: asyncio.Task | None = None
        self._next_refresh = 0.0
        self._prestage = Prestager(store, settings)
        # Each agent's round still running (poll's `patience`), and when the next full poll is due.
        self._rounds: dict[str, asyncio.Task] = {}
        self._next_sweep = 0.0

    # -- the background task -------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="edgebed-scheduler")

    async def stop(self) -> None:
        tasks = [task for task in (self._task, self._refresh_task, *self._rounds.values()) if task is not None]
        await cancel_and_wait(tasks)
        self._task = self._refresh_task = None
        self._rounds.clear()

    def wake(self) -> None:
        """Runs the next poll now (after a user's action) instead of at the next tick."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._maybe_refresh_inventory()
            try:
                # An agent's round still running after poll_seconds goes on alone: the next
                # poll serves the other agents on time.
                await self.poll(patience=self._settings.poll_seconds)
            except StorageFull:
                # The store says so once a minute; the poll wrote nothing (each write is one
                # transaction) and the next one starts over once there is space.
                pass
            except Exception:
                # A database or programming error in one poll must not stop the scheduler;
                # every step is idempotent, so the next poll starts over cleanly.
                log.exception("scheduler poll failed")
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the inner result when
            # a wake and stop()'s cancel come together, and the loop then never ended (a test's
            # teardown waited 60 s for it under CI load).
            try:
                async with asyncio.timeout(self._settings.poll_seconds):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    def _maybe_refresh_inventory(self) -> None:
        """Refreshes the node cache and catalogs in the background, so a hung agent never
        delays a poll."""
        if self._refresh_task is not None and not self._refresh_task.done():
            return
        if time.monotonic() < self._next_refresh:
            return
        self._next_refresh = time.monotonic() + self._settings.refresh_seconds
        self._refresh_task = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        try:
            # Only the agents this controller drives: each agent is refreshed by one controller.
            agents = await self._store.agents.list_agents()
            # No release here: a poll may be calling the agents meanwhile.
            ownership = await self._leases.owned((agent.name for agent in agents), release=False)
            await self._inventory.refresh([a for a in agents if ownership.drives(a.name)], catalogs=True)
        except StorageFull:
            pass  # logged by the store, once a minute
        except Exception:
            log.exception("inventory refresh failed")

    # -- one poll --------------------------------------------------------------------------

    async def poll(self, *, patience: float | None = None, full: bool | None = None) -> PollReport:
        """One round: the clock, then each agent's round (its report, the decisions on it,
        StartActions for the claims, the decisions on the answers), then the removals whose
        reservations are all gone.

        Each agent's round runs on its own, acting on that agent's reply as soon as it is in:
        a slow or hung agent delays no other agent's starts or updates. `patience`: seconds to
        wait for the agents' rounds (None: until all are over); a round still running then goes
        on in the background, and later polls leave its agent alone until it is over.
        `full`: also ask the agents about reservations whose action is over (DONE), which
        nothing but the agent itself can change; None: when `refresh_seconds` have passed since
        the last full poll (the first poll is full).

        While the clock guard is paused (the wall clock jumped), the clock step is skipped: no
        reservation starts or ends, but the agents' reports are still followed and the users'
        own actions still sent.
        """
        report = PollReport()
        clocks = self._guard.check()
        report.clock_paused = clocks.paused
        now = int(self._clock())
        self._metrics.record_poll()
        if full is None:
            full = time.monotonic() >= self._next_sweep
        if full:
            self._next_sweep = time.monotonic() + self._settings.refresh_seconds
        # With prestage, rows starting within the longest lead are due too.
        until = now + await self._prestage.horizon()
        read_at = time.monotonic()
        agents = {agent.name: agent for agent in await self._store.agents.list_agents()}
        self._client.readmit(agents.values(), read_at)
        self._ownership = await self._leases.owned(agents)
        rows = await self._rows(now, until, full)
        if rows:
            nodes = await self._inventory.cached_nodes({row.node_name for row in rows})
            maintained = await self._store.maintenance.active()
            rows = self._driven(rows, nodes, agents)
            if not clocks.paused:
                rows = await self._apply_clock(rows, nodes, maintained, agents, now, until, full, report)
            await self._agent_rounds(rows, nodes, agents, now, patience, full, report)
        if self._ownership.drives(LEADER):
            await self._retire(report)
        return report

    async def _rows(self, now: int, until: int, full: bool) -> list[ScheduleRecord]:
        """The rows this poll looks at: those the clock or an agent can change now
        (lifecycle.watched), or with `full` every row starting by `until` or started."""
        if full:
            return await self._store.schedule.list_schedule(started_before=until)
        return await self._store.schedule.list_watched(now=now, until=until)
    @staticmethod
    def _driver(row: ScheduleRecord, nodes: Mapping[str, CachedNode], agents: Mapping[str, AgentRecord]) -> str:
        """The lease a row's writes go under: its node's agent, or LEADER for a node that left
        the inventory or whose agent is gone."""
        node = nodes.get(row.node_name)
        return node.agent if node is not None and node.agent in agents else LEADER

    def _driven(
        self, rows: Iterable[ScheduleRecord], nodes: Mapping[str, CachedNode], agents: Mapping[str, AgentRecord]
    ) -> list[ScheduleRecord]:
        """The rows this controller drives in this poll (the others are another controller's)."""
        return [row for row in rows if self._ownership.drives(self._driver(row, nodes, agents))]

    async def _apply_clock(
        self,
        rows: list[ScheduleRecord],
        nodes: Mapping[str, CachedNode],
        maintained: Mapping[str, str],
        agents: Mapping[str, AgentRecord],
        now: int,
        until: int,
        full: bool,
        report: PollReport,
    ) -> list[ScheduleRecord]:
        """Writes what `lifecycle.on_time` decides; the rows as they are afterwards (those
        deleted left out)."""
        plans = await self._prestage.plans(rows, nodes, now)
        timed = [
            (self._driver(row, nodes, agents), decision)
            for row in rows
            if (
                decision := lifecycle.on_time(
                    row,
                    now,
                    in_inventory=row.node_name in nodes,
                    in_maintenance=row.node_name in maintained,
                    prestage=plans.get((row.node_name, row.owner)),
                )
            )
        ]
        if not timed:
            return rows
        applied = await self._write(timed, agents, now, report)
        if not all(applied):
            # A row changed meanwhile (a user's action): read them all again.
            return self._driven(await self._rows(now, until, full), nodes, agents)
        # Every decision applied: the rows as written, without reading thousands again.
        decided = {(decision.node_name, decision.owner): decision for _, decision in timed}
        written = []
        for row in rows:
            decision = decided.get((row.node_name, row.owner))
            after = row if decision is None else lifecycle.after(row, decision)
            if after is not None:
                written.append(after)
        return written

    async def _agent_rounds(
        self,
        rows: Sequence[ScheduleRecord],
        nodes: Mapping[str, CachedNode],
        agents: Mapping[str, AgentRecord],
        now: int,
        patience: float | None,
        full: bool,
        report: PollReport,
    ) -> None:
        """Starts one round per usable agent with rows to follow (lifecycle.follows_agent with
        `full`, else lifecycle.may_change_on_agent) and no round still running, and waits for
        them as `patience` says."""
        follows = lifecycle.follows_agent if full else lifecycle.may_change_on_agent
        tracked = self._by_usable_agent(filter(follows, rows), nodes, agents)
        blocked = lifecycle.blocked_rows(rows)
        started: list[asyncio.Task] = []
        for name, agent_rows in tracked.items():
            if name in self._rounds:
                continue  # its previous round is still waiting for it
            task = asyncio.get_running_loop().create_task(
                self._agent_round(agents[name], agent_rows, blocked, agents, now, report),
                name=f"edgebed-round-{name}",
            )
            self._rounds[name] = task
            task.add_done_callback(functools.partial(self._round_over, name))
            started.append(task)
            report.state_calls[name] = 1
        if not started:
            return
        if patience is None:
            # A round's error is raised here too (tests; a crash stands for one).
            await asyncio.gather(*started)
        else:
            await asyncio.wait(started, timeout=patience)

    def _round_over(self, name: str, task: asyncio.Task) -> None:
        if self._rounds.get(name) is task:
            del self._rounds[name]
        if not task.cancelled() and isinstance(task.exception(), StorageFull):
            return  # the store says so, once a minute; the next poll decides again
        if not task.cancelled() and task.exception() is not None:
            # A database or programming error in one agent's round: its rows wait for the next
            # poll, which decides again; the other agents' rounds are not affected.
            log.error("the scheduler's round for agent %s failed", name, exc_info=task.exception())

    async def _agent_round(
        self,
        agent: AgentRecord,
        rows: Sequence[ScheduleRecord],
        blocked: set[tuple[str, str]],
        agents: Mapping[str, AgentRecord],
        now: int,
        report: PollReport,
    ) -> None:
        """One agent's round: ONE GetActionState for its rows, `lifecycle.on_report` for each
        (claims among the writes, in one transaction), StartActions for the claims written, and
        `lifecycle.after_start` for each result (one transaction)."""
        try:
            states = await self._action_states(agent, {row.node_name for row in rows})
        except ServiceError:
            # The agent did not answer, or its reply was refused: flagged by the client's
            # observer; its rows wait for it.
            return
        followed = [_Followed(agent, row, states.get(row.node_name)) for row in rows]
        claimed = await self._apply_reports(followed, blocked, agents, now, report)
        await self._issue(agent, claimed, agents, now, report)

    async def _action_states(self, agent: AgentRecord, nodes: set[str]) -> dict[str, ActionState]:
        """GetActionState for `nodes`, unless this controller's lease on the agent ran out since
        the poll began (it was paused): then another controller may be asking it already."""
        if not self._leases.valid_for(agent.name, 0):
            raise AgentUnavailable(f"not asked: this controller's lease on agent {agent.name} ran out")
        return await self._client.action_states(agent, nodes)

    def _by_usable_agent(
        self, rows: Iterable[ScheduleRecord], nodes: Mapping[str, CachedNode], agents: Mapping[str, AgentRecord]
    ) -> dict[str, list[ScheduleRecord]]:
        """{agent name: its rows} for the agents the client may call now; rows of nodes that left
        the inventory or of disconnected agents are left out until they are back."""
        tracked: dict[str, list[ScheduleRecord]] = defaultdict(list)
        for row in rows:
            node = nodes.get(row.node_name)
            agent = agents.get(node.agent) if node else None
            if agent is not None and self._client.usable(agent):
                tracked[agent.name].append(row)
        return tracked

    async def _apply_reports(
        self,
        followed: Sequence[_Followed],
        blocked: set[tuple[str, str]],
        agents: Mapping[str, AgentRecord],
        now: int,
        report: PollReport,
    ) -> list[ScheduleRecord]:
        """Writes what `lifecycle.on_report` decides for one agent's rows, claims included, in
        one transaction; the claimed rows, as written, for StartActions."""
        decided = [
            (seen, decision)
            for seen in followed
            if (decision := lifecycle.on_report(seen.row, seen.action, blocked=seen.key in blocked))
        ]
        await self._record_outcomes([(seen.agent, seen.action) for seen, _ in decided], report)
        applied = await self._write(
            [(seen.agent.name, decision) for seen, decision in decided], agents, now, report
        )
        claimed = []
        for (seen, decision), ok in zip(decided, applied, strict=True):
            if ok and decision.issues:
                row = lifecycle.after(seen.row, decision)
                assert row is not None, "a claim keeps its row"
                claimed.append(row)
        return claimed

    async def _write(
        self,
        decisions: Sequence[tuple[str, Decision]],
        agents: Mapping[str, AgentRecord],
        now: int,
        report: PollReport,
    ) -> list[bool]:
        """Writes `decisions`, (agent name, decision) pairs, with their effects on the nodes,
        each agent's in one transaction of its own, concurrently; whether each applied. A row
        that changed since it was read is left as it is, and so are all of an agent's rows when
        the database refused its transaction: their next poll decides again."""
        if not decisions:
            return []
        groups: dict[str, list[int]] = defaultdict(list)
        for index, (agent, _) in enumerate(decisions):
            groups[agent].append(index)
        results = await asyncio.gather(
            *(self._write_agent(agent, [decisions[i][1] for i in indexes], agents.get(agent), now)
              for agent, indexes in groups.items())
        )
        applied = [False] * len(decisions)
        for indexes, result in zip(groups.values(), results, strict=True):
            for index, ok in zip(indexes, result, strict=True):
                applied[index] = ok
        for (_, decision), ok in zip(decisions, applied, strict=True):
            if not ok:
                continue
            if decision.delete:
                report.removed.append(decision.node_name)
            if decision.transition is Transition.ADOPT:
                report.adopted.append(f"{decision.node_name}:{decision.changes['process']}")
            if decision.transition in _LOGGED:
                level, message = _LOGGED[decision.transition]
                log.log(level, message, decision.node_name, decision.owner)
        return applied

    async def _write_agent(
        self, name: str, decisions: Sequence[Decision], agent: AgentRecord | None, now: int
    ) -> list[bool]:
        """One agent's decisions in one transaction, under the agent's fence; all False when the
        lease was lost meanwhile, or the database refuses it (logged, and said in the agent's
        last_error until one of its writes succeeds)."""
        fence = self._ownership.fence(name)
        if fence is None:
            return [False] * len(decisions)  # not this controller's (cannot happen: rows are filtered)
        try:
            applied = await self._store.schedule.update_schedule(
                decisions, now=now, count_final=self._count_final, fence=fence
            )
        except LeaseLost as lost:
            # Another controller drives the agent now and decides again from what it reads.
            log.warning("%s: %d updates not written", lost, len(decisions))
            return [False] * len(decisions)
        except WRITE_ERRORS as exc:
            if self._lost_meanwhile(name, exc, "updates of its reservations"):
                return [False] * len(decisions)
            log.error("the database refused the updates of agent %s's reservations", name, exc_info=exc)
            message = replies.not_stored(_NOT_STORED, exc)
            if agent is not None and agent.last_error != message:
                await self._store.agents.set_agent_status(agent.name, last_error=message)
            return [False] * len(decisions)
        if agent is not None and replies.is_not_stored(agent.last_error, _NOT_STORED):
            await self._store.agents.set_agent_status(agent.name, last_error="")
        return applied

    async def _issue(
        self,
        agent: AgentRecord,
        claimed: Sequence[ScheduleRecord],
        agents: Mapping[str, AgentRecord],
        now: int,
        report: PollReport,
    ) -> None:
        """Starts the claimed rows' actions on `agent` (their claims are on disk): StartActions
        (AgentClient.start_actions: batched, or per node for an older agent), and writes what
        `lifecycle.after_start` decides for each item's result, in one transaction."""
        if not claimed:
            return
        props = await self._store.schedule.action_props_for([(row.node_name, row.owner) for row in claimed])
        answers: list[ActionState | ServiceError] = []
        # Each node at most once per call: two owners' claims on one node (never expected, the
        # lifecycle blocks a handover before the destroy) go in calls of their own.
        for batch in _once_per_node(claimed):
            if not self._leases.valid_for(agent.name, self._settings.call_timeout_seconds):
                # The claims are on disk: whoever drives the agent next resolves them from the report.
                log.warning("StartActions (%d nodes) not sent: the lease on agent %s runs out", len(batch), agent.name)
                refused = AgentUnavailable(f"not sent: this controller's lease on agent {agent.name} runs out")
                answers += [refused] * len(batch)
                continue
            answers += await self._client.start_actions(
                agent,
                [
                    StartItem(
                        row.node_name,
                        row.pending,
                        environment=(properties := props.get((row.node_name, row.owner), {})).get("environment", ""),
                        properties=dict(properties),
                    )
                    for row in batch
                ],
            )
        ordered = [row for batch in _once_per_node(claimed) for row in batch]
        decisions = [
            self._answered(row, lifecycle.start_result(answer), report)
            for row, answer in zip(ordered, answers, strict=True)
        ]
        await self._record_outcomes([(agent, answer) for answer in answers], report)
        await self._write([(agent.name, d) for d in decisions if d is not None], agents, now, report)

    async def _record_outcomes(
        self, seen: Sequence[tuple[AgentRecord, ActionState | ServiceError | None]], report: PollReport
    ) -> None:
        """Records the outcome of every action among `seen` that is in a final state (the node
        type is its agent's); each action once, however often it is seen. Each agent's in a
        transaction of its own, so the database refusing one agent's stops no other's."""
        by_agent: dict[str, tuple[AgentRecord, list[NodeOutcome]]] = {}
        for agent, action in seen:
            if isinstance(action, ActionState) and (outcome := health.outcome_of(action, agent.type)):
                by_agent.setdefault(agent.name, (agent, []))[1].append(outcome)
        if not by_agent:
            return
        results = await asyncio.gather(
            *(self._record_agent_outcomes(agent, outcomes) for agent, outcomes in by_agent.values())
        )
        added = [outcome for result in results for outcome in result]
        if added:
            self._prestage.forget()
            report.finished += [f"{outcome.node_name}:{outcome.final_state}" for outcome in added]

    async def _record_agent_outcomes(
        self, agent: AgentRecord, outcomes: Sequence[NodeOutcome]
    ) -> list[NodeOutcome]:
        try:
            return await self._store.health.record_outcomes(
                outcomes, recorded_at=int(self._clock()), keep=health.OUTCOMES_PER_NODE
            )
        except WRITE_ERRORS as exc:
            if self._lost_meanwhile(agent.name, exc, "action outcomes"):
                return []
            log.error("the database refused the action outcomes reported by agent %s", agent.name, exc_info=exc)
            message = replies.not_stored(_NOT_STORED, exc)
            if agent.last_error != message:
                await self._store.agents.set_agent_status(agent.name, last_error=message)
            return []

    def _lost_meanwhile(self, name: str, exc: BaseException, what: str) -> bool:
        """True (logged in one line) when a write failed after this controller's lease on agent
        `name` ran out: it was paused or cut off from the database past its lease, and PostgreSQL
        ended its idle transaction. That is expected, not the agent's data: nothing is said on the
        agent, which another controller drives now."""
        if self._leases.valid_for(name, 0):
            return False
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        log.warning("agent %s: %s not written: the lease ran out meanwhile (%s)", name, what, first)
        return True

    def _answered(self, row: ScheduleRecord, result: StartResult, report: PollReport) -> Decision | None:
        """What StartAction's answer for the claimed `row` decides; reported and logged."""
        if result.outcome is Outcome.ACCEPTED:
            report.started.append(f"{row.node_name}:{row.pending}")
            log.info("started %s on %s for %s", row.pending, row.node_name, row.owner)
        elif result.outcome is Outcome.REFUSED:
            log.warning(
                "%s on %s for %s refused by the agent: %s", row.pending, row.node_name, row.owner, result.message
            )
        return lifecycle.after_start(row, result)

    # -- removals waiting for reservations to end -----------------------------------------

    async def _retire(self, report: PollReport) -> None:
        """Carries out each forced removal of an agent or node whose reservations are all gone
        (their destroys are over); the others wait for a later poll. A node is removed through
        its agent, which must answer; an agent is removed from the controller only."""
        retirements = await self._store.maintenance.list_retirements()
        if not retirements:
            return
        cached = await self._inventory.cached_nodes()
        for retirement in retirements:
            if retirement.kind == "agent":
                nodes = [node.name for node in cached.values() if node.agent == retirement.name]
            else:
                nodes = [retirement.name]
            if await self._store.schedule.list_schedule(nodes=nodes):
                continue
            try:
                if retirement.kind == "agent":
                    await self._retire_agent(retirement.name)
                else:
                    await self._retire_node(retirement.name, cached.get(retirement.name))
            except ServiceError as exc:
                # A reservation made meanwhile (refused: it cannot be) or an agent that does not
                # answer: tried again at the next poll.
                log.warning("removing %s %s waits: %s", retirement.kind, retirement.name, exc.message)
                continue
            report.retired.append(f"{retirement.kind}:{retirement.name}")
            log.info(
                "%s %s removed as %s asked: its reservations are over",
                retirement.kind, retirement.name, retirement.requested_by,
            )

    async def _retire_agent(self, name: str) -> None:
        if await self._store.agents.delete_agent(name):
            await self._client.forget(name)
        await self._store.maintenance.end_retirement("agent", name)

    async def _retire_node(self, name: str, node: CachedNode | None) -> None:
        agent = await self._store.agents.get_agent(node.agent) if node is not None else None
        if agent is not None:
            if not self._client.usable(agent):
                raise ServiceError(f"agent {agent.name} is disconnected")
            try:
                await self._client.remove_node(agent, name)
            except NotFound:
                pass  # removed on the agent already
            await self._inventory.refresh([agent])
        await self._store.maintenance.end_retirement("node", name)


def _once_per_node(rows: Sequence[ScheduleRecord]) -> list[list[ScheduleRecord]]:
    """`rows` split into batches in which each node appears at most once, in their order."""
    batches: list[list[ScheduleRecord]] = []
    seen: dict[str, int] = defaultdict(int)
    for row in rows:
        index = seen[row.node_name]
        seen[row.node_name] += 1
        if index == len(batches):
            batches.append([])
        batches[index].append(row)
    return batches
