"""Node health: each finished action's outcome recorded once per node (bounded), health read
from it, preferred by reservations by filter, exported at /metrics; and prestage: a reservation's
first deploy started ahead of its start_date, from the recorded deploy durations, without ever
running into another user's reservation."""

from __future__ import annotations

import asyncio

import pytest

from edgebed.controller import health, lifecycle
from edgebed.controller.domain import ActionState, NodeOutcome
from edgebed.controller.errors import Conflict, Forbidden
from tests.controller.conftest import controller_for, make_settings

HOUR = 3600
ALICE, BOB = "alice@example.org", "bob@example.org"


async def setup(ctl, served):
    ctl.admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
    info = await ctl.agents.add_agent(ctl.admin, "rpi", "raspberry", "127.0.0.1", served.port, served.fake.token)
    assert info.status == "connected"
    ctl.alice = await ctl.accounts.create_user(ALICE, "user-password", authorized=True)
    ctl.bob = await ctl.accounts.create_user(BOB, "user-password", authorized=True)


async def reserve_ready(ctl, user, nodes, start, hours=1.0):
    assert await ctl.reservations.reserve(user, nodes=nodes, start_date=start, duration_hours=hours) == nodes
    for node in nodes:
        await ctl.reservations.configure(user, node, properties={"environment": "raspios-lite"})


async def states(ctl, user):
    return {r.node_name: (r.status, r.action_state) for r in await ctl.reservations.list_reservations(user)}


async def poll_until(ctl, user, wanted, *, polls=30):
    for _ in range(polls):
        await ctl.scheduler.poll()
        if await states(ctl, user) == wanted:
            return
    raise AssertionError(f"never reached {wanted}: {await states(ctl, user)}")


def outcome(node, action_id, final_state="deployed", *, reboots=0, duration=100.0, process="deploy",
            environment="raspios-lite", type="raspberry") -> NodeOutcome:
    return NodeOutcome(
        node_name=node, type=type, process=process, environment=environment, final_state=final_state,
        action_id=action_id, duration_seconds=duration, reboots=reboots, finished_at=1_800_000_000 + action_id,
    )


# -- recording ---------------------------------------------------------------------------------


async def test_each_finished_action_is_recorded_once_with_its_outcome(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=3)
    served.fake.outcomes = {"rpi-000": (False, 0, 12.5), "rpi-001": (True, 3, 42.0)}
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        await setup(ctl, served)
        await reserve_ready(ctl, ctl.alice, ["rpi-000", "rpi-001"], int(clock()))
        finished = []
        for _ in range(12):
            finished += (await ctl.scheduler.poll()).finished
        assert await states(ctl, ctl.alice) == {"rpi-000": ("ready", "deployed"), "rpi-001": ("ready", "lost")}
        # Seen final in several polls, recorded once.
        assert sorted(finished) == ["rpi-000:deployed", "rpi-001:lost"]
        [deployed] = await ctl.store.health.outcomes("rpi-000")
        [lost] = await ctl.store.health.outcomes("rpi-001")
        assert (deployed.type, deployed.process, deployed.environment, deployed.final_state) == (
            "raspberry", "deploy", "raspios-lite", "deployed")
        assert (deployed.duration_seconds, deployed.reboots, deployed.succeeded) == (12.5, 0, True)
        assert (lost.final_state, lost.duration_seconds, lost.reboots, lost.succeeded) == ("lost", 42.0, 3, False)

        # The user's reboot of the deployed node is one more outcome.
        await ctl.reservations.act(ctl.alice, "rpi-000", "reboot")
        await poll_until(ctl, ctl.alice, {"rpi-000": ("ready", "rebooted"), "rpi-001": ("ready", "lost")})
        assert [o.final_state for o in await ctl.store.health.outcomes("rpi-000")] == ["rebooted", "deployed"]

        shown = {
            node: (h.actions, h.success_rate, h.reboots_per_action)
            for node, h in (await ctl.health.node_health(ctl.admin)).items()
        }
        assert shown == {"rpi-000": (2, 1.0, 0.0), "rpi-001": (1, 0.0, 3.0)}
        with pytest.raises(Forbidden):
            await ctl.health.node_health(ctl.alice)
        with pytest.raises(Forbidden):
            await ctl.health.outcomes(ctl.alice, "rpi-000")


async def test_a_node_keeps_only_its_last_outcomes_and_a_second_record_adds_nothing(tmp_path, clock):
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        record = ctl.store.health.record_outcomes
        first = await record([outcome("n1", i) for i in range(1, 26)] + [outcome("n2", 1)], recorded_at=1, keep=20)
        assert len(first) == 26
        assert [o.action_id for o in await ctl.store.health.outcomes("n1")] == list(range(25, 5, -1))
        assert await record([outcome("n1", 25), outcome("n2", 1), outcome("n2", 1)], recorded_at=2, keep=20) == []
        assert len(await ctl.store.health.outcomes("n2")) == 1
        with pytest.raises(ValueError, match="keep"):
            await record([outcome("n1", 30)], recorded_at=3, keep=0)


def action(**fields) -> ActionState:
    values = dict(node_name="rpi-000", node_ip="10.1.0.1", environment="raspios-lite", process="deploy",
                  state="deployed", state_idx=6, updated_at=1_800_000_000, progress=0, state_count=7,
                  final=True, reboots=1, action_id=9, duration_seconds=30.0)
    values.update(fields)
    return ActionState(**values)


@pytest.mark.parametrize(
    "report, expected",
    [
        (action(), ("deployed", 30.0, 1, "raspios-lite")),
        (action(final=False, state="copy_image"), None),
        (action(final=True, state="copy_image"), None),  # "final" but not a final state
        (action(action_id=0), None),  # an agent that cannot tell actions apart
        (action(duration_seconds=float("nan")), ("deployed", 0.0, 1, "raspios-lite")),
        (action(duration_seconds=-5.0), ("deployed", 0.0, 1, "raspios-lite")),
        (action(reboots=-2), ("deployed", 30.0, 0, "raspios-lite")),
        (action(environment="e" * 300), ("deployed", 30.0, 1, "e" * 64)),
    ],
    ids=["deployed", "not-final", "final-flag-on-a-non-final-state", "no-action-id", "nan-duration",
         "negative-duration", "negative-reboots", "long-environment"],
)
def test_what_an_agent_reports_is_bounded_where_it_enters(report, expected):
    got = health.outcome_of(report, "raspberry")
    if expected is None:
        assert got is None
    else:
        assert (got.final_state, got.duration_seconds, got.reboots, got.environment) == expected


# -- health ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "durations, node_type, expected",
    [([10.0, 30.0, 20.0], "raspberry", 20.0), ([10.0, 20.0], "node", 15.0), ([], "raspberry", 600.0),
     ([], "node", 1200.0), ([], "sensor", 300.0), ([], "a-new-type", 900.0)],
)
def test_the_expected_deploy_duration_is_the_median_or_the_types_default(durations, node_type, expected):
    assert health.expected_deploy_seconds(durations, node_type) == expected


def test_the_lead_adds_the_margin_and_the_horizon_covers_every_kind():
    assert health.prestage_lead([100.2], "raspberry", 60) == 161
    assert health.longest_lead({("raspberry", "big"): [5000.0]}, 60) == 5060
    assert health.longest_lead({("raspberry", "small"): [10.0]}, 0) == 1200  # the node default


async def test_reservations_by_filter_get_the_healthiest_nodes(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=4)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        await setup(ctl, served)
        await ctl.store.health.record_outcomes(
            [outcome("rpi-000", 1, "lost"), outcome("rpi-000", 2, "lost"),
             outcome("rpi-001", 3, reboots=2), outcome("rpi-003", 4)],
            recorded_at=1, keep=20,
        )
        start = int(clock()) + HOUR
        reserve = ctl.reservations.reserve
        # rpi-002 (no record) and rpi-003 (clean) score 1.0, rpi-001 1/3, rpi-000 0.
        assert await reserve(ctl.alice, filter={"model": "pi4"}, count=2, start_date=start, duration_hours=1) == [
            "rpi-002", "rpi-003"]
        # The healthy ones are Alice's by then: Bob gets the others, the healthier first.
        assert await reserve(ctl.bob, filter={}, count=1, start_date=start, duration_hours=1) == ["rpi-001"]
        # Named nodes are what the user named, healthy or not.
        assert await reserve(ctl.bob, nodes=["rpi-000"], start_date=start + 2 * HOUR, duration_hours=1) == ["rpi-000"]


async def test_metrics_export_each_nodes_health(tmp_path, clock):
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        await ctl.store.health.record_outcomes(
            [outcome("rpi-000", 1), outcome("rpi-000", 2, "lost", reboots=3), outcome('odd"node', 3)],
            recorded_at=1, keep=20,
        )
        text = await ctl.metrics.render()
    assert "# TYPE edgebed_node_success_ratio gauge" in text
    assert 'edgebed_node_actions_recorded{node="rpi-000"} 2' in text
    assert 'edgebed_node_success_ratio{node="rpi-000"} 0.5' in text
    assert 'edgebed_node_reboots_per_action{node="rpi-000"} 1.5' in text
    assert 'edgebed_node_health_score{node="rpi-000"} 0.2' in text
    assert 'edgebed_node_success_ratio{node="odd\\"node"} 1' in text


# -- prestage ----------------------------------------------------------------------------------


async def test_with_prestage_the_node_is_deployed_at_start_date(tmp_path, clock, fake_agents):
    """Recorded deploys of 300 s and a 60 s margin: the deploy starts 360 s before start_date,
    is over by then, and nothing starts again at start_date. From the early start, the node is
    the reservation's: nobody can reserve the time before start_date any more."""
    served = fake_agents("rpi", nodes=2)
    settings = make_settings(tmp_path, prestage=True, prestage_margin_seconds=60, turnaround_seconds=0)
    async with controller_for(settings, clock) as ctl:
        await setup(ctl, served)
        await ctl.store.health.record_outcomes([outcome("rpi-001", 1, duration=300.0)], recorded_at=1, keep=20)
        start = int(clock()) + HOUR
        await reserve_ready(ctl, ctl.alice, ["rpi-000"], start)
        await ctl.scheduler.poll()
        clock.advance(HOUR - 361)
        assert (await ctl.scheduler.poll()).started == []
        clock.advance(1)
        assert (await ctl.scheduler.poll()).started == ["rpi-000:deploy"]
        await poll_until(ctl, ctl.alice, {"rpi-000": ("ready", "deployed")})
        assert clock() < start
        with pytest.raises(Conflict, match="already reserved"):
            await ctl.reservations.reserve(ctl.bob, nodes=["rpi-000"], start_date=int(clock()), duration_hours=0.05)
        clock.advance(start - clock())
        for _ in range(3):
            assert (await ctl.scheduler.poll()).started == []
        assert served.fake.started == [("rpi-000", "deploy")]
        assert await states(ctl, ctl.alice) == {"rpi-000": ("ready", "deployed")}
        clock.advance(HOUR)
        assert (await ctl.scheduler.poll()).started == ["rpi-000:destroy"]


async def test_prestage_off_deploys_at_start_date(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=1)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        await setup(ctl, served)
        start = int(clock()) + HOUR
        await reserve_ready(ctl, ctl.alice, ["rpi-000"], start)
        clock.advance(HOUR - 1)
        assert (await ctl.scheduler.poll()).started == []
        clock.advance(1)
        assert (await ctl.scheduler.poll()).started == ["rpi-000:deploy"]


async def test_prestage_waits_for_the_previous_reservation_and_its_destroy(tmp_path, clock, fake_agents):
    """Bob's window ends 200 s before Alice's starts; her deploy needs 360 s. It starts when
    Bob's window (and turnaround) is over, and is sent only once his destroy has ended."""
    served = fake_agents("rpi", nodes=1)
    settings = make_settings(tmp_path, prestage=True, prestage_margin_seconds=60, turnaround_seconds=0)
    async with controller_for(settings, clock) as ctl:
        await setup(ctl, served)
        await ctl.store.health.record_outcomes([outcome("rpi-000", 1, duration=300.0)], recorded_at=1, keep=20)
        now = int(clock())
        await reserve_ready(ctl, ctl.bob, ["rpi-000"], now, hours=0.5)
        alice_start = now + 1800 + 200
        await reserve_ready(ctl, ctl.alice, ["rpi-000"], alice_start)
        await poll_until(ctl, ctl.bob, {"rpi-000": ("ready", "deployed")})
        clock.advance(alice_start - 360 - clock())
        await ctl.scheduler.poll()
        assert await states(ctl, ctl.alice) == {"rpi-000": ("ready", "")}, "Bob still holds the node"
        clock.advance(160)  # Bob's end_date
        report = await ctl.scheduler.poll()
        assert report.started == ["rpi-000:destroy"]
        assert await states(ctl, ctl.alice) == {"rpi-000": ("in_progress", "")}  # intended, not sent
        await poll_until(ctl, ctl.alice, {"rpi-000": ("ready", "deployed")})
        assert clock() < alice_start
        assert served.fake.started == [("rpi-000", "deploy"), ("rpi-000", "destroy"), ("rpi-000", "deploy")]


@pytest.mark.slow
async def test_a_prestage_write_loses_to_a_window_reserved_since_it_was_decided(
    tmp_path, clock, fake_agents, database_url
):
    """The rows the decision was made on may be stale by the time it is written: another
    user's reservation of the time before start_date made in between wins, on SQLite and on
    PostgreSQL."""
    served = fake_agents("rpi", nodes=1)
    settings = make_settings(tmp_path, database=database_url, prestage=True, turnaround_seconds=300)
    async with controller_for(settings, clock) as ctl:
        await setup(ctl, served)
        now = int(clock())
        start = now + HOUR
        await reserve_ready(ctl, ctl.alice, ["rpi-000"], start)
        [row] = await ctl.store.schedule.list_schedule(owner=ALICE)
        decision = lifecycle.on_time(row, start - 600, prestage=lifecycle.Prestage(900, (), 300))
        assert decision is not None and decision.transition is lifecycle.Transition.PRESTAGE
        # Meanwhile Bob reserves 10 minutes that end within the turnaround of Alice's start.
        await ctl.reservations.reserve(ctl.bob, nodes=["rpi-000"], start_date=start - 1500, duration_hours=0.2)
        assert await ctl.store.schedule.update_schedule([decision]) == [False]
        [unchanged] = await ctl.store.schedule.list_schedule(owner=ALICE)
        assert unchanged == row
        # Once Bob's reservation is gone, the same decision applies.
        await ctl.reservations.act(ctl.bob, "rpi-000", "destroy")
        assert await ctl.store.schedule.update_schedule([decision]) == [True]


async def test_concurrent_polls_record_each_outcome_once(tmp_path, clock, fake_agents):
    served = fake_agents("rpi", nodes=3)
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        await setup(ctl, served)
        outcomes = [outcome(f"rpi-00{i}", 7) for i in range(3)]
        results = await asyncio.gather(
            *(ctl.store.health.record_outcomes(outcomes, recorded_at=1, keep=20) for _ in range(5))
        )
        assert sum(len(r) for r in results) == 3
