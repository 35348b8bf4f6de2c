"""Controllers sharing one database (controller/leases.py, store/leases.py): shares, takeovers,
fencing. The controllers here are AgentLeases over Stores of their own on one real database;
the processes' side (SIGKILL, SIGSTOP, real agents) is in test_multi_controller.py."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from edgebed.controller.domain import CONNECTED, AgentRecord
from edgebed.controller.leases import AgentLeases, owner_of
from edgebed.controller.store import LEADER, Fence, LeaseLost, ScheduleChange, Store
from edgebed.controller.store.leases import check_fence

AGENTS = [f"rack{i}" for i in range(8)]


class Clock:
    """A monotonic clock the test moves: local lease validity without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def stores(tmp_path, request) -> AsyncIterator[Callable[[], Awaitable[Store]]]:
    """make() -> a new open Store on one database (SQLite file or a fresh PostgreSQL one, as
    the test's parameter says); all closed at the end."""
    opened: list[Store] = []
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = str(tmp_path / "controller.sqlite")

    async def make() -> Store:
        store = Store(url, secret_key=b"k" * 32, workers=2)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


async def _add_agents(store: Store, names) -> None:
    for name in names:
        await store.agents.add_agent(
            AgentRecord(name=name, type="raspberry", ip="127.0.0.1", port=1, status=CONNECTED, token="t" * 16)
        )


def _probe(node: str = "nowhere-001") -> ScheduleChange:
    # A change of a row that does not exist: applied nowhere, but its fence is checked first.
    return ScheduleChange(node, "nobody@example.org", expect={}, changes={"last_error": "x"})


@pytest.mark.parametrize("stores", ["sqlite"], indirect=True)
async def test_one_controller_on_sqlite_drives_every_agent_and_the_work_of_none(stores):
    store = await stores()
    await _add_agents(store, AGENTS[:3])
    leases = AgentLeases(store, lease_seconds=15)
    owned = await leases.owned(AGENTS[:3])
    assert set(owned.fences) == {*AGENTS[:3], LEADER}
    assert {fence.token for fence in owned.fences.values()} == {1}
    # Its fenced writes go through; a fence it never held is refused, nothing written.
    assert await store.schedule.update_schedule([_probe()], fence=owned.fence("rack0")) == [False]
    with pytest.raises(LeaseLost):
        await store.schedule.update_schedule([_probe()], fence=Fence("rack0", leases.instance, 2))
    # An agent added later is taken at the next poll; a clean stop releases everything.
    await _add_agents(store, ["late"])
    assert (await leases.owned(["late"])).drives("late")
    await leases.stop()
    assert not any(lease.held for lease in await store.leases.leases())
    assert await store.leases.instances(15) == []


@pytest.mark.parametrize("stores", ["sqlite"], indirect=True)
async def test_an_exclusive_controllers_leases_outlast_a_late_heartbeat_and_a_shared_ones_do_not(stores):
    """The controller holding the SQLite file's lock (exclusive) is the only one that can drive
    the agents: a heartbeat held up past the lease (its own writes queued first) does not stop
    its StartActions. Without exclusivity the lease runs out on the local clock."""
    store = await stores()
    await _add_agents(store, AGENTS[:2])
    clock = Clock()
    exclusive = AgentLeases(store, lease_seconds=15, monotonic=clock, exclusive=True)
    shared = AgentLeases(await stores(), lease_seconds=15, monotonic=clock)
    await exclusive.tick()
    assert exclusive.valid_for("rack0", 6)
    clock.now += 60  # no heartbeat for four leases
    assert exclusive.valid_for("rack0", 6) and exclusive.valid_for("rack1", 6)
    await exclusive.stop()
    await shared.tick()
    assert shared.valid_for("rack0", 6)
    clock.now += 10
    assert not shared.valid_for("rack0", 6)
    await shared.stop()



@pytest.mark.parametrize("stores", ["sqlite"], indirect=True)
async def test_an_exclusive_controllers_writes_go_through_once_the_database_sees_its_lease_expired(stores):
    """The store checks a fence's expiry on the database's clock: an exclusive holder's write
    lands after that (holder and token still checked), a shared holder's is refused."""
    store = await stores()
    await _add_agents(store, ["rack0"])
    exclusive = AgentLeases(store, lease_seconds=1, exclusive=True)
    fence = (await exclusive.owned(["rack0"])).fence("rack0")
    await asyncio.sleep(1.3)  # past the lease on the database's clock, no renewal
    assert await store.schedule.update_schedule([_probe()], fence=fence) == [False]
    with pytest.raises(LeaseLost):
        await store.schedule.update_schedule(
            [_probe()], fence=Fence("rack0", exclusive.instance, fence.token + 1, exclusive=True))
    with pytest.raises(LeaseLost):
        await store.schedule.update_schedule([_probe()], fence=Fence("rack0", exclusive.instance, fence.token))
    await exclusive.stop()


def test_shares_move_only_from_a_controller_that_leaves():
    names = [f"agent{i}" for i in range(200)]
    three = {name: owner_of(name, ["a", "b", "c"]) for name in names}
    two = {name: owner_of(name, ["a", "b"]) for name in names}
    assert {name for name in names if three[name] != two[name]} == {name for name in names if three[name] == "c"}
    counts = {c: sum(1 for o in three.values() if o == c) for c in "abc"}
    assert all(40 <= n <= 100 for n in counts.values()), counts


@pytest.mark.slow
@pytest.mark.parametrize("stores", ["postgresql"], indirect=True)
async def test_controllers_share_the_agents_take_over_a_dead_ones_and_fence_its_writes(stores):
    lease = 1.0
    first, second = await stores(), await stores()
    await _add_agents(first, AGENTS)
    clock_a, clock_b = Clock(), Clock()
    a = AgentLeases(first, lease_seconds=lease, monotonic=clock_a, instance="ctl-a")
    b = AgentLeases(second, lease_seconds=lease, monotonic=clock_b, instance="ctl-b")

    # A alone drives everything.
    alone = await a.owned()
    assert set(alone.fences) == {*AGENTS, LEADER}

    # B joins: it gets nothing while A holds the leases; A hands B's share over at its next poll
    # (and not before), then B takes it at its next heartbeat.
    await b.tick()
    assert (await b.owned()).fences == {}
    clock_a.now += lease  # A's heartbeat is due: it sees B
    after_a = await a.owned()
    clock_b.now += lease
    after_b = await b.owned()
    share_b = {name for name in [*AGENTS, LEADER] if owner_of(name, ["ctl-a", "ctl-b"]) == "ctl-b"}
    assert share_b and set(after_b.fences) == share_b
    assert set(after_a.fences) == {*AGENTS, LEADER} - share_b
    # A handed over: its old fences on B's share are refused, B's go through.
    moved = sorted(share_b)[0]
    with pytest.raises(LeaseLost):
        await first.schedule.update_schedule([_probe()], fence=alone.fence(moved))
    assert await second.schedule.update_schedule([_probe()], fence=after_b.fence(moved)) == [False]
    assert after_b.fences[moved].token == alone.fences[moved].token + 1

    # A stops heartbeating (killed, or cut off from the database). Its leases stay its own
    # until they expire on the database's clock...
    kept = sorted(set(after_a.fences))[0]
    clock_b.now += lease
    assert not (await b.owned()).drives(kept)
    # ... and on A's own clock it stops driving them no later than that.
    clock_a.now += lease * 1.01
    assert a.valid_for(kept, 0) is False
    await asyncio.sleep(lease * 1.2)
    clock_b.now += lease
    everything = await b.owned()
    assert set(everything.fences) == {*AGENTS, LEADER}
    assert everything.fences[kept].token == after_a.fences[kept].token + 1
    # A's write with the fence it had: refused, even now that it reaches the database again.
    with pytest.raises(LeaseLost):
        await first.schedule.update_schedule([_probe()], fence=after_a.fence(kept))

    # A comes back: it is alive again, B hands its share back, and A writes under NEW tokens.
    clock_a.now += lease
    await a.tick()
    clock_b.now += lease
    await b.owned()
    clock_a.now += lease
    back = await a.owned()
    assert set(back.fences) == {*AGENTS, LEADER} - share_b
    assert back.fences[kept].token == everything.fences[kept].token + 1
    with pytest.raises(LeaseLost):
        await second.schedule.update_schedule([_probe()], fence=everything.fence(kept))

    # Shown alike by every controller: who drives what, since when.
    leases = {lease.agent: lease for lease in await second.leases.leases()}
    assert {name for name, lease in leases.items() if lease.holder == "ctl-a" and lease.held} == set(back.fences)
    assert all(0 <= leases[name].age < 5 for name in back.fences)
    assert {i.id for i in await first.leases.instances(lease) if i.alive} == {"ctl-a", "ctl-b"}


@pytest.mark.slow
@pytest.mark.parametrize("stores", ["postgresql"], indirect=True)
async def test_a_takeover_waits_for_the_old_holders_write_under_way_and_is_then_seen(stores):
    """The fence is read FOR SHARE in the write's own transaction: a takeover committed after
    the check waits for that write; one committed before makes the write change nothing."""
    first, second = await stores(), await stores()
    await _add_agents(first, ["rack0"])
    a = AgentLeases(first, lease_seconds=1.0, instance="ctl-a")
    fence = (await a.owned()).fence("rack0")
    assert fence is not None
    engine = first._engine

    def hold_fence_then_wait(started, release) -> float:
        with engine.db.connection_context(), engine.write():
            check_fence(engine, first.leases.m, fence)
            started.set()
            release.wait(10)
        return time.monotonic()

    started, release = threading.Event(), threading.Event()
    writer = asyncio.get_running_loop().run_in_executor(None, hold_fence_then_wait, started, release)
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
    await asyncio.sleep(1.2)  # A's lease has expired on the database's clock
    taker = asyncio.ensure_future(second.leases.acquire("ctl-b", ["rack0"], 1.0))
    await asyncio.sleep(0.5)
    assert not taker.done(), "the takeover must wait for the write under way"
    release.set()
    committed = await writer
    taken = await taker
    assert time.monotonic() >= committed and taken == {"rack0": fence.token + 1}
    with pytest.raises(LeaseLost):
        await first.schedule.update_schedule([_probe()], fence=fence)


@pytest.mark.parametrize("stores", ["sqlite"], indirect=True)
async def test_only_the_lease_holder_flags_an_agent_disconnected(stores):
    """A controller whose lease ran out while a call was under way (paused or starved past it)
    does not flag the agent: another controller drives it now, and a flag would stop that one's
    work on the agent until an administrator reconnects it. The holder still flags it."""
    from edgebed.controller.agent_client import CallOutcome
    from edgebed.controller.agents import AgentCallRecorder
    from edgebed.controller.domain import DISCONNECTED
    from edgebed.controller.metrics import Metrics

    store = await stores()
    await _add_agents(store, AGENTS[:2])
    clock = Clock()
    leases = AgentLeases(store, lease_seconds=6, monotonic=clock)
    recorder = AgentCallRecorder(store.agents, Metrics(store), drives=lambda name: leases.valid_for(name, 0))
    assert (await leases.owned(AGENTS[:2])).drives("rack0")

    async def timed_out(name: str) -> None:
        agent = await store.agents.get_agent(name)
        await recorder(CallOutcome(agent, "GetActionState", "DEADLINE_EXCEEDED", "", 3.5, 3.0))

    await timed_out("rack0")
    assert (await store.agents.get_agent("rack0")).status == DISCONNECTED
    clock.now += 7  # past the lease, on this controller's clock
    await timed_out("rack1")
    assert (await store.agents.get_agent("rack1")).status == CONNECTED
    await leases.stop()
