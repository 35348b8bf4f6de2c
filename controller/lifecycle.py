"""The life of a reservation, as one explicit state machine of pure decisions.

A reservation is one `schedule` row (`ScheduleRecord`), keyed by (node_name, owner). Its state is
spread over a few columns: `status` (stored and shown: `Status`), `pending` (the process the
controller intends to start, '' when none), `pending_issued` (StartAction may have been sent),
`baseline` (the fingerprint of the node's action just before it was sent), `ending` (the window
is over: destroy, then the rows go) and the mirror of the agent's action (`process`,
`action_state`, ...). `phase(row)` names the combinations that occur:

    CONFIGURING  status configuring, nothing pending: waits for the required properties
    READY        status ready, nothing pending, nothing ever ran: waits for start_date
    INTENDED     pending P, not sent yet (pending_issued 0)
    IN_DOUBT     pending P, maybe sent (pending_issued 1, baseline recorded)
    RUNNING      status in_progress, nothing pending: follows the agent's action
    DONE         nothing pending, the last action reached a final state

`ending` is a flag beside the phase. Every function below decides and never acts: it returns a
`Decision` (a compare-and-set on one row: the fields it was based on, the changes, or delete),
`None` when nothing is to be written, or raises `Conflict` with a message for the user. Nothing
here reads a clock, a database or an agent. The scheduler (clock, reports, StartAction's
answers) and the reservation service (the user's actions) apply the decisions: they gather the
inputs, write the decisions with the store's compare-and-set, and talk to the agents.

Transitions (`Transition`), by the event that causes them:

    event (function)     phase (ending)        condition                          -> phase      writes
    -------------------  --------------------  ---------------------------------  -----------  ------------------------------------
    configure            CONFIGURING/READY/    every required property set        READY        status=ready (last_error='' if it
     (status_after_        DONE                                                                  was configuring)
      configure)         READY/DONE            a required property missing        CONFIGURING  status=configuring
                         INTENDED..RUNNING     (an action under way)              unchanged    nothing
    clock (on_time)      READY                 start_date <= now < end_date,      INTENDED     START: pending=deploy,
                                               node not in maintenance                         status=in_progress
                         INTENDED (0), first   node in maintenance (entered after READY        HOLD: pending='', status=ready
                          deploy not sent       START was decided)
                         READY, prestage on    start_date - lead <= now <         INTENDED     PRESTAGE: as START, only if still
                                               start_date, no other owner's                    no other owner's window within
                                               window within turnaround of                     turnaround (Decision.clear)
                                               [now, start_date), node not in
                                               maintenance
                         any, nothing sent     end_date <= now                    (gone)       EXPIRE: delete
                         any, sent             end_date <= now, node gone from    (gone)       ORPHAN: delete (nothing to destroy),
                                               the inventory                                   node into maintenance
                         any (0), sent         end_date <= now                    INTENDED(1)  END: ending=1, pending=destroy,
                                                                                               status=in_progress
                         IN_DOUBT (0)          end_date <= now                    IN_DOUBT(1)  END: ending=1 only; the doubt is
                                                                                               resolved first
                         DONE/RUNNING (1),     the doubt was resolved             INTENDED(1)  DESTROY_AFTER_DOUBT: pending=destroy
                          process != destroy
    report (on_report)   INTENDED/IN_DOUBT     agent reports P, fingerprint !=    RUNNING/DONE ADOPT: mirror, pending=''
                                               baseline (our StartAction ran)
                         INTENDED/IN_DOUBT     agent runs another action          INTENDED     WAIT_BUSY: pending_issued=0, mirror
                                                                                               it (but not status) if we ran one
                         INTENDED/IN_DOUBT     idle or final, another owner's     unchanged    nothing (the node is not handed over
                                               reservation of the node ending                  before its destroy)
                         INTENDED/IN_DOUBT     idle, final, or same as baseline   IN_DOUBT     ISSUE: pending_issued=1, baseline=
                                                                                               fingerprint; then send StartAction
                         RUNNING/DONE          agent's action differs from row    RUNNING/DONE MIRROR: process, action_state, ...,
                                                                                               status=ready if final else in_progress
                         any (1)               destroy `destroyed` (mirrored,     (gone)       REMOVE: delete
                                               adopted)
                         any (1)               destroy `lost` (the wipe never     (gone)       REMOVE_LOST: delete, node into
                                               completed)                                      maintenance
    StartAction answer   IN_DOUBT              accepted                           RUNNING/DONE ACCEPTED: mirror, pending=''
     (after_start)       IN_DOUBT (1)          accepted, destroy already final    (gone)       REMOVE or REMOVE_LOST
                         IN_DOUBT              FAILED_PRECONDITION (busy) or      INTENDED     RETRY: pending_issued=0, baseline
                                               token rejected: surely not started              kept (the next report adopts or
                                                                                               sends again)
                         IN_DOUBT (0)          refused (INVALID_ARGUMENT,         CONFIGURING  REFUSED: pending='', last_error;
                                               NOT_FOUND)                         or DONE      configuring if nothing ever ran
                         IN_DOUBT (1)          refused                            (gone)       ABANDON: delete without destroy,
                                                                                               node into maintenance
                         IN_DOUBT              no answer (agent down, deadline)   IN_DOUBT     nothing: the next report decides
    user (on_user_       READY/DONE (0),       deploy (once configured), reboot   INTENDED     REQUEST: pending=P,
     action)              window open           (once deployed)                                status=in_progress, last_error=''
                         READY, first deploy   the node is in maintenance         unchanged    Conflict (never handed out)
                         CONFIGURING/READY,    destroy                            (gone)       CANCEL: delete
                          nothing ever sent
                         any other (0)         destroy                            INTENDED(1)  END_EARLY: ending=1, end_date=now,
                                                                                   or IN_DOUBT  pending=destroy unless in doubt
                         any (1)               destroy                            unchanged    nothing (already ending)
    ending (on_end)      as destroy above, for the owner, an administrator, a deleted account, a removed agent or node:
                                               the reason and who are kept (end_reason, ended_by, notice)
    admin (on_move)      nothing ever sent     moved to another free node         unchanged    MOVE: notice; the store re-keys the
                          (0)                                                                  row and its properties to the node
                         any other (0)         moved to another free node         INTENDED(1)  END_EARLY (reason moved); the store
                                                                                               adds a row on the other node
                         any (1)               moved                              unchanged    Conflict (ending)
    user (on_extend)     any (0)               duration doubled up to the cap,    unchanged    EXTEND: end_date
                                               clear of the next window

Every decision that deletes a row says how the reservation ended (`Decision.history`, an
`Ending`): the store writes its `reservation_history` row in the same transaction as the delete.
A decision may also put the node in maintenance (`Decision.maintenance`, the reason) and one that
records a final action (`Decision.finished`) counts toward the node's lost-in-a-row: the store
applies `count_final` to the node's count inside the transaction and puts the node in maintenance
when it says so. A node in maintenance is never handed to a new reservation: `choose_nodes` skips
or refuses it (`unavailable`), START waits, and a first deploy is refused.

Crash points. A controller killed at any moment restarts from what the rows say:

    killed after                          row on restart                       next poll
    the intention was written            INTENDED, baseline ''                 ISSUE, sent once
    the claim (ISSUE) was written        IN_DOUBT, agent still at baseline     ISSUE again, sent once
    StartAction was accepted             IN_DOUBT, agent reports P != baseline ADOPT, never sent twice
      (even a new action that differs from the previous only in action_id)
    a FAILED_PRECONDITION (RETRY)        INTENDED with baseline                ADOPT if the agent now shows ours,
                                                                               else WAIT_BUSY or ISSUE
    StartAction got no answer            IN_DOUBT                              as after the claim
    end_date passed while in doubt       IN_DOUBT, ending=1                    ADOPT/ISSUE, then
                                                                               DESTROY_AFTER_DOUBT

Every decision expects the fields it was based on, so a user's concurrent action (which writes
`pending`, `status` or `ending`) makes the scheduler's write miss instead of overwriting it, and
the other way round.

Prestage (`[reservations] prestage`): a READY reservation's first deploy may start `lead`
seconds before its start_date (the expected deploy duration of its node type and environment
plus a margin, controller/health.py), so the node is `deployed` at start_date, when the node is
free from now to then. From that moment the reservation occupies its node from when the deploy
started (`occupied_from`: the intention's `pending_since`), so no reservation can be made, or
extended, into the time of the early deploy; the PRESTAGE write itself checks, in its
transaction, that no other owner's window came within turnaround of [now, start_date) since the
rows were read (`Decision.clear`).

The business rules of reserving live here too: `window_conflicts` (the turnaround gap between
windows on one node), `choose_nodes` (which candidates a request gets, never a node in
maintenance or being removed, the healthiest first when chosen by filter and count) and
`configured_status` (ready once every required property is set). `choose_nodes`, `on_extend`,
`status_after_configure`, `on_move` and `count_final` depend on other rows, so the services hand
them to the store, which calls them inside its write transaction on the rows it read there.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from edgebed.controller.domain import ActionState, ScheduleRecord
from edgebed.controller.errors import AgentRejectedToken, Conflict, InvalidInput, NotFound, ServiceError
from edgebed.records import replaced


class Status(StrEnum):
    """The `status` column of a reservation: the seed's values, stored and shown as they are
    (a StrEnum compares equal to its text, so rows read back as `str` match)."""

    CONFIGURING = "configuring"  # waits for the properties the node type requires
    READY = "ready"  # configured, nothing under way: before start_date, or after a final state
    IN_PROGRESS = "in_progress"  # an action is intended, sent, or running on the agent


class Process(StrEnum):
    """The processes the controller starts on a node (StartAction's `process`)."""

    DEPLOY = "deploy"
    REBOOT = "reboot"
    DESTROY = "destroy"


class UserAction(StrEnum):
    """What a user may do to one of their reservations (the API's /reservations/{node}/{action})."""

    REBOOT = "reboot"
    DEPLOY = "deploy"
    DESTROY = "destroy"
    EXTEND = "extend"


class Ended(StrEnum):
    """How a reservation ended: the `ended` column of its history row."""

    EXPIRED = "expired"  # its window passed before anything was sent to the node
    CANCELLED = "cancelled"  # ended before anything was sent to the node
    DESTROYED = "destroyed"  # its destroy completed: the node was wiped
    LOST = "lost"  # its destroy ended lost: the node went into maintenance
    ORPHANED = "orphaned"  # its node left the inventory: nothing destroyed, node into maintenance
    ABANDONED = "abandoned"  # the agent refused the destroy: node into maintenance


class EndReason(StrEnum):
    """Why a reservation ends: the schedule's `end_reason` (written when it starts ending) and
    the `end_reason` of its history row."""

    WINDOW = "window"  # its end_date passed
    OWNER = "owner"  # its owner destroyed it
    ADMIN = "admin"  # an administrator ended it
    MOVED = "moved"  # an administrator moved it to another node (this node is destroyed)
    ACCOUNT_DELETED = "account_deleted"  # its owner's account was deleted
    AGENT_REMOVED = "agent_removed"  # an administrator removed the node's agent (force)
    NODE_REMOVED = "node_removed"  # an administrator removed the node (force)


class Phase(StrEnum):
    """Where a row is in its life; derived from its columns by `phase`, never stored."""

    CONFIGURING = "configuring"
    READY = "ready"
    INTENDED = "intended"
    IN_DOUBT = "in_doubt"
    RUNNING = "running"
    DONE = "done"


class Transition(StrEnum):
    """The rows of the table in this module's docstring; `Decision.transition` names one."""

    # the clock
    START = "start"
    PRESTAGE = "prestage"
    EXPIRE = "expire"
    ORPHAN = "orphan"
    END = "end"
    DESTROY_AFTER_DOUBT = "destroy_after_doubt"
    # the agent's report
    ISSUE = "issue"
    ADOPT = "adopt"
    WAIT_BUSY = "wait_busy"
    MIRROR = "mirror"
    REMOVE = "remove"
    # StartAction's answer
    ACCEPTED = "accepted"
    RETRY = "retry"
    REFUSED = "refused"
    ABANDON = "abandon"
    # the user
    REQUEST = "request"
    CANCEL = "cancel"
    END_EARLY = "end_early"
    EXTEND = "extend"
    # the node in maintenance, and the administrator
    REMOVE_LOST = "remove_lost"
    HOLD = "hold"
    MOVE = "move"


class Outcome(StrEnum):
    """What StartAction's answer says about whether the action started."""

    ACCEPTED = "accepted"  # started; the answer is the new action
    NOT_STARTED = "not_started"  # FAILED_PRECONDITION (node busy) or token rejected: surely not
    REFUSED = "refused"  # INVALID_ARGUMENT or NOT_FOUND: will not start as asked
    NO_ANSWER = "no_answer"  # unavailable, deadline, agent error: may have started


# The baseline when the agent reported no action for the node.
NO_ACTION = "-"

# The final state of an action that did not complete (a state outlived its `lost` timeout).
LOST = "lost"


@dataclass(frozen=True)
class Ending:
    """The history row a deleting decision writes with the delete. The store adds what the row
    and its properties hold (bin, window, environment, last_error) and the time."""

    ended: Ended
    reason: EndReason
    by: str = ""  # who ended it: a user's email, '' for the clock
    outcome: str = ""  # the final state of its last action ('' when nothing ran)


@dataclass(frozen=True)
class Finished:
    """A final action a decision records: it counts toward the node's lost-in-a-row once (the
    store keeps the fingerprint of the last action it counted)."""

    fingerprint: str
    lost: bool


class Window(NamedTuple):
    """One reservation's window on a node, as the turnaround rule sees it: from when it occupies
    the node (`occupied_from`) to its end_date."""

    node_name: str
    owner: str
    start_date: int
    end_date: int


class Clearance(NamedTuple):
    """A condition on the other rows of a decision's node: no window of another owner comes
    within `turnaround` seconds of [start, end) (window_conflicts)."""

    start: int
    end: int
    turnaround: int


class Prestage(NamedTuple):
    """What the clock needs to start a reservation's first deploy ahead of its start_date: the
    `lead` in seconds (controller/health.py prestage_lead), the other windows on its node and
    the turnaround gap."""

    lead: int
    others: tuple[Window, ...]
    turnaround: int


@dataclass(frozen=True)
class Decision:
    """One compare-and-set on the schedule row (node_name, owner): write `changes`, or delete
    the row and its action properties when `delete`, only if the row still has every value in
    `expect`, and, when `clear` is set, no other owner's window on the node breaks it. `transition`
    says which row of the state table it is (for logs and reports).

    What the store does beside the row, in the same transaction and only when the write
    applies: `history` (set on every delete) becomes the reservation's history row;
    `maintenance` (a reason) puts the node in maintenance; `finished` counts toward the node's
    lost-in-a-row (see `count_final`)."""

    transition: Transition
    node_name: str
    owner: str
    expect: Mapping[str, Any]
    changes: Mapping[str, Any] = field(default_factory=dict)
    delete: bool = False
    history: Ending | None = None
    maintenance: str = ""
    finished: Finished | None = None
    clear: Clearance | None = None

    @property
    def issues(self) -> bool:
        """True when StartAction(row.pending) is to be sent once this claim is written."""
        return self.transition is Transition.ISSUE


@dataclass(frozen=True)
class StartResult:
    """StartAction's answer, classified: `action` when accepted, `message` when refused."""

    outcome: Outcome
    action: ActionState | None = None
    message: str = ""


# -- reading a row -----------------------------------------------------------------------------


def phase(row: ScheduleRecord) -> Phase:
    """The row's phase (see the module docstring)."""
    if row.pending:
        return Phase.IN_DOUBT if row.pending_issued else Phase.INTENDED
    if row.status == Status.IN_PROGRESS:
        return Phase.RUNNING
    if row.process or row.action_state:
        return Phase.DONE
    return Phase.CONFIGURING if row.status == Status.CONFIGURING else Phase.READY


def follows_agent(row: ScheduleRecord) -> bool:
    """True when the node's agent has something to say about this row: an intention to send
    or resolve, or an action to mirror (the scheduler's full polls ask about all of these)."""
    return bool(row.pending) or row.started


def may_change_on_agent(row: ScheduleRecord) -> bool:
    """True when the agent's report can change this row in the scheduler's ordinary polls: an
    intention (INTENDED, IN_DOUBT) or an action under way (RUNNING). A DONE row's action is
    final and stays so until the controller starts another (the agent never starts one by
    itself), so only a full poll asks about it (someone starting an action by hand)."""
    return bool(row.pending) or row.status == Status.IN_PROGRESS


def watched(row: ScheduleRecord, now: int, until: int) -> bool:
    """True for the rows the scheduler's ordinary polls read: those the agent can change
    (may_change_on_agent), those ending, those whose end_date has come, and those not started
    yet that may start by `until` (now, or now plus the prestage horizon). Every other row is
    one that neither the clock (`on_time`) nor the agent changes: configuring or ready before
    its start, or DONE with its window open. The store's `list_watched` selects the same rows
    in SQL."""
    return (
        may_change_on_agent(row)
        or row.ending
        or row.end_date <= now
        or (row.status == Status.READY and not row.started and row.start_date <= until)
    )


def due_to_start(row: ScheduleRecord, now: int) -> bool:
    """True when the clock starts the first deploy of this row now (transition START)."""
    return (
        not row.ending
        and row.status == Status.READY
        and not row.started
        and not row.pending
        and row.start_date <= now < row.end_date
    )


def due_to_prestage(row: ScheduleRecord, now: int, prestage: Prestage) -> bool:
    """True when the clock starts the first deploy of this row now, ahead of its start_date
    (transition PRESTAGE): READY, within `prestage.lead` seconds of its start, and no other
    owner's window (with the turnaround gap) over [now, start_date)."""
    return (
        not row.ending
        and row.status == Status.READY
        and not row.started
        and not row.pending
        and row.start_date - prestage.lead <= now < row.start_date
        and not window_conflicts(
            [w for w in prestage.others if w.owner != row.owner], now, row.start_date, prestage.turnaround
        )
    )


def occupied_from(start_date: int, pending_since: int) -> int:
    """When a reservation starts to occupy its node: its start_date, or earlier when its first
    deploy was started ahead of it (PRESTAGE: the intention's `pending_since`, written then and
    not again before start_date, since every other intention needs the window open)."""
    return min(start_date, pending_since) if pending_since > 0 else start_date


def action_finished(row: ScheduleRecord) -> bool:
    """True when the row's last action reached a final state and nothing new is under way
    (its progress is then 100%)."""
    return phase(row) is Phase.DONE


def shown_process(row: ScheduleRecord) -> str:
    """The process to show: the intended one while it waits, else the agent's."""
    return row.pending or row.process


def blocked_rows(rows: Iterable[ScheduleRecord]) -> set[tuple[str, str]]:
    """(node_name, owner) of the rows whose node is still being ended for another owner: their
    intention is not sent before that destroy is over, so a node is never handed over unwiped."""
    rows = list(rows)
    ending: dict[str, set[str]] = {}
    for row in rows:
        if row.ending:
            ending.setdefault(row.node_name, set()).add(row.owner)
    return {
        (row.node_name, row.owner)
        for row in rows
        if row.pending and ending.get(row.node_name, set()) - {row.owner}
    }


def after(row: ScheduleRecord, decision: Decision) -> ScheduleRecord | None:
    """The row once `decision` is applied (None when it deletes the row). ValueError when the
    row does not match the decision's expectations: the store would not apply it."""
    if (row.node_name, row.owner) != (decision.node_name, decision.owner):
        raise ValueError(f"decision for {decision.node_name}/{decision.owner} applied to {row.node_name}/{row.owner}")
    differing = [name for name, value in decision.expect.items() if getattr(row, name) != value]
    if differing:
        raise ValueError(f"row no longer matches the decision on {', '.join(differing)}")
    # replaced, not dataclasses.replace: five times faster, for 20,000 rows starting together.
    return None if decision.delete else replaced(row, **decision.changes)


def fingerprint(action: ActionState | None) -> str:
    """The baseline recorded for an agent's report of one node (NO_ACTION when none)."""
    return NO_ACTION if action is None else action.fingerprint()


def _decide(
    transition: Transition,
    row: ScheduleRecord,
    expect: Mapping[str, Any],
    changes: Mapping[str, Any] | None = None,
    *,
    history: Ending | None = None,
    maintenance: str = "",
    finished: Finished | None = None,
    clear: Clearance | None = None,
) -> Decision:
    """A decision; it deletes the row exactly when it says how the reservation ended."""
    return Decision(
        transition,
        row.node_name,
        row.owner,
        dict(expect),
        dict(changes or {}),
        delete=history is not None,
        history=history,
        maintenance=maintenance,
        finished=finished,
        clear=clear,
    )


def _reason(row: ScheduleRecord) -> EndReason:
    """Why the row ends: what was recorded when it started ending, else its window passed."""
    return EndReason(row.end_reason) if row.end_reason else EndReason.WINDOW


def _ending(row: ScheduleRecord, ended: Ended, outcome: str | None = None) -> Ending:
    """The history of `row` ending `ended`; `outcome` defaults to the last state it mirrored."""
    return Ending(ended, _reason(row), row.ended_by, row.action_state if outcome is None else outcome)


def _finished(action: ActionState) -> Finished | None:
    """What a report of `action` counts toward the node's lost-in-a-row: a final action only."""
    return Finished(action.fingerprint(), action.state == LOST) if action.final else None


# Why a node goes into maintenance when its reservation ends without a clean destroy. Shown to
# users on the reserve page: they say what happened, never who held the node.
LOST_DESTROY = "a destroy ended lost: the node may still hold the previous user's system"
ORPHANED_NODE = "the node left the inventory while reserved and was never destroyed"
# The notice on a started reservation an administrator moved: this node is destroyed.
MOVED_AWAY = "moved to another node by an administrator; this node is being destroyed"


def _mirror(action: ActionState) -> dict[str, Any]:
    """The row's copy of the agent's action; status follows whether it is final."""
    return {
        "action_state": action.state,
        "process": action.process,
        "state_idx": action.state_idx,
        "state_count": action.state_count,
        "progress": action.progress,
        "node_ip": action.node_ip,
        "action_updated_at": action.updated_at,
        "action_error": action.last_error,
        "status": Status.READY if action.final else Status.IN_PROGRESS,
    }


# The intention is over (adopted, accepted or given up): what clears it.
_NO_INTENTION = {"pending": "", "pending_issued": False, "baseline": ""}


def _differs(row: ScheduleRecord, changes: Mapping[str, Any]) -> bool:
    return any(getattr(row, name) != value for name, value in changes.items())


def _destroy_done(row: ScheduleRecord, action: ActionState) -> bool:
    """An ending row whose destroy reached a final state (`destroyed`, or `lost`): it goes."""
    return row.ending and action.final and action.process == Process.DESTROY


def _removed(row: ScheduleRecord, action: ActionState, expect: Mapping[str, Any]) -> Decision:
    """REMOVE once the destroy is `destroyed`; REMOVE_LOST when it ended `lost` (the wipe never
    completed): the reservation ends all the same, and the node goes into maintenance."""
    if action.state == LOST:
        return _decide(
            Transition.REMOVE_LOST,
            row,
            expect,
            history=_ending(row, Ended.LOST, action.state),
            maintenance=LOST_DESTROY,
            finished=_finished(action),
        )
    return _decide(
        Transition.REMOVE, row, expect, history=_ending(row, Ended.DESTROYED, action.state), finished=_finished(action)
    )


def _intend(process: Process, now: int) -> dict[str, Any]:
    return {"pending": process, "pending_issued": False, "pending_since": now, "status": Status.IN_PROGRESS}


def _first_deploy_waiting(row: ScheduleRecord) -> bool:
    """The first deploy is intended and not sent: nothing reached the node yet."""
    return row.pending == Process.DEPLOY and not row.started and not row.ending


# -- the clock ---------------------------------------------------------------------------------


def on_time(
    row: ScheduleRecord,
    now: int,
    *,
    in_inventory: bool = True,
    in_maintenance: bool = False,
    prestage: Prestage | None = None,
) -> Decision | None:
    """What the clock does to `row` at `now` (epoch seconds): START at start_date, or PRESTAGE
    up to `prestage.lead` seconds before it (None: prestage is off); at end_date END (destroy),
    or EXPIRE/ORPHAN when there is nothing to destroy; DESTROY_AFTER_DOUBT once an ending row's
    intention in doubt is resolved. `in_inventory` is False when the node left the controller's
    node cache (its agent no longer lists it). A node `in_maintenance` is never handed over:
    START and PRESTAGE wait, and a first deploy not sent yet is put back (HOLD)."""
    if row.end_date <= now and (not row.started or not in_inventory):
        expect = {"pending_issued": row.pending_issued, "process": row.process, "pending": row.pending}
        if row.started:
            return _decide(
                Transition.ORPHAN, row, expect, history=_ending(row, Ended.ORPHANED), maintenance=ORPHANED_NODE
            )
        return _decide(Transition.EXPIRE, row, expect, history=_ending(row, Ended.EXPIRED, ""))
    if row.end_date <= now and not row.ending:
        changes: dict[str, Any] = {"ending": True, "end_reason": EndReason.WINDOW}
        if not row.pending_issued:
            # An intention not sent yet is replaced by the destroy; one in doubt is resolved
            # first (DESTROY_AFTER_DOUBT follows).
            changes |= _intend(Process.DESTROY, now)
        return _decide(
            Transition.END,
            row,
            expect={"ending": False, "pending": row.pending, "pending_issued": row.pending_issued},
            changes=changes,
        )
    if row.ending and not row.pending and row.process != Process.DESTROY:
        return _decide(
            Transition.DESTROY_AFTER_DOUBT,
            row,
            expect={"ending": True, "pending": "", "process": row.process},
            changes=_intend(Process.DESTROY, now),
        )
    if in_maintenance and _first_deploy_waiting(row) and not row.pending_issued:
        return _decide(
            Transition.HOLD,
            row,
            expect={"pending": Process.DEPLOY, "pending_issued": False, "process": "", "action_state": "", "ending": False},
            changes=_NO_INTENTION | {"status": Status.READY},
        )
    unstarted = {"status": Status.READY, "pending": "", "process": "", "action_state": "", "ending": False}
    if in_maintenance:
        return None
    if due_to_start(row, now):
        return _decide(Transition.START, row, expect=unstarted, changes=_intend(Process.DEPLOY, now))
    if prestage is not None and due_to_prestage(row, now, prestage):
        return _decide(
            Transition.PRESTAGE,
            row,
            expect=unstarted,
            changes=_intend(Process.DEPLOY, now),
            clear=Clearance(now, row.start_date, prestage.turnaround),
        )
    return None


# -- the agent's report ------------------------------------------------------------------------


def on_report(row: ScheduleRecord, action: ActionState | None, *, blocked: bool = False) -> Decision | None:
    """What the agent's report of the node (`action`, None when it has none) does to `row`.

    For a row with an intention: ADOPT, WAIT_BUSY, or ISSUE (the claim to write before sending
    StartAction; `Decision.issues`); nothing while `blocked` (see `blocked_rows`). For a row
    without: MIRROR, or REMOVE (REMOVE_LOST) once an ending row's destroy is final.
    """
    if row.pending:
        return _on_report_pending(row, action, blocked)
    if action is None:
        return None
    expect = {"pending": "", "action_updated_at": row.action_updated_at, "action_state": row.action_state}
    if _destroy_done(row, action):
        return _removed(row, action, expect)
    changes = _mirror(action)
    if not _differs(row, changes):
        return None
    return _decide(Transition.MIRROR, row, expect, changes, finished=_finished(action))


def _on_report_pending(row: ScheduleRecord, action: ActionState | None, blocked: bool) -> Decision | None:
    expect = {"pending": row.pending, "pending_issued": row.pending_issued, "baseline": row.baseline}
    if row.baseline and action is not None and action.process == row.pending and action.fingerprint() != row.baseline:
        # The agent runs (or ran) the action we sent before its answer was recorded.
        if _destroy_done(row, action):
            return _removed(row, action, expect)
        return _decide(
            Transition.ADOPT,
            row,
            expect,
            _mirror(action) | _NO_INTENTION | {"last_error": ""},
            finished=_finished(action),
        )
    if action is not None and not action.final:
        # Busy with another action: ours was not accepted; wait until that one ends.
        changes: dict[str, Any] = {}
        if row.pending_issued:
            changes["pending_issued"] = False
        if row.started and action.process != row.pending:
            # Keep showing what the node does, but the row stays in_progress for our intention.
            changes |= {k: v for k, v in _mirror(action).items() if k != "status"}
        if changes and _differs(row, changes):
            return _decide(Transition.WAIT_BUSY, row, expect, changes)
        return None
    if blocked:
        return None
    return before_issue(row, action)


def before_issue(row: ScheduleRecord, action: ActionState | None) -> Decision:
    """ISSUE: the claim written before StartAction(row.pending) is sent: `pending_issued` and
    the `baseline` (the agent's `action` for the node in this poll), so a crash from then on is
    resolved by comparing the baseline with what the agent reports."""
    return _decide(
        Transition.ISSUE,
        row,
        expect={"pending": row.pending, "pending_issued": row.pending_issued, "baseline": row.baseline},
        changes={"pending_issued": True, "baseline": fingerprint(action)},
    )


# -- StartAction's answer ----------------------------------------------------------------------


def start_result(answer: ActionState | ServiceError) -> StartResult:
    """Classifies what StartAction returned or raised (the agent client's errors)."""
    if isinstance(answer, ActionState):
        return StartResult(Outcome.ACCEPTED, action=answer)
    if isinstance(answer, (Conflict, AgentRejectedToken)):
        return StartResult(Outcome.NOT_STARTED, message=answer.message)
    if isinstance(answer, (InvalidInput, NotFound)):
        return StartResult(Outcome.REFUSED, message=answer.message)
    return StartResult(Outcome.NO_ANSWER, message=answer.message)


def after_start(row: ScheduleRecord, result: StartResult) -> Decision | None:
    """What StartAction's answer does to `row`, the row as claimed by ISSUE (pending_issued
    set, baseline recorded): ACCEPTED (or REMOVE/REMOVE_LOST), RETRY, REFUSED (or ABANDON when
    ending, which puts the node in maintenance: it was never wiped), and nothing when there was
    no answer: the row stays in doubt for the next report."""
    expect = {"pending": row.pending, "pending_issued": True, "baseline": row.baseline}
    if result.outcome is Outcome.ACCEPTED:
        assert result.action is not None
        if _destroy_done(row, result.action):
            return _removed(row, result.action, expect)
        return _decide(
            Transition.ACCEPTED,
            row,
            expect,
            _mirror(result.action) | _NO_INTENTION | {"last_error": ""},
            finished=_finished(result.action),
        )
    if result.outcome is Outcome.NOT_STARTED:
        # Certainly not started: keep the intention and the baseline, so the next report either
        # adopts an action the agent accepted earlier or sends it again.
        return _decide(Transition.RETRY, row, expect, {"pending_issued": False})
    if result.outcome is Outcome.REFUSED:
        if row.ending:
            return _decide(
                Transition.ABANDON,
                row,
                expect,
                history=_ending(row, Ended.ABANDONED),
                maintenance=f"the agent refused the destroy: {result.message}"[:500],
            )
        never_ran = not row.process and not row.action_state
        return _decide(
            Transition.REFUSED,
            row,
            expect,
            _NO_INTENTION
            | {
                "last_error": f"{row.pending} refused: {result.message}"[:500],
                # A first deploy refused for its configuration waits for the user to fix it.
                "status": Status.CONFIGURING if never_ran else Status.READY,
            },
        )
    return None


# -- the user ----------------------------------------------------------------------------------


def on_user_action(
    row: ScheduleRecord, action: UserAction, now: int, *, in_maintenance: bool = False
) -> Decision | None:
    """What the user's reboot, deploy or destroy does to their `row` at `now`.

    reboot/deploy: REQUEST, or Conflict when the window is not open, the row is ending, busy,
    not configured (deploy), never deployed (reboot), or when its first deploy would hand over
    a node `in_maintenance`. destroy: as `on_end` by the owner. ValueError for extend (see
    `on_extend`).
    """
    if action is UserAction.DESTROY:
        return on_end(row, now, reason=EndReason.OWNER, by=row.owner)
    if action is UserAction.EXTEND:
        raise ValueError("extend depends on the neighbouring windows; use on_extend")
    process = Process(action.value)
    if now < row.start_date:
        raise Conflict(f"the reservation of node {row.node_name} has not started yet")
    if row.ending or now >= row.end_date:
        raise Conflict(f"the reservation of node {row.node_name} is ending")
    if row.pending:
        raise Conflict(f"node {row.node_name} already has a {row.pending} waiting to start")
    if row.status == Status.IN_PROGRESS:
        raise Conflict(f"node {row.node_name} is busy with {row.process or 'an action'}; wait until it ends")
    if process is Process.DEPLOY and row.status == Status.CONFIGURING:
        raise Conflict(f"node {row.node_name} is not configured yet")
    if process is Process.REBOOT and not row.process:
        raise Conflict(f"node {row.node_name} has not been deployed yet")
    if process is Process.DEPLOY and in_maintenance and not row.started:
        raise Conflict(
            f"node {row.node_name} is in maintenance; it is deployed once an administrator releases it "
            "or moves your reservation"
        )
    return _decide(
        Transition.REQUEST,
        row,
        expect={"pending": "", "status": row.status, "ending": False},
        changes=_intend(process, now) | {"last_error": ""},
    )


def on_end(
    row: ScheduleRecord, now: int, *, reason: EndReason, by: str, notice: str = ""
) -> Decision | None:
    """Ends the reservation now, for `reason`, by `by` (an email): CANCEL when nothing was ever
    sent (its history row says so), END_EARLY otherwise (destroy; the rows go once destroyed),
    None when it is already ending. `notice` is shown to the owner while it ends."""
    if not row.started and not row.pending:
        return _decide(
            Transition.CANCEL,
            row,
            expect={"pending": "", "process": "", "action_state": "", "pending_issued": False},
            history=Ending(Ended.CANCELLED, reason, by),
        )
    if row.ending:
        return None
    changes: dict[str, Any] = {
        "ending": True,
        "end_date": min(row.end_date, now),
        "end_reason": reason,
        "ended_by": by,
    }
    if notice:
        changes["notice"] = notice[:500]
    if not row.pending_issued:
        # As at end_date: an intention not sent is replaced; one in doubt is resolved first.
        changes |= _intend(Process.DESTROY, now)
    return _decide(
        Transition.END_EARLY,
        row,
        expect={"pending": row.pending, "pending_issued": row.pending_issued, "ending": False},
        changes=changes,
    )


def on_move(row: ScheduleRecord, now: int, *, by: str, notice: str) -> Decision:
    """An administrator (`by`) moves the reservation to another node; `notice` tells the owner
    (on the reservation where it continues; the one destroyed here says MOVED_AWAY).

    MOVE when nothing was ever sent to the node: the row keeps its window and properties and
    the store re-keys it to the other node (an intended first deploy is taken back, so it
    starts there). Otherwise END_EARLY (reason MOVED): this node is destroyed, and the store
    adds the reservation on the other node with the rest of its window (`moved_status`).
    Conflict when the reservation is already ending.
    """
    if row.ending or now >= row.end_date:
        raise Conflict(f"the reservation of node {row.node_name} by {row.owner} is ending")
    if not row.started:
        return _decide(
            Transition.MOVE,
            row,
            expect={"pending": row.pending, "pending_issued": False, "process": "", "action_state": "", "ending": False},
            changes=_NO_INTENTION | {"status": moved_status(row), "notice": notice[:500]},
        )
    decision = on_end(row, now, reason=EndReason.MOVED, by=by, notice=MOVED_AWAY)
    assert decision is not None and not decision.delete, "a started row that is not ending ends early"
    return decision


def moved_status(row: ScheduleRecord) -> Status:
    """The status of the reservation once on its new node: still CONFIGURING if it was, else
    READY (its configuration was complete), so the clock starts it there."""
    return Status.CONFIGURING if row.status == Status.CONFIGURING else Status.READY


def on_extend(
    row: ScheduleRecord,
    now: int,
    neighbours: Iterable[Window],
    *,
    cap_seconds: int,
    turnaround: int,
    by_seconds: int | None = None,
) -> Decision:
    """EXTEND: moves the reservation's end `by_seconds` later, or without it doubles its
    duration (what extend always did), up to `cap_seconds` in all. `neighbours` are the other
    windows on the node. Conflict when the row is ending, already at the cap, asked to go past
    the cap (the message says how much is left), or when the longer window would come within
    `turnaround` seconds of a neighbour (the message says until when it can go)."""
    if row.ending or now >= row.end_date:
        raise Conflict(f"the reservation of node {row.node_name} is ending")
    duration = row.end_date - row.start_date
    left = cap_seconds - duration
    if left <= 0:
        raise Conflict(
            f"the reservation of node {row.node_name} already lasts the maximum of {cap_seconds / 3600:g} hours"
        )
    if by_seconds is None:
        new_duration = min(2 * duration, cap_seconds)
    else:
        if by_seconds <= 0:
            raise Conflict("extend by a positive number of hours")
        if by_seconds > left:
            raise Conflict(
                f"node {row.node_name} can be extended by at most {left / 3600:.4g} more hours "
                f"(a reservation lasts at most {cap_seconds / 3600:g} hours)"
            )
        new_duration = duration + by_seconds
    new_end = row.start_date + new_duration
    others = [w for w in neighbours if w.owner != row.owner]
    if window_conflicts(others, row.start_date, new_end, turnaround):
        blocking = [w.start_date - turnaround for w in others if w.start_date >= row.end_date]
        room = (min(blocking) - row.end_date) / 3600 if blocking else 0
        more = f"; at most {room:.4g} more hours fit" if room > 0 else ""
        raise Conflict(f"node {row.node_name} cannot be extended: it would run into the next reservation{more}")
    return _decide(
        Transition.EXTEND,
        row,
        expect={"end_date": row.end_date, "ending": False},
        changes={"end_date": new_end},
    )


# -- configuring -------------------------------------------------------------------------------


def configured_status(required: Collection[str], have: Collection[str]) -> Status:
    """READY when every required property is set, else CONFIGURING."""
    return Status.READY if set(required) <= set(have) else Status.CONFIGURING


def status_after_configure(row: ScheduleRecord, have: Collection[str], required: Collection[str]) -> dict[str, Any]:
    """The status changes once the row's properties are `have`: READY or CONFIGURING by
    `configured_status`; a row with an action pending or in progress keeps its status (its
    status follows the action). Clears last_error when a configuring row becomes ready, since
    that error is what sent it back to configuring. {} when nothing changes."""
    if row.pending or row.status == Status.IN_PROGRESS:
        return {}
    status = configured_status(required, have)
    changes: dict[str, Any] = {"status": status}
    if status is Status.READY and row.status == Status.CONFIGURING:
        changes["last_error"] = ""
    return changes


# -- reserving ---------------------------------------------------------------------------------


def window_conflicts(windows: Iterable[Window], start: int, end: int, turnaround: int) -> bool:
    """True when [start, end) comes within `turnaround` seconds of one of `windows`: the gap
    before each start leaves room for the previous reservation's destroy."""
    return any(w.start_date < end + turnaround and w.end_date + turnaround > start for w in windows)


def choose_nodes(
    candidates: Sequence[str],
    windows: Mapping[str, Sequence[Window]],
    unavailable: Mapping[str, str] | None = None,
    *,
    owner: str,
    count: int,
    start: int,
    end: int,
    turnaround: int,
    all_or_nothing: bool,
    health: Mapping[str, float] | None = None,
) -> list[str]:
    """Which of `candidates` (in their order) a request of `owner` for [start, end) gets.

    `windows` maps a candidate to every reservation on it (absent: none); `unavailable` maps a
    candidate that is never handed out to why ("in maintenance: ...", "being removed"). One
    reservation per (node, owner), and no window within `turnaround` of another. With
    `all_or_nothing` (nodes named by the user) every candidate must be free, else Conflict
    names the first that is not; otherwise the first `count` free ones, the healthiest first: by
    descending `health` score (NodeHealth.score, 0..1; a candidate without one counts as 1.0),
    in candidate order among equals. Conflict when fewer are free.
    """
    unavailable = unavailable or {}
    if not all_or_nothing and health:
        scores = health
        # sorted() is stable: equal scores keep the candidates' own order.
        candidates = sorted(candidates, key=lambda node: -scores.get(node, 1.0))
    chosen: list[str] = []
    held = 0
    for node in candidates:
        if node in unavailable:
            if all_or_nothing:
                raise Conflict(f"node {node} is {unavailable[node]}")
            held += 1
            continue
        on_node = windows.get(node, ())
        if any(w.owner == owner for w in on_node):
            if all_or_nothing:
                raise Conflict(f"you already have a reservation on node {node}")
            continue
        if window_conflicts(on_node, start, end, turnaround):
            if all_or_nothing:
                raise Conflict(f"node {node} is already reserved during that time")
            continue
        chosen.append(node)
        if len(chosen) == count:
            break
    if len(chosen) < count:
        aside = f" ({held} more are in maintenance or being removed)" if held else ""
        raise Conflict(f"only {len(chosen)} of the {count} requested nodes are free during that time{aside}")
    return chosen


# -- the node's condition ------------------------------------------------------------------------


def count_final(lost_in_a_row: int, lost: bool, *, limit: int) -> tuple[int, str]:
    """The node's count of actions in a row that ended `lost` once one more action ended
    (`lost` or not), and the maintenance reason when that count reaches `limit` ('' otherwise;
    `limit` 0: never). Any other final state starts the count again."""
    count = lost_in_a_row + 1 if lost else 0
    if lost and limit and count >= limit:
        return count, f"{count} actions in a row ended lost"
    return count, ""
