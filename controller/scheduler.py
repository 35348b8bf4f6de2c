"""The scheduler: the background task that carries every reservation through its life.

Each poll (every `poll_seconds`, or sooner when woken by a user's action):

1. Time: a ready reservation whose start_date has come gets the intention `deploy`; one whose
   end_date has come gets `destroy` (or, if nothing was ever sent to the agent, is simply
   removed).
2. ONE GetActionState per connected agent, for all the nodes it must follow, whatever their
   number; the calls to different agents run concurrently.
3. Each row mirrors its node's action. A final state sets status back to ready; a final destroy
   of an ending reservation removes its schedule and action_prop rows.
4. Intentions are sent with StartAction.

Crash safety. An intention is written (`pending`) before anything is sent. Just before
StartAction, the row records `pending_issued` and `baseline`, the fingerprint of the node's
action as the agent reported it in this poll. A controller killed at any moment finds, on
restart, either an intention never sent (send it), or one that may have been sent: if the agent
now reports an action of that process which differs from the baseline, the agent runs ours and
it is adopted; otherwise it is sent again. A FAILED_PRECONDITION (node busy) keeps the
intention and the baseline, so the next poll adopts or retries. Every write is a
compare-and-set on the fields the decision was based on, so a user's concurrent action is never
overwritten.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgebed.controller.agent_client import AgentClient, gather_agents
from edgebed.controller.domain import ActionState, AgentRecord, ScheduleRecord
from edgebed.controller.errors import AgentRejectedToken, Conflict, InvalidInput, NotFound, ServiceError
from edgebed.controller.inventory import Inventory
from edgebed.controller.lifecycle import Status
from edgebed.controller.metrics import Metrics
from edgebed.controller.settings import Settings
from edgebed.controller.store import CachedNode, ScheduleChange, Store

log = logging.getLogger(__name__)

NO_ACTION = "-"  # the baseline when the agent reported no action for the node


@dataclass
class PollReport:
    """What one poll did; for tests and logs."""

    state_calls: dict[str, int] = field(default_factory=dict)  # agent -> GetActionState calls
    started: list[str] = field(default_factory=list)  # "node:process" sent with StartAction
    adopted: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _fingerprint(action: ActionState | None) -> str:
    return NO_ACTION if action is None else action.fingerprint()


def _mirror(action: ActionState) -> dict[str, Any]:
    return {
        "action_state": action.state,
        "process": action.process,
        "state_idx": action.state_idx,
        "state_count": action.state_count,
        "progress": action.progress,
        "node_ip": action.node_ip,
        "action_updated_at": action.updated_at,
        "status": Status.READY if action.final else Status.IN_PROGRESS,
    }


def _differs(row: ScheduleRecord, changes: dict[str, Any]) -> bool:
    return any(getattr(row, name) != value for name, value in changes.items())


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
    ) -> None:
        self._store = store
        self._client = client
        self._inventory = inventory
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._refresh_task: asyncio.Task | None = None
        self._next_refresh = 0.0

    # -- the background task -------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="edgebed-scheduler")

    async def stop(self) -> None:
        for task in (self._task, self._refresh_task):
            if task is not None:
                task.cancel()
        for task in (self._task, self._refresh_task):
            if task is not None:
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._task = self._refresh_task = None

    def wake(self) -> None:
        """Runs the next poll now (after a user's action) instead of at the next tick."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._maybe_refresh_inventory()
            try:
                await self.poll()
            except Exception:
                # A database or programming error in one poll must not stop the scheduler;
                # every step is idempotent, so the next poll starts over cleanly.
                log.exception("scheduler poll failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.poll_seconds)
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
            await self._inventory.refresh(catalogs=True)
        except Exception:
            log.exception("inventory refresh failed")

    # -- one poll --------------------------------------------------------------------------

    async def poll(self) -> PollReport:
        report = PollReport()
        now = int(self._clock())
        rows = await self._store.schedule.list_schedule(started_before=now)
        self._metrics.record_poll()
        if not rows:
            return report
        nodes = await self._inventory.cached_nodes({row.node_name for row in rows})

        timed = [c for row in rows if (c := self._timed_change(row, now, nodes)) is not None]
        if timed:
            applied = await self._store.schedule.update_schedule(timed)
            report.removed += [c.node_name for c, ok in zip(timed, applied) if ok and c.delete]
            rows = await self._store.schedule.list_schedule(started_before=now)

        agents = {agent.name: agent for agent in await self._store.agents.list_agents()}
        tracked: dict[str, list[ScheduleRecord]] = defaultdict(list)
        for row in rows:
            if not (row.pending or row.started):
                continue
            node = nodes.get(row.node_name)
            agent = agents.get(node.agent) if node else None
            if agent is not None and self._client.usable(agent):
                tracked[agent.name].append(row)
        if not tracked:
            return report

        states = await gather_agents(
            [agents[name] for name in tracked],
            lambda agent: self._client.action_states(agent, {r.node_name for r in tracked[agent.name]}),
        )
        report.state_calls = {name: 1 for name in tracked}

        # A node whose previous reservation is still being ended is not handed to the next one.
        ending_owners: dict[str, set[str]] = defaultdict(set)
        for row in rows:
            if row.ending:
                ending_owners[row.node_name].add(row.owner)

        changes: list[ScheduleChange] = []
        to_issue: list[tuple[AgentRecord, ScheduleRecord, ActionState | None]] = []
        for agent_name, agent_rows in tracked.items():
            result = states[agent_name]
            if isinstance(result, ServiceError):
                continue
            for row in agent_rows:
                action = result.get(row.node_name)
                if row.pending:
                    blocked = bool(ending_owners.get(row.node_name, set()) - {row.owner})
                    change, issue = self._decide_pending(row, action, blocked)
                    if issue:
                        to_issue.append((agents[agent_name], row, action))
                else:
                    change = self._decide_mirror(row, action)
                if change is not None:
                    changes.append(change)
                    if change.delete:
                        report.removed.append(row.node_name)
                    elif row.pending and change.changes.get("pending") == "":
                        report.adopted.append(f"{row.node_name}:{row.pending}")
        if changes:
            await self._store.schedule.update_schedule(changes)
        if to_issue:
            await self._issue(to_issue, report)
        return report

    def _timed_change(self, row: ScheduleRecord, now: int, nodes: dict[str, CachedNode]) -> ScheduleChange | None:
        key = (row.node_name, row.owner)
        if row.end_date <= now and (not row.started or row.node_name not in nodes):
            # Nothing was ever sent to the agent (or the node left the inventory): nothing to
            # destroy, the reservation just ends.
            if row.started:
                log.warning("node %s left the inventory; ending %s's reservation without destroy", *key)
            return ScheduleChange(
                *key,
                expect={"pending_issued": row.pending_issued, "process": row.process, "pending": row.pending},
                changes={},
                delete=True,
            )
        if row.end_date <= now and not row.ending:
            changes: dict[str, Any] = {"ending": True}
            if not row.pending_issued:
                changes.update(pending="destroy", pending_since=now, status=Status.IN_PROGRESS)
            return ScheduleChange(
                *key,
                expect={"ending": False, "pending": row.pending, "pending_issued": row.pending_issued},
                changes=changes,
            )
        if row.ending and not row.pending and row.process != "destroy":
            # An intention that was in doubt at end_date has been resolved: now destroy.
            return ScheduleChange(
                *key,
                expect={"ending": True, "pending": "", "process": row.process},
                changes={"pending": "destroy", "pending_issued": False, "pending_since": now, "status": Status.IN_PROGRESS},
            )
        if (
            not row.ending
            and row.status == Status.READY
            and not row.started
            and not row.pending
            and row.start_date <= now < row.end_date
        ):
            return ScheduleChange(
                *key,
                expect={"status": Status.READY, "pending": "", "process": "", "action_state": "", "ending": False},
                changes={"pending": "deploy", "pending_issued": False, "pending_since": now, "status": Status.IN_PROGRESS},
            )
        return None

    def _decide_pending(
        self, row: ScheduleRecord, action: ActionState | None, blocked: bool
    ) -> tuple[ScheduleChange | None, bool]:
        """(change, send StartAction?) for a row with an intention."""
        key = (row.node_name, row.owner)
        expect = {"pending": row.pending, "pending_issued": row.pending_issued, "baseline": row.baseline}
        if (
            row.baseline
            and action is not None
            and action.process == row.pending
            and action.fingerprint() != row.baseline
        ):
            # The agent runs (or ran) the action we sent before we could record it: adopt it.
            changes = _mirror(action) | {"pending": "", "pending_issued": False, "baseline": "", "last_error": ""}
            if action.final and row.ending and action.process == "destroy":
                return ScheduleChange(*key, expect=expect, changes={}, delete=True), False
            log.info("adopting %s on %s for %s", action.process, *key)
            return ScheduleChange(*key, expect=expect, changes=changes), False
        if action is not None and not action.final:
            # Busy with another action: ours was not accepted; wait until that one ends.
            changes = {}
            if row.pending_issued:
                changes["pending_issued"] = False
            if row.started and action.process != row.pending:
                changes |= {k: v for k, v in _mirror(action).items() if k != "status"}
            if changes and _differs(row, changes):
                return ScheduleChange(*key, expect=expect, changes=changes), False
            return None, False
        if blocked:
            return None, False
        return None, True

    def _decide_mirror(self, row: ScheduleRecord, action: ActionState | None) -> ScheduleChange | None:
        key = (row.node_name, row.owner)
        if action is None:
            return None
        expect = {"pending": "", "action_updated_at": row.action_updated_at, "action_state": row.action_state}
        if action.final and row.ending and action.process == "destroy":
            log.info("reservation of %s by %s ended: node %s", row.node_name, row.owner, action.state)
            return ScheduleChange(*key, expect=expect, changes={}, delete=True)
        changes = _mirror(action)
        if not _differs(row, changes):
            return None
        return ScheduleChange(*key, expect=expect, changes=changes)

    async def _issue(
        self,
        batch: list[tuple[AgentRecord, ScheduleRecord, ActionState | None]],
        report: PollReport,
    ) -> None:
        claims = [
            ScheduleChange(
                row.node_name,
                row.owner,
                expect={"pending": row.pending, "pending_issued": row.pending_issued, "baseline": row.baseline},
                changes={"pending_issued": True, "baseline": _fingerprint(action)},
            )
            for _, row, action in batch
        ]
        # The baseline is on disk before anything is sent: a crash from here on is resolved by
        # comparing it with what the agent reports.
        applied = await self._store.schedule.update_schedule(claims)
        claimed = [item for item, ok in zip(batch, applied) if ok]
        if not claimed:
            return
        props = await self._store.schedule.action_props_for([(row.node_name, row.owner) for _, row, _ in claimed])

        async def send(agent: AgentRecord, row: ScheduleRecord) -> ActionState | ServiceError:
            properties = props.get((row.node_name, row.owner), {})
            try:
                return await self._client.start_action(
                    agent,
                    row.node_name,
                    row.pending,
                    environment=properties.get("environment", ""),
                    properties=properties,
                )
            except ServiceError as exc:
                return exc

        results = await asyncio.gather(*(send(agent, row) for agent, row, _ in claimed))
        outcomes = []
        for (agent, row, action), result in zip(claimed, results):
            change = self._after_start(row, _fingerprint(action), result)
            if change is not None:
                outcomes.append(change)
            if isinstance(result, ActionState):
                report.started.append(f"{row.node_name}:{row.pending}")
                log.info("started %s on %s for %s", row.pending, row.node_name, row.owner)
        if outcomes:
            await self._store.schedule.update_schedule(outcomes)

    def _after_start(
        self, row: ScheduleRecord, baseline: str, result: ActionState | ServiceError
    ) -> ScheduleChange | None:
        key = (row.node_name, row.owner)
        expect = {"pending": row.pending, "pending_issued": True, "baseline": baseline}
        if isinstance(result, ActionState):
            if result.final and row.ending and result.process == "destroy":
                return ScheduleChange(*key, expect=expect, changes={}, delete=True)
            changes = _mirror(result) | {"pending": "", "pending_issued": False, "baseline": "", "last_error": ""}
            return ScheduleChange(*key, expect=expect, changes=changes)
        if isinstance(result, (Conflict, AgentRejectedToken)):
            # Refused, so certainly not started: keep the intention, retry (or adopt) next poll.
            return ScheduleChange(*key, expect=expect, changes={"pending_issued": False})
        if isinstance(result, (InvalidInput, NotFound)):
            log.warning("%s on %s for %s refused by the agent: %s", row.pending, *key, result.message)
            if row.ending:
                log.error("reservation of %s by %s ends without destroy: %s", *key, result.message)
                return ScheduleChange(*key, expect=expect, changes={}, delete=True)
            never_ran = not row.process and not row.action_state
            return ScheduleChange(
                *key,
                expect=expect,
                changes={
                    "pending": "",
                    "pending_issued": False,
                    "baseline": "",
                    "last_error": f"{row.pending} refused: {result.message}"[:500],
                    # A deploy refused for its configuration waits for the user to fix it.
                    "status": Status.CONFIGURING if never_ran else Status.READY,
                },
            )
        # No answer or an agent failure: it may have started. Keep it in doubt; the next poll
        # after the agent is back compares with the baseline.
        return None
