"""Actions through real agents: every process of every node type, hard reboots, lost, state_idx,
durability of each transition before the next step, restart."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import grpc
import pytest

from edgebed.agent.app import open_agent
from edgebed.agent.clock import FastClock
from edgebed.agent.dbworker import DbWorker, GroupCommitter
from edgebed.agent.domain import ActionRecord
from edgebed.agent.executor import SPAWN_SLICE, Executor, Timing
from edgebed.agent.store import SaveAction, Store
from edgebed.nodetypes import load_node_type
from edgebed.nodetypes.base import DEPLOYED, DONE, NodeRef, NodeType, Poll, State, Step, StepContext, process
from edgebed.nodetypes.interfaces import Driver
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from tests.agent.conftest import AUTH, make_settings

ENVIRONMENTS = {
    "raspberry": "raspios-lite-arm64",
    "node": "debian-12",
    "sensor": "riot-2024.10-gnrc-networking",
}
FAST_TIMING = Timing(poll_seconds=0.005, retry_seconds=0.005, watchdog_seconds=0.005)


class _Power:
    """A power interface that counts hard reboots (the executor's only use of a driver)."""

    def __init__(self) -> None:
        self.reboots = 0

    async def set_power(self, node, on):
        pass

    async def is_powered(self, node):
        return True

    async def hard_reboot(self, node):
        self.reboots += 1


class _ExecutorOnStore:
    """An executor writing through a real group committer into a SQLite store, as the agent
    runs it, for tests of the executor alone (its own node types, drivers and clocks)."""

    def __init__(self, path, node_type, driver=None, *, clock=None, wrap_write=None, **executor_options) -> None:
        driver = driver or Driver(power=_Power())
        self.path = str(path)
        self.store = Store(self.path)
        self.worker = DbWorker("test")
        # As the agent makes it: commits on the loop's thread, checkpoints on the worker's.
        self.committer = GroupCommitter(
            self.worker, self.store.apply, open_writer=self.store.loop_writer, checkpoint=self.store.checkpoint
        )
        write = self.committer.write if wrap_write is None else wrap_write(self.committer.write)
        self.executor = Executor(node_type, driver, write, clock=clock, timing=FAST_TIMING, **executor_options)

    async def __aenter__(self) -> _ExecutorOnStore:
        await self.worker.call(self.store.open)
        self.committer.start()
        self.executor.start_watchdog()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.executor.stop()
        await self.committer.close()
        await self.worker.call(self.store.close)
        self.worker.shutdown()

    async def run_one(self, first_state: str, node: NodeRef | None = None) -> None:
        """Starts a deploy on `node` (default n1) in `first_state` and waits until nothing runs."""
        await self.executor.start(_record(first_state), node or NodeRef("n1", {}))
        await asyncio.wait_for(self.executor.wait_idle(), 10)

    async def action(self, name: str = "n1"):
        return await self.worker.call(self.store.get_action, name)


def _record(first_state: str) -> ActionRecord:
    return ActionRecord(
        node_name="n1", node_ip="", environment="", process="deploy", state=first_state,
        state_idx=0, updated_at=int(time.time()), action_id=1,
    )


async def _start_all(stub, names, process, environment="", **properties):
    for name in names:
        await stub.StartAction(
            pb.StartActionRequest(
                node_name=name, process=process, environment=environment, properties=properties
            ),
            metadata=AUTH,
            timeout=5,
        )


async def _states(stub) -> dict[str, pb.ActionState]:
    reply = await stub.GetActionState(pb.GetActionStateRequest(), metadata=AUTH, timeout=5)
    return {action.node_name: action for action in reply.actions}


def _entered_states(transitions, node_name) -> list[tuple[int, str]]:
    """The (state_idx, state) entered by the node's last action, in order."""
    mine = [t for t in transitions if t.node_name == node_name]
    last = mine[-1].action_id
    return [(t.state_idx, t.state) for t in mine if t.action_id == last and t.event == "enter"]


@pytest.mark.parametrize("node_type", ["raspberry", "node", "sensor"])
async def test_deploy_reboot_destroy_reach_their_final_states(tmp_path, node_type) -> None:
    settings = make_settings(tmp_path, node_type, sim_nodes=4)
    expected = load_node_type(node_type).processes
    async with open_agent(settings) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            names = [n.name for n in (await stub.GetNodes(pb.GetNodesRequest(), metadata=AUTH, timeout=5)).nodes]
            for proc, final in (("deploy", "deployed"), ("reboot", "rebooted"), ("destroy", "destroyed")):
                await _start_all(stub, names, proc, ENVIRONMENTS[node_type])
                await asyncio.wait_for(agent.executor.wait_idle(), 20)
                states = await _states(stub)
                assert {s.state for s in states.values()} == {final}
                assert all(s.final and s.process == proc for s in states.values())
                assert all(s.state_idx == len(expected[proc].states) - 1 for s in states.values())
                transitions = await agent.db(agent.store.transitions)
                for name in names:
                    # Every state of the process, in order, none skipped (a state may repeat).
                    assert _entered_states(transitions, name) == list(
                        enumerate(expected[proc].state_names)
                    )
            # The simulated hardware followed: destroyed nodes have blank disks.
            machines = await agent.db(agent.store.sim_machines)
            assert machines and all(m["disk_image"] == "" for m in machines.values())


@pytest.mark.parametrize(
    ("node_type", "node", "environment", "size"),
    [("raspberry", "rpi-001", "ubuntu-24.04-arm64", "16G"), ("node", "srv-001", "ubuntu-24.04", "50G")],
)
async def test_deploy_configures_the_simulated_storage(tmp_path, node_type, node, environment, size) -> None:
    """The same partition and configure steps, under raspberry's partition, configure_system and
    configure_user and node's partition and configure."""
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIh7Wd3pOX7sK0m7v6kq5r3cQ1bGxY0d0m4a2o8mYfJq me@lab"
    async with open_agent(make_settings(tmp_path, node_type, sim_nodes=1)) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            await _start_all(
                stub, [node], "deploy", environment,
                ssh_key=key, os_password="correct horse", partition_size=size, hostname="exp-1",
            )
            await asyncio.wait_for(agent.executor.wait_idle(), 20)
        machine = next(iter((await agent.db(agent.store.sim_machines)).values()))
        action = await agent.db(agent.store.get_action, node)
    assert action.state == "deployed"
    assert machine["disk_image"] == environment and machine["powered"]
    assert machine["disk_settings"] == {
        "partition_size": size, "hostname": "exp-1", "password_set": "yes",
        "user": "ubuntu", "ssh_keys": "1",
    }
    assert not machine["network_boot"]
    # The password is not kept once the action is over.
    assert "os_password" not in action.properties and action.properties["ssh_key"] == key


@pytest.mark.slow  # seconds of simulated work
async def test_progress_is_reported_during_the_copy(tmp_path) -> None:
    # time_scale 0.01: the 2.7 GB copy at 20 MB/s lasts about 1.35 s.
    async with open_agent(make_settings(tmp_path, sim_nodes=1, sim_time_scale=0.01)) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            await _start_all(stub, ["rpi-001"], "deploy", "raspios-lite-arm64")
            seen = set()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                action = (await _states(stub))["rpi-001"]
                if action.state == "copy_image":
                    seen.add(action.progress)
                if action.final:
                    break
                await asyncio.sleep(0.05)
    assert action.state == "deployed"
    assert any(0 < p < 100 for p in seen), seen


@pytest.mark.slow  # seconds of simulated work
async def test_hung_steps_are_hard_rebooted_and_still_deployed(tmp_path) -> None:
    # A fast clock makes the 120-300 s before_reboot timeouts last a few tenths of a second.
    settings = make_settings(tmp_path, sim_nodes=16, sim_failure_rate=0.25, sim_seed=11)
    async with open_agent(settings, clock=FastClock(600), timing=FAST_TIMING) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            names = [f"rpi-{i:03d}" for i in range(1, 17)]
            await _start_all(stub, names, "deploy", "raspios-lite-arm64")
            await asyncio.wait_for(agent.executor.wait_idle(), 40)
            states = await _states(stub)
            transitions = await agent.db(agent.store.transitions)
    assert all(s.final for s in states.values())
    assert [n for n, s in states.items() if s.state != "deployed"] == []
    rebooted = [n for n, s in states.items() if s.reboots > 0]
    assert rebooted, "with failure_rate 0.25 some deployment should have needed a hard reboot"
    for name in rebooted:
        # Power cycles: the ladder's hard reboots and power cuts (its retries cycle nothing).
        cycles = [t for t in transitions if t.node_name == name and t.event in ("reboot", "power_cut")]
        assert len(cycles) == states[name].reboots
    # The first stall of a state is retried without a power cycle (the ladder's first rung).
    assert any(t.event == "retry" for t in transitions)
    expected = load_node_type("raspberry").processes["deploy"].state_names
    for name in names:
        assert _entered_states(transitions, name) == list(enumerate(expected))


async def test_a_step_that_never_completes_ends_lost(tmp_path) -> None:
    clock = FastClock(2000)
    settings = make_settings(tmp_path, sim_nodes=2, sim_failure_rate=1.0)
    async with open_agent(settings, clock=clock, timing=FAST_TIMING) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            began = clock.monotonic()
            await _start_all(stub, ["rpi-001"], "deploy", "raspios-lite-arm64")
            await asyncio.wait_for(agent.executor.wait_idle(), 20)
            ended = clock.monotonic()
            action = (await _states(stub))["rpi-001"]
            transitions = await agent.db(agent.store.transitions, "rpi-001")
            # The next action starts without the last one's error.
            again = await stub.StartAction(pb.StartActionRequest(node_name="rpi-001", process="destroy"),
                                           metadata=AUTH, timeout=5)
    assert (again.action.process, again.action.last_error) == ("destroy", "")
    # Why it was lost, through GetActionState.
    assert action.last_error.startswith("lost: state wait_netboot_ssh timed out after 1200 s"), action.last_error
    spec = load_node_type("raspberry").processes["deploy"].states[3]
    assert spec.name == "wait_netboot_ssh" and spec.lost == 1200
    # Every boot hangs: the state is rebooted every before_reboot seconds, then given up.
    assert action.state == "lost" and action.final and action.state_idx == 3
    # Several hard reboots came first (how many depends on the machine's load).
    assert action.reboots >= 3
    assert ended - began >= spec.lost
    assert [t.event for t in transitions][-1] == "lost"


# A node type written for the test: "a" appears twice; each step records what it saw.


def _recording_type(calls: list, check_committed) -> NodeType:
    async def exec_(ctx):
        calls.append(("exec", ctx.node.name))
        await check_committed(ctx.node.name)

    async def post(ctx):
        calls.append(("post", ctx.node.name))
        return DONE

    async def slow_post(ctx):
        calls.append(("slow", ctx.node.name))
        return Poll(done=len([c for c in calls if c[0] == "slow"]) >= 3, progress=50)

    a = State("a", Step(exec=exec_, post=post))
    b = State("b", Step(exec=exec_))
    c = State("c", Step(post=slow_post))
    return NodeType(
        name="raspberry",
        states=(a, b, c),
        processes={"deploy": process("deploy", a, b, a, c, DEPLOYED)},
        properties=(),
        default_environments=(),
    )


async def test_a_state_twice_in_a_process_and_each_transition_durable_before_the_next_step(tmp_path) -> None:
    database = tmp_path / "custom.sqlite"
    reader = Store(str(database))
    seen_states: list[tuple[str, int]] = []

    async def check_committed(node_name):
        # Another connection sees the state this step belongs to: it was committed first.
        record = await asyncio.to_thread(reader.get_action, node_name)
        seen_states.append((record.state, record.state_idx))

    calls: list = []
    async with _ExecutorOnStore(database, _recording_type(calls, check_committed)) as harness:
        await harness.run_one("a", NodeRef("n1", {"ip": "10.0.0.1"}))
        final = await harness.action()
        transitions = await harness.worker.call(harness.store.transitions, "n1")
    assert [c[0] for c in calls] == ["exec", "post", "exec", "exec", "post", "slow", "slow", "slow"]
    assert seen_states == [("a", 0), ("b", 1), ("a", 2)]
    assert [(t.state_idx, t.state) for t in transitions] == [
        (0, "a"), (1, "b"), (2, "a"), (3, "c"), (4, "deployed")
    ]
    assert final.state == "deployed" and final.state_idx == 4


@pytest.mark.slow  # seconds of simulated work
async def test_a_restarted_agent_resumes_unfinished_actions(tmp_path) -> None:
    settings = make_settings(tmp_path, sim_nodes=5, sim_time_scale=0.01)
    async with open_agent(settings) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            await _start_all(stub, [f"rpi-{i:03d}" for i in range(1, 6)], "deploy", "raspios-lite-arm64")
            await asyncio.sleep(0.6)
        unfinished_before = await agent.db(agent.store.unfinished_actions)
    assert unfinished_before, "the agent should have stopped mid-way"
    async with open_agent(settings) as agent:
        await asyncio.wait_for(agent.executor.wait_idle(), 20)
        actions = await agent.db(agent.store.list_actions)
        transitions = await agent.db(agent.store.transitions)
    assert {a.state for a in actions} == {"deployed"}
    expected = load_node_type("raspberry").processes["deploy"].state_names
    for action in actions:
        assert _entered_states(transitions, action.node_name) == list(enumerate(expected))


async def test_progress_after_a_hard_reboot_counts_from_zero(tmp_path) -> None:
    """A copy that stalled at 90 % and starts again after the reboot is making progress at 10 %:
    it must not be rebooted again for not passing 90 % within before_reboot."""
    clock = FastClock(1000)
    attempts: list[float] = []

    class Power(_Power):
        async def hard_reboot(self, node):
            await super().hard_reboot(node)
            attempts.append(time.monotonic())

    async def copy_post(ctx):
        if not attempts:
            return Poll(done=False, progress=90)
        # 10 % per 0.02 s of real time: 20 s on the clock, a fifth of before_reboot, so a busy
        # machine's pauses do not pass for a stall; passing 90 % takes twice before_reboot.
        percent = int((time.monotonic() - attempts[-1]) / 0.02) * 10
        return Poll(done=percent >= 100, progress=min(percent, 100))

    copy = State("copy", Step(post=copy_post), before_reboot=100)
    node_type = NodeType(
        name="raspberry", states=(copy,), processes={"deploy": process("deploy", copy, DEPLOYED)},
        properties=(), default_environments=(),
    )
    power = Power()
    async with _ExecutorOnStore(tmp_path / "copy.sqlite", node_type, Driver(power=power), clock=clock) as harness:
        await harness.run_one("copy")
        final = await harness.action()
    assert final.state == "deployed" and final.reboots == 1 and power.reboots == 1


async def test_a_start_whose_caller_is_cancelled_mid_commit_still_runs(tmp_path) -> None:
    """A controller killed during StartAction cancels the agent's handler; the commit may still
    land, and an action committed but not driven would block the node until a restart."""
    calls: list = []
    node_type = _recording_type(calls, lambda name: asyncio.sleep(0))
    write_started = asyncio.Event()

    def slow(write):
        async def slow_write(changes):
            write_started.set()
            await asyncio.sleep(0.2)
            await write(changes)

        return slow_write

    async with _ExecutorOnStore(tmp_path / "cancel.sqlite", node_type, wrap_write=slow) as harness:
        caller = asyncio.create_task(harness.executor.start(_record("a"), NodeRef("n1", {})))
        await write_started.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(0.3)
        await asyncio.wait_for(harness.executor.wait_idle(), 10)
        final = await harness.action()
    assert final.state == "deployed"


async def test_the_started_line_is_logged_once_when_the_commit_lands_whoever_awaits_it(tmp_path, caplog) -> None:
    """The caller is cancelled while the commit is in flight: the commit lands, the action runs,
    and the log says it started, once."""
    calls: list = []
    node_type = _recording_type(calls, lambda name: asyncio.sleep(0))
    write_started = asyncio.Event()

    def slow(write):
        async def slow_write(changes):
            write_started.set()
            await asyncio.sleep(0.1)
            await write(changes)

        return slow_write

    caplog.set_level("INFO", logger="edgebed.agent.executor")
    async with _ExecutorOnStore(tmp_path / "log.sqlite", node_type, wrap_write=slow) as harness:
        caller = asyncio.create_task(harness.executor.start(_record("a"), NodeRef("n1", {})))
        await write_started.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(0.2)
        await asyncio.wait_for(harness.executor.wait_idle(), 10)
        # A second action, whose caller waits: logged once too, not twice.
        await harness.executor.start(replace(_record("a"), action_id=2), NodeRef("n1", {}))
        await asyncio.wait_for(harness.executor.wait_idle(), 10)
    started = [r.getMessage() for r in caplog.records if "started in state" in r.getMessage()]
    assert started == ["n1: deploy started in state a", "n1: deploy started in state a"]


def test_action_properties_stay_out_of_reprs() -> None:
    # Records and step contexts reach logs and tracebacks; os_password must not.
    record = ActionRecord(
        node_name="rpi-001", node_ip="10.0.0.1", environment="e", process="deploy",
        state="s", state_idx=0, updated_at=0, properties={"os_password": "correct horse"},
    )
    ctx = StepContext(
        node=NodeRef("rpi-001", {}), process="deploy", environment=None,
        properties=record.properties, driver=Driver(power=_Power()),
    )
    for shown in (repr(record), repr(SaveAction(record)), repr(ctx)):
        assert "rpi-001" in shown and "correct horse" not in shown


async def test_a_start_committed_after_stop_is_left_for_the_next_start() -> None:
    """SIGTERM during StartAction: the commit lands after the executor stopped. The action is
    resumed from the store on the next start; this executor must not drive it any more."""
    calls: list = []
    node_type = _recording_type(calls, lambda name: asyncio.sleep(0))
    release = asyncio.Event()
    committed: list = []

    async def held_write(changes):
        await release.wait()
        committed.append(changes)

    executor = Executor(node_type, driver=Driver(power=_Power()), write=held_write, timing=FAST_TIMING)
    executor.start_watchdog()
    record = ActionRecord(
        node_name="n1", node_ip="", environment="", process="deploy", state="a", state_idx=0,
        updated_at=int(time.time()), action_id=1,
    )
    caller = asyncio.create_task(executor.start(record, NodeRef("n1", {})))
    await asyncio.sleep(0.05)
    await executor.stop()
    release.set()
    await caller
    await asyncio.sleep(0.1)
    assert len(committed) == 1 and calls == []
    assert not executor.is_running("n1")


async def test_a_stalled_event_loop_does_not_count_against_the_timeouts(tmp_path) -> None:
    """With sim timeouts compressed to a fraction of a second, a loop too busy to run any step
    (a thousand StartActions at once) must not declare nodes lost."""
    stall_ended: list[float] = []

    async def post(ctx):
        if not stall_ended:
            time.sleep(0.5)  # blocks the whole event loop, as a burst of work would
            stall_ended.append(time.monotonic())
            return Poll(done=False)
        return Poll(done=time.monotonic() >= stall_ended[0] + 0.1)

    wait = State("wait", Step(post=post), lost=30)
    node_type = NodeType(
        name="raspberry", states=(wait,), processes={"deploy": process("deploy", wait, DEPLOYED)},
        properties=(), default_environments=(),
    )
    # 100x: the 30 s timeout lasts 0.3 real seconds, shorter than the 0.5 s stall.
    async with _ExecutorOnStore(tmp_path / "stall.sqlite", node_type, clock=FastClock(100)) as harness:
        await harness.run_one("wait")
        final = await harness.action()
    assert final.state == "deployed"


async def test_actions_started_together_begin_a_slice_per_turn_of_the_event_loop(tmp_path) -> None:
    """StartActions of a thousand nodes: spawned all in one turn, their first steps would run
    in that turn and end together, each then waiting for all the others' commits. They begin
    SPAWN_SLICE at a time, one slice per turn, so the first slice's steps run before the last
    slice is spawned."""
    turns = 0

    def tick() -> None:
        nonlocal turns
        turns += 1
        loop.call_soon(tick)

    loop = asyncio.get_running_loop()
    started_in_turn: dict[str, int] = {}

    async def first(ctx):
        started_in_turn[ctx.node.name] = turns

    state = State("first", Step(exec=first))
    node_type = NodeType(
        name="raspberry", states=(state,), processes={"deploy": process("deploy", state, DEPLOYED)},
        properties=(), default_environments=(),
    )
    count = SPAWN_SLICE * 2 + 50
    async with _ExecutorOnStore(tmp_path / "slices.sqlite", node_type) as harness:
        records = [replace(_record("first"), node_name=f"n{i:03d}") for i in range(count)]
        loop.call_soon(tick)
        await harness.executor.start_many([(r, NodeRef(r.node_name, {})) for r in records])
        await asyncio.wait_for(harness.executor.wait_idle(), 10)
        assert len(started_in_turn) == count
        by_turn = sorted(set(started_in_turn.values()))
        assert len(by_turn) == 3, by_turn
        first_slice = [started_in_turn[f"n{i:03d}"] for i in range(SPAWN_SLICE)]
        assert set(first_slice) == {by_turn[0]}
        actions = await harness.worker.call(harness.store.list_actions)
        assert {a.state for a in actions} == {"deployed"}
