"""The reservation lifecycle as tables: (row, the agent's report or the user's action, now) ->
the decision, for every transition of `edgebed.controller.lifecycle` and every crash point of
the scheduler. Pure functions only: no database, no agent, no event loop; milliseconds.

Each decision is also applied to its row with `lifecycle.after`, which fails when the row does
not match the decision's own expectations, and the phase it leads to is checked.
"""

from __future__ import annotations

import dataclasses

import pytest

from edgebed.controller import lifecycle
from edgebed.controller.domain import ActionState, ScheduleRecord
from edgebed.controller.errors import (
    AgentRejectedToken,
    AgentUnavailable,
    Conflict,
    InvalidInput,
    NotFound,
    ServiceError,
)
from edgebed.controller.lifecycle import (
    Ended,
    Ending,
    EndReason,
    Finished,
    Phase,
    Status,
    Transition,
    UserAction,
    Window,
)

NODE, ALICE, BOB = "rpi-000", "alice@example.org", "bob@example.org"
NOW = 1_800_000_000
HOUR = 3600
GONE = None  # the phase of a deleted row

def rec(**fields) -> ScheduleRecord:
    """A schedule row of alice on rpi-000 whose one-hour-each-side window is open at NOW."""
    values = dict(
        node_name=NODE, owner=ALICE, bin="", start_date=NOW - HOUR, end_date=NOW + HOUR,
        status="ready", action_state="",
    )
    values.update(fields)
    return ScheduleRecord(**values)


def act(process, state, *, final=False, action_id=7, updated_at=NOW - 10, state_idx=0, progress=0) -> ActionState:
    """The agent's report of rpi-000."""
    return ActionState(
        node_name=NODE, node_ip="10.1.0.1", environment="raspios-lite", process=process, state=state,
        state_idx=state_idx, updated_at=updated_at, progress=progress, state_count=7, final=final,
        action_id=action_id,
    )


def mirrored(action: ActionState) -> dict:
    return {
        "action_state": action.state, "process": action.process, "state_idx": action.state_idx,
        "state_count": action.state_count, "progress": action.progress, "node_ip": action.node_ip,
        "action_updated_at": action.updated_at, "action_error": action.last_error,
        "status": "ready" if action.final else "in_progress",
    }


def shown(row: ScheduleRecord, action: ActionState) -> ScheduleRecord:
    """`row` after it mirrored `action`."""
    return dataclasses.replace(row, **mirrored(action))


CLEARED = {"pending": "", "pending_issued": False, "baseline": "", "last_error": ""}
END = {"ending": True, "end_reason": "window"}
# What the owner's destroy writes beside the destroy it intends.
BY_OWNER = {"ending": True, "end_date": NOW, "end_reason": "owner", "ended_by": ALICE}


def intend(process: str, at: int = NOW) -> dict:
    return {"pending": process, "pending_issued": False, "pending_since": at, "status": "in_progress"}


# Agent reports.
NETBOOT = act("deploy", "netboot", action_id=8, updated_at=NOW - 1)
COPYING = act("deploy", "copy_image", action_id=8, state_idx=3, progress=30)
COPYING_ON = dataclasses.replace(COPYING, progress=60, updated_at=NOW - 2)
DEPLOYED_BEFORE = act("deploy", "deployed", final=True, action_id=5, state_idx=6, updated_at=NOW - 900)
DEPLOYED = act("deploy", "deployed", final=True, action_id=8, state_idx=6, updated_at=NOW - 3)
REBOOTED = act("reboot", "rebooted", final=True, action_id=9, state_idx=3, updated_at=NOW - 20)
# A second reboot ending in the same second as the first: only action_id differs.
REBOOTED_AGAIN = dataclasses.replace(REBOOTED, action_id=10)
HARD_REBOOTING = act("reboot", "power_off", action_id=9, updated_at=NOW - 4)  # the agent's own
WIPING = act("destroy", "wipe", action_id=11, state_idx=2)
DESTROYED = act("destroy", "destroyed", final=True, action_id=11, state_idx=4, updated_at=NOW - 1)
DESTROY_LOST = act("destroy", "lost", final=True, action_id=11, state_idx=2, updated_at=NOW - 1)
DEPLOY_LOST = act("deploy", "lost", final=True, action_id=8, state_idx=3, updated_at=NOW - 1)

# Rows, one per phase (and ending variant).
CONFIGURING = rec(status="configuring")
WAITING = rec(start_date=NOW + 600, end_date=NOW + 600 + HOUR)
DUE = rec()
INTENDED = rec(status="in_progress", pending="deploy", pending_since=NOW - 5)
IN_DOUBT = rec(status="in_progress", pending="deploy", pending_since=NOW - 5, pending_issued=True, baseline="-")
# FAILED_PRECONDITION answered: not issued any more, baseline kept.
RETRYING = dataclasses.replace(IN_DOUBT, pending_issued=False)
RUNNING = shown(rec(), COPYING)
DONE = shown(rec(), DEPLOYED_BEFORE)
REBOOT_INTENDED = dataclasses.replace(DONE, pending="reboot", pending_since=NOW - 5, status="in_progress")
REBOOT_IN_DOUBT = dataclasses.replace(
    shown(rec(), REBOOTED), pending="reboot", pending_since=NOW - 5, status="in_progress",
    pending_issued=True, baseline=REBOOTED.fingerprint(),
)
REDEPLOY_IN_DOUBT = dataclasses.replace(
    DONE, pending="deploy", pending_since=NOW - 5, status="in_progress", pending_issued=True,
    baseline=DEPLOYED_BEFORE.fingerprint(),
)
PAST = {"start_date": NOW - 2 * HOUR, "end_date": NOW}
DESTROY_INTENDED = dataclasses.replace(DONE, **PAST, ending=True, **intend("destroy"))
DESTROY_IN_DOUBT = dataclasses.replace(DESTROY_INTENDED, pending_issued=True, baseline=DEPLOYED_BEFORE.fingerprint())
DESTROYING = dataclasses.replace(shown(rec(), WIPING), **PAST, ending=True)


def check(row, decision, transition, *, changes=None, delete=False, phase=None):
    """`decision` is `transition` with exactly `changes` (or a delete), applies to `row`, and
    leaves it in `phase`."""
    if transition is None:
        assert decision is None
        return
    assert decision is not None, f"expected {transition}, got nothing"
    assert (decision.transition, decision.node_name, decision.owner) == (transition, row.node_name, row.owner)
    assert decision.delete == delete
    if changes is not None:
        assert dict(decision.changes) == changes
    result = lifecycle.after(row, decision)  # raises when the row does not match `expect`
    if delete:
        assert result is None and phase is GONE
    else:
        assert lifecycle.phase(result) is phase


# -- phases --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "row, phase",
    [
        (CONFIGURING, Phase.CONFIGURING),
        (WAITING, Phase.READY),
        (DUE, Phase.READY),
        (INTENDED, Phase.INTENDED),
        (RETRYING, Phase.INTENDED),
        (IN_DOUBT, Phase.IN_DOUBT),
        (RUNNING, Phase.RUNNING),
        (DONE, Phase.DONE),
        (dataclasses.replace(DONE, status="configuring"), Phase.DONE),
        (DESTROY_IN_DOUBT, Phase.IN_DOUBT),
        (DESTROYING, Phase.RUNNING),
    ],
    ids=["configuring", "waiting", "due", "intended", "retrying", "in_doubt", "running", "done",
         "done-then-refused-config", "ending-in-doubt", "ending-running"],
)
def test_phase_of_a_row(row, phase):
    assert lifecycle.phase(row) is phase
    assert lifecycle.action_finished(row) == (phase is Phase.DONE)


def test_status_is_the_seeds_text():
    assert [s.value for s in Status] == ["configuring", "ready", "in_progress"]
    assert Status.READY == "ready" and f"{Status.IN_PROGRESS}" == "in_progress"
    assert rec(status="in_progress").status == Status.IN_PROGRESS  # a row read back as str


# -- the clock -------------------------------------------------------------------------------

ON_TIME = [
    # id, row, now, in_inventory, transition, changes, phase after
    ("before-start-nothing", WAITING, NOW, True, None, None, None),
    ("ready-at-start-deploys", DUE, NOW, True, Transition.START, intend("deploy"), Phase.INTENDED),
    ("ready-exactly-at-start-date", rec(start_date=NOW), NOW, True, Transition.START, intend("deploy"), Phase.INTENDED),
    ("configuring-waits-for-the-user", CONFIGURING, NOW, True, None, None, None),
    ("intended-is-not-started-twice", INTENDED, NOW, True, None, None, None),
    ("running-nothing", RUNNING, NOW, True, None, None, None),
    ("done-nothing", DONE, NOW, True, None, None, None),
    ("ready-at-end-never-ran-expires", DUE, NOW + HOUR, True, Transition.EXPIRE, {}, GONE),
    ("configuring-at-end-expires", CONFIGURING, NOW + HOUR, True, Transition.EXPIRE, {}, GONE),
    ("intention-never-sent-at-end-expires", INTENDED, NOW + HOUR, True, Transition.EXPIRE, {}, GONE),
    ("done-at-end-node-gone-orphaned", DONE, NOW + HOUR, False, Transition.ORPHAN, {}, GONE),
    ("destroying-node-gone-orphaned", DESTROYING, NOW, False, Transition.ORPHAN, {}, GONE),
    ("done-at-end-destroys", DONE, NOW + HOUR, True, Transition.END,
     END | intend("destroy", NOW + HOUR), Phase.INTENDED),
    ("running-at-end-destroys-after-it", RUNNING, NOW + HOUR, True, Transition.END,
     END | intend("destroy", NOW + HOUR), Phase.INTENDED),
    ("intended-reboot-at-end-replaced-by-destroy", REBOOT_INTENDED, NOW + HOUR, True, Transition.END,
     END | intend("destroy", NOW + HOUR), Phase.INTENDED),
    ("in-doubt-at-end-only-ending", REBOOT_IN_DOUBT, NOW + HOUR, True, Transition.END, END, Phase.IN_DOUBT),
    ("doubt-resolved-then-destroy", dataclasses.replace(shown(rec(), REBOOTED), **PAST, ending=True), NOW, True,
     Transition.DESTROY_AFTER_DOUBT, intend("destroy"), Phase.INTENDED),
    ("ending-destroy-running-nothing", DESTROYING, NOW, True, None, None, None),
    ("ending-destroy-in-doubt-nothing", DESTROY_IN_DOUBT, NOW, True, None, None, None),
]


@pytest.mark.parametrize(
    "row, now, in_inventory, transition, changes, phase", [c[1:] for c in ON_TIME], ids=[c[0] for c in ON_TIME]
)
def test_on_time(row, now, in_inventory, transition, changes, phase):
    decision = lifecycle.on_time(row, now, in_inventory=in_inventory)
    check(row, decision, transition, changes=changes, delete=phase is GONE and transition is not None, phase=phase)
    assert lifecycle.due_to_start(row, now) == (transition is Transition.START)


# -- the clock, with prestage -----------------------------------------------------------------


def ahead(lead, *others, turnaround=0) -> lifecycle.Prestage:
    """What the scheduler gives on_time when prestage is on."""
    return lifecycle.Prestage(lead, tuple(others), turnaround)


START_AT = WAITING.start_date  # NOW + 600
PRESTAGE = [
    # id, row, now, prestage, transition, changes, phase after
    ("within-the-lead-deploys-early", WAITING, NOW, ahead(900), Transition.PRESTAGE, intend("deploy"), Phase.INTENDED),
    ("exactly-lead-before-start", WAITING, NOW, ahead(600), Transition.PRESTAGE, intend("deploy"), Phase.INTENDED),
    ("before-the-lead-waits", WAITING, NOW, ahead(599), None, None, None),
    ("prestage-off-waits-for-start", WAITING, NOW, None, None, None, None),
    ("node-reserved-until-now-waits", WAITING, NOW, ahead(900, Window(NODE, BOB, NOW - HOUR, NOW + 1)),
     None, None, None),
    ("previous-window-within-turnaround-waits", WAITING, NOW,
     ahead(900, Window(NODE, BOB, NOW - HOUR, NOW - 100), turnaround=300), None, None, None),
    ("previous-window-and-turnaround-over-deploys", WAITING, NOW,
     ahead(900, Window(NODE, BOB, NOW - HOUR, NOW - 300), turnaround=300), Transition.PRESTAGE, intend("deploy"),
     Phase.INTENDED),
    ("a-later-window-is-no-obstacle", WAITING, NOW,
     ahead(900, Window(NODE, BOB, START_AT + HOUR + 300, START_AT + 2 * HOUR), turnaround=300),
     Transition.PRESTAGE, intend("deploy"), Phase.INTENDED),
    ("configuring-waits-for-the-user", rec(status="configuring", start_date=START_AT, end_date=START_AT + HOUR),
     NOW, ahead(900), None, None, None),
    ("intended-early-is-not-started-twice", rec(status="in_progress", pending="deploy", pending_since=NOW - 5,
     start_date=START_AT, end_date=START_AT + HOUR), NOW, ahead(900), None, None, None),
    ("deployed-early-nothing-at-start", dataclasses.replace(shown(WAITING, DEPLOYED), pending_since=NOW - 300),
     START_AT, ahead(900), None, None, None),
    ("at-start-a-plain-start", DUE, NOW, ahead(900), Transition.START, intend("deploy"), Phase.INTENDED),
]


@pytest.mark.parametrize(
    "row, now, prestage, transition, changes, phase", [c[1:] for c in PRESTAGE], ids=[c[0] for c in PRESTAGE]
)
def test_on_time_with_prestage(row, now, prestage, transition, changes, phase):
    decision = lifecycle.on_time(row, now, prestage=prestage)
    check(row, decision, transition, changes=changes, phase=phase)
    assert lifecycle.due_to_start(row, now) == (transition is Transition.START)
    if transition is Transition.PRESTAGE:
        # The write re-checks, in its transaction, that no other owner's window came in the way.
        assert decision.clear == lifecycle.Clearance(now, row.start_date, prestage.turnaround)
    elif decision is not None:
        assert decision.clear is None


def test_a_node_in_maintenance_is_not_prestaged():
    assert lifecycle.on_time(WAITING, NOW, prestage=ahead(900)).transition is Transition.PRESTAGE
    assert lifecycle.on_time(WAITING, NOW, prestage=ahead(900), in_maintenance=True) is None


@pytest.mark.parametrize(
    "start, pending_since, occupied",
    [(5000, 0, 5000), (5000, 4100, 4100), (5000, 5200, 5000)],
    ids=["nothing-sent", "deploy-started-ahead", "intention-after-start"],
)
def test_a_reservation_occupies_its_node_from_its_early_deploy(start, pending_since, occupied):
    assert lifecycle.occupied_from(start, pending_since) == occupied


def test_a_start_expects_what_it_saw_so_a_users_cancel_or_deploy_wins():
    decision = lifecycle.on_time(DUE, NOW)
    assert decision.expect == {"status": "ready", "pending": "", "process": "", "action_state": "", "ending": False}


ON_TIME_IN_MAINTENANCE = [
    # id, row, now, transition, changes, phase after (the node is in maintenance)
    ("ready-at-start-waits", DUE, NOW, None, None, None),
    ("intended-first-deploy-held-back", INTENDED, NOW, Transition.HOLD,
     {"pending": "", "pending_issued": False, "baseline": "", "status": "ready"}, Phase.READY),
    ("users-first-deploy-held-back", RETRYING, NOW, Transition.HOLD,
     {"pending": "", "pending_issued": False, "baseline": "", "status": "ready"}, Phase.READY),
    ("first-deploy-in-doubt-not-held", IN_DOUBT, NOW, None, None, None),
    ("a-redeploy-of-the-holder-not-held", dataclasses.replace(DONE, **intend("deploy")), NOW, None, None, None),
    ("ready-at-end-still-expires", DUE, NOW + HOUR, Transition.EXPIRE, {}, GONE),
    ("done-at-end-still-destroyed", DONE, NOW + HOUR, Transition.END, END | intend("destroy", NOW + HOUR),
     Phase.INTENDED),
]


@pytest.mark.parametrize(
    "row, now, transition, changes, phase",
    [c[1:] for c in ON_TIME_IN_MAINTENANCE],
    ids=[c[0] for c in ON_TIME_IN_MAINTENANCE],
)
def test_on_time_never_hands_out_a_node_in_maintenance(row, now, transition, changes, phase):
    decision = lifecycle.on_time(row, now, in_maintenance=True)
    check(row, decision, transition, changes=changes, delete=phase is GONE and transition is not None, phase=phase)
    if transition is Transition.HOLD:
        # Released again: the clock starts it as any other.
        assert lifecycle.on_time(lifecycle.after(row, decision), now).transition is Transition.START


# -- the agent's report ----------------------------------------------------------------------

ON_REPORT = [
    # id, row, report, blocked, transition, changes, phase after
    ("intended-idle-node-issues", INTENDED, None, False, Transition.ISSUE,
     {"pending_issued": True, "baseline": "-"}, Phase.IN_DOUBT),
    ("intended-after-a-final-action-issues", REBOOT_INTENDED, DEPLOYED_BEFORE, False, Transition.ISSUE,
     {"pending_issued": True, "baseline": DEPLOYED_BEFORE.fingerprint()}, Phase.IN_DOUBT),
    ("intended-while-previous-owner-ends-waits", INTENDED, DESTROYED, True, None, None, None),
    ("intended-same-process-by-agent-unclaimed-waits", REBOOT_INTENDED, HARD_REBOOTING, False, None, None, None),
    ("in-doubt-agent-runs-ours-adopted", IN_DOUBT, NETBOOT, False, Transition.ADOPT,
     mirrored(NETBOOT) | CLEARED, Phase.RUNNING),
    ("in-doubt-ours-already-final-adopted", IN_DOUBT, DEPLOYED, False, Transition.ADOPT,
     mirrored(DEPLOYED) | CLEARED, Phase.DONE),
    ("in-doubt-same-as-baseline-issued-again", REBOOT_IN_DOUBT, REBOOTED, False, Transition.ISSUE,
     {"pending_issued": True, "baseline": REBOOTED.fingerprint()}, Phase.IN_DOUBT),
    ("in-doubt-only-action-id-differs-adopted", REBOOT_IN_DOUBT, REBOOTED_AGAIN, False, Transition.ADOPT,
     mirrored(REBOOTED_AGAIN) | CLEARED, Phase.DONE),
    ("in-doubt-no-action-issued-again", IN_DOUBT, None, False, Transition.ISSUE,
     {"pending_issued": True, "baseline": "-"}, Phase.IN_DOUBT),
    ("retrying-agent-shows-ours-adopted", RETRYING, COPYING, False, Transition.ADOPT,
     mirrored(COPYING) | CLEARED, Phase.RUNNING),
    ("retrying-agent-still-idle-issued-again", RETRYING, None, False, Transition.ISSUE,
     {"pending_issued": True, "baseline": "-"}, Phase.IN_DOUBT),
    ("in-doubt-node-busy-with-another-waits", REDEPLOY_IN_DOUBT, HARD_REBOOTING, False, Transition.WAIT_BUSY,
     {"pending_issued": False} | {k: v for k, v in mirrored(HARD_REBOOTING).items() if k != "status"},
     Phase.INTENDED),
    ("claimed-first-deploy-node-busy-shows-what-it-does", IN_DOUBT, HARD_REBOOTING, False, Transition.WAIT_BUSY,
     {"pending_issued": False} | {k: v for k, v in mirrored(HARD_REBOOTING).items() if k != "status"},
     Phase.INTENDED),
    ("unclaimed-first-deploy-node-busy-waits", RETRYING, HARD_REBOOTING, False, None, None, None),
    ("adopts-even-while-blocked", IN_DOUBT, NETBOOT, True, Transition.ADOPT, mirrored(NETBOOT) | CLEARED,
     Phase.RUNNING),
    ("ending-destroy-in-doubt-adopted", DESTROY_IN_DOUBT, WIPING, False, Transition.ADOPT,
     mirrored(WIPING) | CLEARED, Phase.RUNNING),
    ("ending-destroy-in-doubt-already-destroyed-removed", DESTROY_IN_DOUBT, DESTROYED, False, Transition.REMOVE,
     {}, GONE),
    ("ending-destroy-waits-for-the-running-deploy", DESTROY_INTENDED, COPYING, False, Transition.WAIT_BUSY,
     {k: v for k, v in mirrored(COPYING).items() if k != "status"}, Phase.INTENDED),
    ("running-progress-mirrored", RUNNING, COPYING_ON, False, Transition.MIRROR, mirrored(COPYING_ON), Phase.RUNNING),
    ("running-final-mirrored-ready", RUNNING, DEPLOYED, False, Transition.MIRROR, mirrored(DEPLOYED), Phase.DONE),
    ("running-unchanged-nothing", RUNNING, COPYING, False, None, None, None),
    ("no-report-nothing", RUNNING, None, False, None, None, None),
    ("done-agents-own-hard-reboot-mirrored", DONE, HARD_REBOOTING, False, Transition.MIRROR,
     mirrored(HARD_REBOOTING), Phase.RUNNING),
    ("done-not-ending-destroyed-only-mirrored", DONE, DESTROYED, False, Transition.MIRROR, mirrored(DESTROYED),
     Phase.DONE),
    ("ending-destroyed-removed", DESTROYING, DESTROYED, False, Transition.REMOVE, {}, GONE),
    ("ending-destroy-lost-removed-node-in-maintenance", DESTROYING, DESTROY_LOST, False, Transition.REMOVE_LOST,
     {}, GONE),
    ("ending-destroy-in-doubt-already-lost-removed", DESTROY_IN_DOUBT, DESTROY_LOST, False, Transition.REMOVE_LOST,
     {}, GONE),
]


@pytest.mark.parametrize(
    "row, report, blocked, transition, changes, phase", [c[1:] for c in ON_REPORT], ids=[c[0] for c in ON_REPORT]
)
def test_on_report(row, report, blocked, transition, changes, phase):
    decision = lifecycle.on_report(row, report, blocked=blocked)
    check(row, decision, transition, changes=changes, delete=phase is GONE and transition is not None, phase=phase)
    assert (decision is not None and decision.issues) == (transition is Transition.ISSUE)


def test_a_row_waits_while_another_owners_reservation_of_the_node_ends():
    bobs_next = dataclasses.replace(INTENDED, owner=BOB)
    mine_too = dataclasses.replace(DESTROY_INTENDED, node_name="rpi-001")
    rows = [DESTROYING, bobs_next, mine_too, dataclasses.replace(INTENDED, node_name="rpi-002")]
    assert lifecycle.blocked_rows(rows) == {(NODE, BOB)}
    assert lifecycle.follows_agent(INTENDED) and lifecycle.follows_agent(DONE)
    assert not lifecycle.follows_agent(DUE) and not lifecycle.follows_agent(CONFIGURING)


# -- StartAction's answer ------------------------------------------------------------------

AFTER_START = [
    # id, claimed row, answer (returned or raised), transition, changes, phase after
    ("accepted-mirrored", IN_DOUBT, NETBOOT, Transition.ACCEPTED, mirrored(NETBOOT) | CLEARED, Phase.RUNNING),
    ("accepted-and-already-final", REBOOT_IN_DOUBT, REBOOTED_AGAIN, Transition.ACCEPTED,
     mirrored(REBOOTED_AGAIN) | CLEARED, Phase.DONE),
    ("accepted-ending-destroy-running", DESTROY_IN_DOUBT, WIPING, Transition.ACCEPTED, mirrored(WIPING) | CLEARED,
     Phase.RUNNING),
    ("accepted-ending-destroy-instantly-done-removed", DESTROY_IN_DOUBT, DESTROYED, Transition.REMOVE, {}, GONE),
    ("accepted-ending-destroy-instantly-lost", DESTROY_IN_DOUBT, DESTROY_LOST, Transition.REMOVE_LOST, {}, GONE),
    ("busy-failed-precondition-retried", IN_DOUBT, Conflict("node rpi-000 is busy", code="FAILED_PRECONDITION"),
     Transition.RETRY, {"pending_issued": False}, Phase.INTENDED),
    ("token-rejected-retried", IN_DOUBT, AgentRejectedToken("agent rpi rejected the token"), Transition.RETRY,
     {"pending_issued": False}, Phase.INTENDED),
    ("first-deploy-refused-back-to-configuring", IN_DOUBT, InvalidInput("unknown environment 'raspios-lite'"),
     Transition.REFUSED,
     {"pending": "", "pending_issued": False, "baseline": "", "status": "configuring",
      "last_error": "deploy refused: unknown environment 'raspios-lite'"}, Phase.CONFIGURING),
    ("reboot-refused-stays-ready", REBOOT_IN_DOUBT, NotFound("no node rpi-000"), Transition.REFUSED,
     {"pending": "", "pending_issued": False, "baseline": "", "status": "ready",
      "last_error": "reboot refused: no node rpi-000"}, Phase.DONE),
    ("ending-destroy-refused-abandoned", DESTROY_IN_DOUBT, NotFound("no node rpi-000"), Transition.ABANDON, {}, GONE),
    ("unavailable-stays-in-doubt", IN_DOUBT, AgentUnavailable("agent rpi did not answer"), None, None, None),
    ("agent-failure-stays-in-doubt", IN_DOUBT, ServiceError("agent rpi failed: INTERNAL"), None, None, None),
]


@pytest.mark.parametrize(
    "row, answer, transition, changes, phase", [c[1:] for c in AFTER_START], ids=[c[0] for c in AFTER_START]
)
def test_after_start(row, answer, transition, changes, phase):
    decision = lifecycle.after_start(row, lifecycle.start_result(answer))
    check(row, decision, transition, changes=changes, delete=phase is GONE and transition is not None, phase=phase)
    if decision is not None:
        assert decision.expect == {"pending": row.pending, "pending_issued": True, "baseline": row.baseline}


def test_a_refusal_message_is_cut_to_500_characters():
    decision = lifecycle.after_start(IN_DOUBT, lifecycle.start_result(InvalidInput("x" * 1000)))
    assert len(decision.changes["last_error"]) == 500


def test_the_claim_then_the_answer_chain():
    """ISSUE's claimed row is what after_start expects: the pair applies in order."""
    claim = lifecycle.on_report(INTENDED, DEPLOYED_BEFORE)
    claimed = lifecycle.after(INTENDED, claim)
    answer = lifecycle.after_start(claimed, lifecycle.start_result(NETBOOT))
    assert lifecycle.phase(lifecycle.after(claimed, answer)) is Phase.RUNNING
    with pytest.raises(ValueError, match="pending_issued"):
        lifecycle.after(INTENDED, answer)  # the answer never applies without the claim on disk


# -- crash points (the scheduler's docstring) ----------------------------------------------

CRASHES = [
    # id, the row as the killed controller left it, the agent's report on restart,
    # what the first poll after the restart does
    ("killed-after-writing-the-intention", INTENDED, None, Transition.ISSUE),
    ("killed-after-the-claim-before-sending", IN_DOUBT, None, Transition.ISSUE),
    ("killed-after-the-claim-node-at-its-old-final-action", REDEPLOY_IN_DOUBT, DEPLOYED_BEFORE, Transition.ISSUE),
    ("killed-after-start-action-was-accepted", IN_DOUBT, NETBOOT, Transition.ADOPT),
    ("killed-after-it-was-accepted-and-finished", REDEPLOY_IN_DOUBT, DEPLOYED, Transition.ADOPT),
    ("killed-after-a-lookalike-action-was-accepted", REBOOT_IN_DOUBT, REBOOTED_AGAIN, Transition.ADOPT),
    ("killed-after-failed-precondition-agent-now-shows-ours", RETRYING, NETBOOT, Transition.ADOPT),
    ("killed-after-failed-precondition-node-still-busy", RETRYING, HARD_REBOOTING, None),
    ("killed-while-the-agent-did-not-answer", IN_DOUBT, None, Transition.ISSUE),
    ("killed-after-an-ending-destroy-was-accepted", DESTROY_IN_DOUBT, WIPING, Transition.ADOPT),
    ("killed-after-the-destroy-finished", DESTROY_IN_DOUBT, DESTROYED, Transition.REMOVE),
    ("killed-after-the-destroy-ended-lost", DESTROY_IN_DOUBT, DESTROY_LOST, Transition.REMOVE_LOST),
]


@pytest.mark.parametrize("row, report, transition", [c[1:] for c in CRASHES], ids=[c[0] for c in CRASHES])
def test_restart_after_a_crash(row, report, transition):
    decision = lifecycle.on_report(row, report)
    assert (decision.transition if decision else None) == transition
    if decision is not None:
        lifecycle.after(row, decision)
    # Sent again only where nothing says it was accepted: never twice for one intention.
    sent_again = decision is not None and decision.issues
    assert sent_again == (report is None or report.fingerprint() == row.baseline or row.baseline == "")


def test_end_date_passing_while_in_doubt_destroys_once_the_doubt_is_resolved():
    ending = lifecycle.after(REBOOT_IN_DOUBT, lifecycle.on_time(REBOOT_IN_DOUBT, NOW + HOUR))
    assert (ending.ending, ending.pending, ending.pending_issued) == (True, "reboot", True)
    assert lifecycle.on_time(ending, NOW + HOUR) is None  # not yet: the reboot may run
    adopted = lifecycle.after(ending, lifecycle.on_report(ending, REBOOTED_AGAIN))
    destroy = lifecycle.on_time(adopted, NOW + HOUR)
    assert destroy.transition is Transition.DESTROY_AFTER_DOUBT
    assert lifecycle.after(adopted, destroy).pending == "destroy"


# -- concurrent writers --------------------------------------------------------------------

RACES = [
    # id, row, the scheduler's decision, the user's decision (decided on the same row),
    # whether the scheduler's write still applies once the user's is written
    ("mirror-vs-end-early", RUNNING, lambda r: lifecycle.on_report(r, DEPLOYED),
     lambda r: lifecycle.on_user_action(r, UserAction.DESTROY, NOW), False),
    ("start-vs-users-own-deploy", DUE, lambda r: lifecycle.on_time(r, NOW),
     lambda r: lifecycle.on_user_action(r, UserAction.DEPLOY, NOW), False),
    ("claim-vs-end-early", REBOOT_INTENDED, lambda r: lifecycle.on_report(r, DEPLOYED_BEFORE),
     lambda r: lifecycle.on_user_action(r, UserAction.DESTROY, NOW), False),
    ("end-vs-end-early", DONE, lambda r: lifecycle.on_time(r, NOW + HOUR),
     lambda r: lifecycle.on_user_action(r, UserAction.DESTROY, NOW), False),
    ("agents-hard-reboot-vs-users-reboot", DONE, lambda r: lifecycle.on_report(r, HARD_REBOOTING),
     lambda r: lifecycle.on_user_action(r, UserAction.REBOOT, NOW), False),
    # An answer in doubt is still recorded once the user ended the reservation; the destroy
    # follows it (DESTROY_AFTER_DOUBT).
    ("accepted-vs-end-early-both-apply", REBOOT_IN_DOUBT,
     lambda r: lifecycle.after_start(r, lifecycle.start_result(REBOOTED_AGAIN)),
     lambda r: lifecycle.on_user_action(r, UserAction.DESTROY, NOW), True),
]


@pytest.mark.parametrize("row, scheduler, user, both", [c[1:] for c in RACES], ids=[c[0] for c in RACES])
def test_a_write_decided_on_a_row_the_other_side_changed_does_not_apply(row, scheduler, user, both):
    mine, theirs = scheduler(row), user(row)
    changed = lifecycle.after(row, theirs)
    if both:
        lifecycle.after(changed, mine)
    else:
        with pytest.raises(ValueError, match="no longer matches"):
            lifecycle.after(changed, mine)


# -- the user --------------------------------------------------------------------------------

USER = [
    # id, row, action, transition, changes, phase after
    ("reboot-a-deployed-node", DONE, UserAction.REBOOT, Transition.REQUEST,
     intend("reboot") | {"last_error": ""}, Phase.INTENDED),
    ("deploy-again", DONE, UserAction.DEPLOY, Transition.REQUEST, intend("deploy") | {"last_error": ""},
     Phase.INTENDED),
    ("deploy-before-the-scheduler-does", DUE, UserAction.DEPLOY, Transition.REQUEST,
     intend("deploy") | {"last_error": ""}, Phase.INTENDED),
    ("destroy-a-waiting-reservation-cancels", WAITING, UserAction.DESTROY, Transition.CANCEL, {}, GONE),
    ("destroy-a-configuring-reservation-cancels", CONFIGURING, UserAction.DESTROY, Transition.CANCEL, {}, GONE),
    ("destroy-a-deployed-node-ends-now", DONE, UserAction.DESTROY, Transition.END_EARLY,
     BY_OWNER | intend("destroy"), Phase.INTENDED),
    ("destroy-while-deploying-ends-after-it", RUNNING, UserAction.DESTROY, Transition.END_EARLY,
     BY_OWNER | intend("destroy"), Phase.INTENDED),
    ("destroy-replaces-an-unsent-reboot", REBOOT_INTENDED, UserAction.DESTROY, Transition.END_EARLY,
     BY_OWNER | intend("destroy"), Phase.INTENDED),
    ("destroy-while-in-doubt-waits-for-the-doubt", REBOOT_IN_DOUBT, UserAction.DESTROY, Transition.END_EARLY,
     BY_OWNER, Phase.IN_DOUBT),
    ("destroy-of-an-unsent-first-deploy-ends-it", INTENDED, UserAction.DESTROY, Transition.END_EARLY,
     BY_OWNER | intend("destroy"), Phase.INTENDED),
    ("destroy-when-already-ending-nothing", DESTROYING, UserAction.DESTROY, None, None, None),
]


@pytest.mark.parametrize("row, action, transition, changes, phase", [c[1:] for c in USER], ids=[c[0] for c in USER])
def test_on_user_action(row, action, transition, changes, phase):
    decision = lifecycle.on_user_action(row, action, NOW)
    check(row, decision, transition, changes=changes, delete=phase is GONE and transition is not None, phase=phase)


USER_REFUSED = [
    # id, row, action, now, the message
    ("reboot-before-start", WAITING, UserAction.REBOOT, NOW, "has not started yet"),
    ("reboot-while-ending", DESTROYING, UserAction.REBOOT, NOW, "is ending"),
    ("deploy-at-end-date", DONE, UserAction.DEPLOY, NOW + HOUR, "is ending"),
    ("deploy-with-one-waiting", INTENDED, UserAction.DEPLOY, NOW, "already has a deploy waiting to start"),
    ("deploy-while-running", RUNNING, UserAction.DEPLOY, NOW, "is busy with deploy; wait until it ends"),
    ("deploy-unconfigured", CONFIGURING, UserAction.DEPLOY, NOW, "is not configured yet"),
    ("reboot-never-deployed", DUE, UserAction.REBOOT, NOW, "has not been deployed yet"),
]


@pytest.mark.parametrize("row, action, now, message", [c[1:] for c in USER_REFUSED], ids=[c[0] for c in USER_REFUSED])
def test_on_user_action_refused(row, action, now, message):
    with pytest.raises(Conflict, match=message):
        lifecycle.on_user_action(row, action, now)


def test_extend_goes_through_on_extend():
    with pytest.raises(ValueError, match="on_extend"):
        lifecycle.on_user_action(DONE, UserAction.EXTEND, NOW)


EXTEND = [
    # id, row, neighbours, cap hours, turnaround, new end or the Conflict's message
    ("doubles", DONE, [], 24, 0, NOW + 3 * HOUR),
    ("up-to-the-cap", rec(end_date=NOW - HOUR + 16 * HOUR), [], 24, 0, NOW - HOUR + 24 * HOUR),
    ("at-the-cap", rec(end_date=NOW - HOUR + 24 * HOUR), [], 24, 0, "already lasts the maximum of 24 hours"),
    ("into-the-next-window", DONE, [Window(NODE, BOB, NOW + 3 * HOUR, NOW + 4 * HOUR)], 24, 300,
     "would run into the next reservation"),
    ("clear-of-the-next-window", DONE, [Window(NODE, BOB, NOW + 3 * HOUR + 300, NOW + 4 * HOUR)], 24, 300,
     NOW + 3 * HOUR),
    ("own-window-ignored", DONE, [Window(NODE, ALICE, NOW - HOUR, NOW + HOUR)], 24, 300, NOW + 3 * HOUR),
    ("while-ending", DESTROYING, [], 24, 0, "is ending"),
]


@pytest.mark.parametrize("row, neighbours, cap, turnaround, outcome", [c[1:] for c in EXTEND], ids=[c[0] for c in EXTEND])
def test_on_extend(row, neighbours, cap, turnaround, outcome):
    if isinstance(outcome, str):
        with pytest.raises(Conflict, match=outcome):
            lifecycle.on_extend(row, NOW, neighbours, cap_seconds=cap * HOUR, turnaround=turnaround)
        return
    decision = lifecycle.on_extend(row, NOW, neighbours, cap_seconds=cap * HOUR, turnaround=turnaround)
    check(row, decision, Transition.EXTEND, changes={"end_date": outcome}, phase=lifecycle.phase(row))
    assert decision.expect == {"end_date": row.end_date, "ending": False}


EXTEND_BY = [
    # id, row, neighbours, cap hours, hours asked, new end or the Conflict's message
    ("by-three-hours", DONE, [], 24, 3, NOW + 4 * HOUR),
    ("up-to-the-cap-exactly", DONE, [], 24, 22, NOW - HOUR + 24 * HOUR),
    ("past-the-cap", DONE, [], 24, 23, "at most 22 more hours"),
    ("at-the-cap", rec(end_date=NOW - HOUR + 24 * HOUR), [], 24, 1, "already lasts the maximum"),
    ("into-the-next-window", DONE, [Window(NODE, BOB, NOW + 3 * HOUR, NOW + 4 * HOUR)], 24, 5,
     "at most 2 more hours fit"),
    ("up-to-the-next-window", DONE, [Window(NODE, BOB, NOW + 3 * HOUR, NOW + 4 * HOUR)], 24, 2, NOW + 3 * HOUR),
]


@pytest.mark.parametrize("row, neighbours, cap, hours, outcome", [c[1:] for c in EXTEND_BY], ids=[c[0] for c in EXTEND_BY])
def test_on_extend_by_hours(row, neighbours, cap, hours, outcome):
    extend = dict(cap_seconds=cap * HOUR, turnaround=0, by_seconds=hours * HOUR)
    if isinstance(outcome, str):
        with pytest.raises(Conflict, match=outcome):
            lifecycle.on_extend(row, NOW, neighbours, **extend)
        return
    decision = lifecycle.on_extend(row, NOW, neighbours, **extend)
    check(row, decision, Transition.EXTEND, changes={"end_date": outcome}, phase=lifecycle.phase(row))


# -- configuring -----------------------------------------------------------------------------

CONFIGURE = [
    # id, row, properties set, required, status changes
    ("complete-becomes-ready-and-clears-the-error", rec(status="configuring", last_error="deploy refused: x"),
     {"environment"}, {"environment"}, {"status": "ready", "last_error": ""}),
    ("incomplete-stays-configuring", CONFIGURING, {"ssh_key"}, {"environment"}, {"status": "configuring"}),
    ("a-required-property-unset-back-to-configuring", DUE, set(), {"environment"}, {"status": "configuring"}),
    ("done-stays-ready-keeps-its-error", rec(**mirrored(DEPLOYED), last_error="reboot refused: y"),
     {"environment"}, {"environment"}, {"status": "ready"}),
    ("nothing-required-is-ready", CONFIGURING, set(), set(), {"status": "ready", "last_error": ""}),
    ("pending-keeps-its-status", INTENDED, set(), {"environment"}, {}),
    ("running-keeps-its-status", RUNNING, set(), {"environment"}, {}),
]


@pytest.mark.parametrize("row, have, required, changes", [c[1:] for c in CONFIGURE], ids=[c[0] for c in CONFIGURE])
def test_status_after_configure(row, have, required, changes):
    assert lifecycle.status_after_configure(row, have, required) == changes
    assert lifecycle.configured_status(required, have) == ("ready" if required <= have else "configuring")


# -- reserving -------------------------------------------------------------------------------

TAKEN = Window(NODE, BOB, 1000, 2000)
WINDOWS = [
    # id, new window, turnaround, conflicts with bob's [1000, 2000)
    ("overlapping", (1500, 2500), 0, True),
    ("inside", (1200, 1300), 0, True),
    ("adjacent-after-no-gap", (2000, 3000), 0, False),
    ("adjacent-before-no-gap", (0, 1000), 0, False),
    ("after-within-the-gap", (2299, 3000), 300, True),
    ("after-the-gap", (2300, 3000), 300, False),
    ("before-within-the-gap", (0, 701), 300, True),
    ("before-the-gap", (0, 700), 300, False),
]


@pytest.mark.parametrize("window, turnaround, conflicts", [c[1:] for c in WINDOWS], ids=[c[0] for c in WINDOWS])
def test_window_conflicts(window, turnaround, conflicts):
    assert lifecycle.window_conflicts([TAKEN], *window, turnaround) is conflicts


NODES = ["n0", "n1", "n2", "n3"]
BUSY = {"n1": [Window("n1", BOB, 1000, 2000)], "n2": [Window("n2", ALICE, 5000, 6000)]}
CHOOSE = [
    # id, candidates, count, all_or_nothing, chosen nodes or the Conflict's message
    ("named-all-free", ["n0", "n3"], 2, True, ["n0", "n3"]),
    ("named-one-taken", ["n0", "n1"], 2, True, "node n1 is already reserved during that time"),
    ("named-one-already-mine", ["n2", "n0"], 2, True, "you already have a reservation on node n2"),
    ("filtered-first-free-in-order", NODES, 2, False, ["n0", "n3"]),
    ("filtered-skips-taken-and-mine", NODES, 1, False, ["n0"]),
    ("filtered-too-few-free", NODES, 3, False, "only 2 of the 3 requested nodes are free during that time"),
    ("named-in-maintenance", ["n0", "n4"], 2, True, "node n4 is in maintenance: wipe lost"),
    ("filtered-skips-maintenance", ["n4", "n0"], 1, False, ["n0"]),
    ("filtered-maintenance-counted-apart", ["n4", "n0"], 2, False,
     r"only 1 of the 2 requested nodes are free during that time \(1 more are in maintenance or being removed\)"),
]
HELD = {"n4": "in maintenance: wipe lost"}


HEALTHY_FIRST = [
    # id, candidates, count, all_or_nothing, health scores, chosen nodes
    ("filtered-healthiest-first", ["n0", "n3", "n4"], 2, False, {"n0": 0.5, "n3": 0.9, "n4": 1.0}, ["n4", "n3"]),
    ("filtered-no-record-counts-as-healthy", ["n0", "n3"], 1, False, {"n0": 0.8}, ["n3"]),
    ("filtered-equal-scores-keep-their-order", ["n4", "n0", "n3"], 3, False, {}, ["n4", "n0", "n3"]),
    ("filtered-an-unhealthy-node-still-serves", NODES, 2, False, {"n0": 0.0}, ["n3", "n0"]),
    ("filtered-healthiest-free-one-not-a-busy-one", NODES, 1, False, {"n0": 0.5, "n3": 0.6, "n1": 1.0}, ["n3"]),
    ("named-nodes-ignore-health", ["n0", "n3"], 2, True, {"n0": 0.1}, ["n0", "n3"]),
]


@pytest.mark.parametrize(
    "candidates, count, all_or_nothing, health, outcome",
    [c[1:] for c in HEALTHY_FIRST],
    ids=[c[0] for c in HEALTHY_FIRST],
)
def test_choose_nodes_prefers_healthy_nodes(candidates, count, all_or_nothing, health, outcome):
    chosen = lifecycle.choose_nodes(
        candidates, BUSY, owner=ALICE, count=count, start=1500, end=2500, turnaround=0,
        all_or_nothing=all_or_nothing, health=health,
    )
    assert chosen == outcome


@pytest.mark.parametrize("candidates, count, all_or_nothing, outcome", [c[1:] for c in CHOOSE], ids=[c[0] for c in CHOOSE])
def test_choose_nodes(candidates, count, all_or_nothing, outcome):
    def choose():
        return lifecycle.choose_nodes(
            candidates, BUSY, owner=ALICE, count=count, start=1500, end=2500, turnaround=0,
            all_or_nothing=all_or_nothing, unavailable=HELD,
        )

    if isinstance(outcome, str):
        with pytest.raises(Conflict, match=outcome):
            choose()
    else:
        assert choose() == outcome


# -- how a reservation ends, and what it does to its node -------------------------------------

ENDED_BY_ALICE = dataclasses.replace(DESTROYING, end_reason="owner", ended_by=ALICE)
HISTORY = [
    # id, decide, how it ended, why, by, outcome, the maintenance reason ('' none)
    ("expired", lambda: lifecycle.on_time(DUE, NOW + HOUR), Ended.EXPIRED, EndReason.WINDOW, "", "", ""),
    ("cancelled-by-the-owner", lambda: lifecycle.on_user_action(WAITING, UserAction.DESTROY, NOW),
     Ended.CANCELLED, EndReason.OWNER, ALICE, "", ""),
    ("cancelled-by-an-admin", lambda: lifecycle.on_end(WAITING, NOW, reason=EndReason.ADMIN, by="root@x"),
     Ended.CANCELLED, EndReason.ADMIN, "root@x", "", ""),
    ("destroyed-at-the-end-of-its-window", lambda: lifecycle.on_report(DESTROYING, DESTROYED),
     Ended.DESTROYED, EndReason.WINDOW, "", "destroyed", ""),
    ("destroyed-after-the-owner-ended-it", lambda: lifecycle.on_report(ENDED_BY_ALICE, DESTROYED),
     Ended.DESTROYED, EndReason.OWNER, ALICE, "destroyed", ""),
    ("destroy-lost", lambda: lifecycle.on_report(ENDED_BY_ALICE, DESTROY_LOST),
     Ended.LOST, EndReason.OWNER, ALICE, "lost", lifecycle.LOST_DESTROY),
    ("destroy-lost-as-starting-it",
     lambda: lifecycle.after_start(DESTROY_IN_DOUBT, lifecycle.start_result(DESTROY_LOST)),
     Ended.LOST, EndReason.WINDOW, "", "lost", lifecycle.LOST_DESTROY),
    ("orphaned", lambda: lifecycle.on_time(DONE, NOW + HOUR, in_inventory=False),
     Ended.ORPHANED, EndReason.WINDOW, "", "deployed", lifecycle.ORPHANED_NODE),
    ("abandoned", lambda: lifecycle.after_start(DESTROY_IN_DOUBT, lifecycle.start_result(NotFound("no node rpi-000"))),
     Ended.ABANDONED, EndReason.WINDOW, "", "deployed", "the agent refused the destroy: no node rpi-000"),
]


@pytest.mark.parametrize("decide, ended, reason, by, outcome, maintenance", [c[1:] for c in HISTORY],
                         ids=[c[0] for c in HISTORY])
def test_every_delete_says_how_the_reservation_ended(decide, ended, reason, by, outcome, maintenance):
    decision = decide()
    assert decision.delete and decision.history == Ending(ended, reason, by, outcome)
    assert decision.maintenance == maintenance


def test_no_decision_deletes_without_a_history_and_only_lost_or_skipped_destroys_touch_the_node():
    """Over every table: a delete always carries its history; maintenance only where the node
    may hold the previous user's system (lost, orphaned, abandoned)."""
    decisions = [c[1]() for c in HISTORY] + [
        lifecycle.on_report(c[1], c[2], blocked=c[3]) for c in ON_REPORT
    ]
    for decision in filter(None, decisions):
        assert decision.delete == (decision.history is not None)
        dirty = decision.transition in (Transition.REMOVE_LOST, Transition.ORPHAN, Transition.ABANDON)
        assert bool(decision.maintenance) == dirty, decision.transition


FINISHED = [
    # id, decide, what it counts toward the node's lost-in-a-row (None: nothing)
    ("a-final-deploy-mirrored", lambda: lifecycle.on_report(RUNNING, DEPLOYED),
     Finished(DEPLOYED.fingerprint(), False)),
    ("progress-counts-nothing", lambda: lifecycle.on_report(RUNNING, COPYING_ON), None),
    ("a-deploy-lost", lambda: lifecycle.on_report(RUNNING, DEPLOY_LOST), Finished(DEPLOY_LOST.fingerprint(), True)),
    ("adopted-final", lambda: lifecycle.on_report(REDEPLOY_IN_DOUBT, DEPLOYED),
     Finished(DEPLOYED.fingerprint(), False)),
    ("accepted-final", lambda: lifecycle.after_start(REBOOT_IN_DOUBT, lifecycle.start_result(REBOOTED_AGAIN)),
     Finished(REBOOTED_AGAIN.fingerprint(), False)),
    ("destroyed", lambda: lifecycle.on_report(DESTROYING, DESTROYED), Finished(DESTROYED.fingerprint(), False)),
    ("destroy-lost", lambda: lifecycle.on_report(DESTROYING, DESTROY_LOST), Finished(DESTROY_LOST.fingerprint(), True)),
    ("issue-counts-nothing", lambda: lifecycle.on_report(REBOOT_INTENDED, DEPLOYED_BEFORE), None),
]


@pytest.mark.parametrize("decide, finished", [c[1:] for c in FINISHED], ids=[c[0] for c in FINISHED])
def test_a_final_action_counts_toward_the_nodes_lost_in_a_row(decide, finished):
    assert decide().finished == finished


COUNT = [
    # id, count before, lost, limit, count after, enters maintenance
    ("first-lost", 0, True, 3, 1, False),
    ("third-lost-in-a-row", 2, True, 3, 3, True),
    ("beyond-the-limit", 5, True, 3, 6, True),
    ("a-success-starts-again", 2, False, 3, 0, False),
    ("limit-zero-never", 99, True, 0, 100, False),
    ("limit-one-at-once", 0, True, 1, 1, True),
]


@pytest.mark.parametrize("before, lost, limit, after, enters", [c[1:] for c in COUNT], ids=[c[0] for c in COUNT])
def test_count_final(before, lost, limit, after, enters):
    count, reason = lifecycle.count_final(before, lost, limit=limit)
    assert count == after
    assert (reason == f"{after} actions in a row ended lost") if enters else reason == ""


ADMIN_END = [
    # id, row, transition, changes, phase after
    ("ends-a-deployed-node-with-destroy", DONE, Transition.END_EARLY,
     {"ending": True, "end_date": NOW, "end_reason": "admin", "ended_by": "root@x", "notice": "ended by root"}
     | intend("destroy"), Phase.INTENDED),
    ("cancels-one-not-started", WAITING, Transition.CANCEL, {}, GONE),
    ("already-ending-nothing", DESTROYING, None, None, None),
]


@pytest.mark.parametrize("row, transition, changes, phase", [c[1:] for c in ADMIN_END], ids=[c[0] for c in ADMIN_END])
def test_on_end_by_an_administrator(row, transition, changes, phase):
    decision = lifecycle.on_end(row, NOW, reason=EndReason.ADMIN, by="root@x", notice="ended by root")
    check(row, decision, transition, changes=changes, delete=phase is GONE and transition is not None, phase=phase)


MOVED = {"pending": "", "pending_issued": False, "baseline": "", "notice": "moved here"}
MOVE = [
    # id, row, transition, changes, phase after (of the row it decides on)
    ("waiting-moves-itself", WAITING, Transition.MOVE, MOVED | {"status": "ready"}, Phase.READY),
    ("configuring-stays-configuring", CONFIGURING, Transition.MOVE, MOVED | {"status": "configuring"},
     Phase.CONFIGURING),
    ("held-first-deploy-moves-and-starts-there", INTENDED, Transition.MOVE, MOVED | {"status": "ready"}, Phase.READY),
    ("deployed-is-destroyed-here", DONE, Transition.END_EARLY,
     {"ending": True, "end_date": NOW, "end_reason": "moved", "ended_by": "root@x", "notice": lifecycle.MOVED_AWAY}
     | intend("destroy"), Phase.INTENDED),
    ("first-deploy-in-doubt-is-destroyed-here", IN_DOUBT, Transition.END_EARLY,
     {"ending": True, "end_date": NOW, "end_reason": "moved", "ended_by": "root@x", "notice": lifecycle.MOVED_AWAY},
     Phase.IN_DOUBT),
]


@pytest.mark.parametrize("row, transition, changes, phase", [c[1:] for c in MOVE], ids=[c[0] for c in MOVE])
def test_on_move(row, transition, changes, phase):
    decision = lifecycle.on_move(row, NOW, by="root@x", notice="moved here")
    check(row, decision, transition, changes=changes, phase=phase)
    assert lifecycle.moved_status(row) == ("configuring" if row.status == "configuring" else "ready")


def test_a_reservation_that_ends_cannot_be_moved():
    for row, now in ((DESTROYING, NOW), (DONE, NOW + HOUR)):
        with pytest.raises(Conflict, match="is ending"):
            lifecycle.on_move(row, now, by="root@x", notice="")


def test_a_first_deploy_is_refused_on_a_node_in_maintenance_but_the_holder_may_deploy_again():
    with pytest.raises(Conflict, match="rpi-000 is in maintenance"):
        lifecycle.on_user_action(DUE, UserAction.DEPLOY, NOW, in_maintenance=True)
    assert lifecycle.on_user_action(DONE, UserAction.DEPLOY, NOW, in_maintenance=True).transition is Transition.REQUEST


# -- a whole life ----------------------------------------------------------------------------


def test_a_reservation_through_its_whole_life():
    """Reserve, configure, start, deploy, reboot, end: each decision applies to the row the
    previous one left, and the row goes at the end."""
    row = rec(status=lifecycle.configured_status({"environment"}, set()), start_date=NOW, end_date=NOW + HOUR)
    row = dataclasses.replace(row, **lifecycle.status_after_configure(row, {"environment"}, {"environment"}))
    steps = [
        lambda r: lifecycle.on_time(r, NOW),  # START
        lambda r: lifecycle.on_report(r, None),  # ISSUE
        lambda r: lifecycle.after_start(r, lifecycle.start_result(NETBOOT)),  # ACCEPTED
        lambda r: lifecycle.on_report(r, COPYING_ON),  # MIRROR
        lambda r: lifecycle.on_report(r, DEPLOYED),  # MIRROR, final
        lambda r: lifecycle.on_user_action(r, UserAction.REBOOT, NOW + 60),  # REQUEST
        lambda r: lifecycle.on_report(r, DEPLOYED),  # ISSUE, baseline: the deploy
        lambda r: lifecycle.after_start(r, lifecycle.start_result(AgentUnavailable("no answer"))) or
        lifecycle.on_report(r, REBOOTED),  # no answer, then the next report: ADOPT
        lambda r: lifecycle.on_time(r, NOW + HOUR),  # END
        lambda r: lifecycle.on_report(r, REBOOTED),  # ISSUE destroy
        lambda r: lifecycle.after_start(r, lifecycle.start_result(WIPING)),  # ACCEPTED
        lambda r: lifecycle.on_report(r, DESTROYED),  # REMOVE
    ]
    seen = []
    for step in steps:
        decision = step(row)
        seen.append(decision.transition)
        row = lifecycle.after(row, decision)
    assert row is None
    assert seen == [
        Transition.START, Transition.ISSUE, Transition.ACCEPTED, Transition.MIRROR, Transition.MIRROR,
        Transition.REQUEST, Transition.ISSUE, Transition.ADOPT, Transition.END, Transition.ISSUE,
        Transition.ACCEPTED, Transition.REMOVE,
    ]


def test_every_transition_is_in_a_table():
    expected = (
        {case[4] for case in ON_TIME + ON_REPORT + PRESTAGE}
        | {case[3] for case in AFTER_START + USER + CRASHES + ON_TIME_IN_MAINTENANCE}
        | {case[2] for case in ADMIN_END + MOVE}
        | {Transition.EXTEND for case in EXTEND if not isinstance(case[-1], str)}
    )
    assert set(Transition) - expected == set()


def test_a_decision_applied_to_a_row_is_what_dataclasses_replace_gives():
    """`after` copies the row by hand (faster than dataclasses.replace), which is right only while
    ScheduleRecord checks nothing on construction and the copy has every field."""
    assert not hasattr(ScheduleRecord, "__post_init__"), "after() would skip it: use dataclasses.replace"
    original = rec(action_state="netboot", progress=3)
    changes = {"action_state": "deployed", "progress": 100, "pending": ""}
    decision = lifecycle.Decision(
        lifecycle.Transition.ISSUE, original.node_name, original.owner, {"action_state": "netboot"}, changes
    )
    applied = lifecycle.after(original, decision)
    assert applied == dataclasses.replace(original, **changes)
    assert applied is not original and original.action_state == "netboot"
    assert vars(applied).keys() == vars(original).keys()
    with pytest.raises(TypeError, match="no field 'colour'"):
        lifecycle.after(original, dataclasses.replace(decision, changes={"colour": "red"}))
