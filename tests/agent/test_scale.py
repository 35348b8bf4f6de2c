"""Issue #12, the agent at scale: StartActions (the batch RPC), reads that never wait for the
writer, the executemany commit path, and no node lost because the agent itself was busy."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import grpc
import pytest
import pytest_asyncio

from edgebed.agent import store as agent_store
from edgebed.agent.app import open_agent
from edgebed.agent.clock import FastClock
from edgebed.agent.domain import ActionRecord, Environment, TransitionRecord
from edgebed.agent.executor import agent_wait
from edgebed.agent.store import LogTransition, SaveAction, SaveMachine, Store, UpdateState
from edgebed.nodetypes.base import DEPLOYED, NodeType, Poll, State, Step, process
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from tests.agent.conftest import AUTH, make_settings
from tests.agent.test_actions import _ExecutorOnStore

ENV = "raspios-lite-arm64"
# The tests sharing the module's agent run on the module's event loop.
SHARED = pytest.mark.asyncio(loop_scope="module")
OK = grpc.StatusCode.OK.value[0]
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
BUSY = grpc.StatusCode.FAILED_PRECONDITION.value[0]


def _item(node: str, process: str = "deploy", environment: str = ENV, **properties) -> pb.StartActionRequest:
    return pb.StartActionRequest(
        node_name=node, process=process, environment=environment, properties=properties
    )


async def _states(stub) -> dict[str, pb.ActionState]:
    reply = await stub.GetActionState(pb.GetActionStateRequest(), metadata=AUTH, timeout=5)
    return {action.node_name: action for action in reply.actions}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def slow_agent(tmp_path_factory):
    """An agent whose deploys last minutes (time_scale 1): what it starts stays unfinished."""
    tmp_path = tmp_path_factory.mktemp("scale")
    async with open_agent(make_settings(tmp_path, sim_nodes=8, sim_time_scale=1.0)) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            yield agent, agent_pb2_grpc.AgentStub(channel)


@SHARED
async def test_start_actions_checks_and_starts_each_item_on_its_own(slow_agent) -> None:
    agent, stub = slow_agent
    reply = await stub.StartActions(pb.StartActionsRequest(actions=[
        _item("rpi-001"),
        _item("rpi-999"),
        _item("rpi-002", process="format"),
        _item("rpi-003", environment="no-such-image"),
        _item("rpi-004", process="reboot", environment=""),
        _item("bad name"),
        _item("rpi-005", os_password="x" * 5000),
        _item("rpi-006", environment=""),
    ]), metadata=AUTH, timeout=10)
    results = list(reply.results)
    # One result per item, in the request's order, each with StartAction's code and message.
    assert [r.node_name for r in results] == [
        "rpi-001", "rpi-999", "rpi-002", "rpi-003", "rpi-004", "bad name", "rpi-005", "rpi-006",
    ]
    assert [r.code for r in results] == [OK, NOT_FOUND, INVALID, INVALID, OK, INVALID, INVALID, INVALID]
    assert "no node named 'rpi-999'" in results[1].message
    assert "unknown process 'format'" in results[2].message
    assert "unknown environment 'no-such-image'" in results[3].message and ENV in results[3].message
    assert "environment is empty" in results[7].message
    assert "x" * 100 not in results[6].message
    # The accepted ones are committed in their first state and run; the refused ones are not.
    assert results[0].action.state == "netboot_on" and results[0].action.state_idx == 0
    assert results[0].action.environment == ENV and results[0].message == ""
    assert results[4].action.process == "reboot" and results[4].action.state == "poe_off"
    assert not results[1].HasField("action")
    states = await _states(stub)
    assert {"rpi-001", "rpi-004"} <= set(states)
    assert not {"rpi-002", "rpi-003", "rpi-005", "rpi-006"} & set(states)
    assert agent.executor.is_running("rpi-001") and agent.executor.is_running("rpi-004")

    # A busy node is refused on its own (FAILED_PRECONDITION); the others of the call start.
    again = await stub.StartActions(pb.StartActionsRequest(actions=[
        _item("rpi-007"), _item("rpi-001"), _item("rpi-004", process="destroy", environment=""),
    ]), metadata=AUTH, timeout=10)
    assert [(r.node_name, r.code) for r in again.results] == [
        ("rpi-007", OK), ("rpi-001", BUSY), ("rpi-004", BUSY),
    ]
    assert "busy" in again.results[1].message
    # The single-node call sees the same: it stays for grpcurl users.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartAction(_item("rpi-007"), metadata=AUTH, timeout=5)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@SHARED
@pytest.mark.parametrize(
    ("actions", "message"),
    [
        ([_item("rpi-008"), _item("rpi-002"), _item("rpi-008", process="reboot")], "'rpi-008' is named twice"),
        ([_item(f"rpi-{i:04d}") for i in range(1001)], "1001 actions in one call, more than 1000"),
    ],
)
async def test_start_actions_refuses_a_malformed_call_whole(slow_agent, actions, message) -> None:
    agent, stub = slow_agent
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartActions(pb.StartActionsRequest(actions=actions), metadata=AUTH, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()
    # Nothing of it started.
    assert not agent.executor.is_running("rpi-008") and not agent.executor.is_running("rpi-002")
    assert "rpi-008" not in await _states(stub)


@SHARED
async def test_start_actions_with_no_item_answers_no_result(slow_agent) -> None:
    _, stub = slow_agent
    reply = await stub.StartActions(pb.StartActionsRequest(), metadata=AUTH, timeout=5)
    assert list(reply.results) == []


@SHARED
async def test_reads_are_answered_while_the_writer_holds_a_transaction(slow_agent) -> None:
    """GetActionState, GetNodes and ListEnvironments read on their own connection: a group commit
    in progress (here held open until they have answered) never makes them wait. Were they
    queued behind the writer, they would wait for it forever, and the deadline would fail them."""
    agent, stub = slow_agent
    before = await _states(stub)
    inside = threading.Event()
    release = threading.Event()

    def long_commit() -> None:
        with agent.store.database.atomic("IMMEDIATE"):
            agent.store.set_meta("bench.hold", "1")
            inside.set()
            release.wait(30)

    holding = asyncio.ensure_future(agent.db(long_commit))
    try:
        await asyncio.get_running_loop().run_in_executor(None, inside.wait, 10)
        states = await _states(stub)
        nodes = await stub.GetNodes(pb.GetNodesRequest(), metadata=AUTH, timeout=5)
        environments = await stub.ListEnvironments(pb.ListEnvironmentsRequest(), metadata=AUTH, timeout=5)
        # Answered, from what is committed, while the writer still holds its transaction.
        assert not holding.done()
        assert states.keys() == before.keys()
        assert len(nodes.nodes) == 8 and environments.environments
    finally:
        release.set()
        await holding


# The executemany commit path.


def _record(name: str, state: str, idx: int, **changes) -> ActionRecord:
    base = ActionRecord(
        node_name=name, node_ip="10.0.0.1", environment=ENV, process="deploy", state=state,
        state_idx=idx, updated_at=1_700_000_000, action_id=42, started_at=1_700_000_000,
        properties={"os_password": "s3cret", "ssh_key": "ssh-ed25519 AAAA"},
        environment_spec=Environment(
            name=ENV, description="d", image="/img", size_bytes=7, default_user="pi",
            properties={"k": "v"},
        ),
    )
    return replace(base, **changes)


def _entry(record: ActionRecord, event: str = "enter") -> TransitionRecord:
    return TransitionRecord(
        record.node_name, record.action_id, record.process, record.state, record.state_idx, event, 1.5
    )


@pytest.fixture(
    params=["sqlite", "loop-writer", "sqlite-3.31", pytest.param("postgresql", marks=pytest.mark.slow)]
)
def committing_store(request: pytest.FixtureRequest, tmp_path, monkeypatch) -> Iterator[tuple[Store, Callable]]:
    """(an open Store, the commit under test): Store.apply on a SQLite file, the LoopWriter of
    that file (what the executor's commits use there), Store.apply as on a SQLite older than
    3.33 (no UPDATE ... FROM, 999 parameters a statement), or Store.apply on PostgreSQL."""
    if request.param == "sqlite-3.31":
        monkeypatch.setattr(agent_store, "SQLITE_VERSION", (3, 31, 1))
    spec = request.getfixturevalue("postgres_url") if request.param == "postgresql" else str(tmp_path / "a.sqlite")
    store = Store(spec)
    store.open()
    if request.param == "sqlite-3.31":
        assert "FROM" not in next(store._sql.update_state.statements([("s", 1, 2, 3, 4, 5.0, "n")]))[0]
    writer = store.loop_writer() if request.param == "loop-writer" else None
    assert (writer is None) == (request.param != "loop-writer"), "a writer on a SQLite file only"
    try:
        yield store, (store.apply if writer is None else writer.apply)
    finally:
        if writer is not None:
            writer.close()
        store.close()


def test_commits_write_every_column_and_the_last_record_of_each_action_wins(committing_store) -> None:
    store, apply = committing_store
    a0 = _record("a", "netboot_on", 0)
    b0 = _record("b", "netboot_on", 0, properties={})
    apply([SaveAction(a0), LogTransition(_entry(a0)), SaveAction(b0), LogTransition(_entry(b0))])
    assert store.list_actions() == [a0, b0]

    # Within an action only the state columns are written; the rest stays as saved.
    a1 = _record("a", "poe_off", 1, updated_at=1_700_000_005, progress=30, reboots=2, elapsed=1.25)
    apply([UpdateState(a1), LogTransition(_entry(a1)), SaveMachine("hw-a", {"powered": True})])
    assert store.get_action("a") == a1

    # In one group: the last record of a node wins, whole when any change of it was whole;
    # an update never undoes the whole save before it.
    a2 = replace(a1, state="deployed", state_idx=12, properties={"ssh_key": "ssh-ed25519 AAAA"},
                 last_error="write_image: checksum mismatch")
    b1 = replace(b0, state="poe_off", state_idx=1, reboots=1)
    b2 = replace(b1, state="poe_on", state_idx=2, elapsed=3.5)
    c0 = _record("c", "netboot_on", 0, action_id=43)
    c1 = replace(c0, state="poe_off", state_idx=1)
    apply([
        UpdateState(b1), SaveAction(a2), LogTransition(_entry(a2)), UpdateState(b2),
        SaveAction(c0), UpdateState(c1), LogTransition(_entry(c1, "retry")),
        SaveMachine("hw-a", {"powered": False}), SaveMachine("hw-b", {"disk_image": "x"}),
    ])
    assert store.list_actions() == [a2, b2, c1]
    assert "os_password" not in store.get_action("a").properties
    assert [(t.node_name, t.state, t.event) for t in store.transitions()] == [
        ("a", "netboot_on", "enter"), ("b", "netboot_on", "enter"), ("a", "poe_off", "enter"),
        ("a", "deployed", "enter"), ("c", "poe_off", "retry"),
    ]
    assert store.transitions("a")[1] == _entry(a1)
    assert store.sim_machines() == {"hw-a": {"powered": False}, "hw-b": {"disk_image": "x"}}
    with pytest.raises(TypeError, match="not a store change"):
        apply(["nonsense"])  # type: ignore[list-item]


# Fairness: no node lost because the agent itself was busy.


async def test_a_step_waiting_for_the_agent_does_not_count_against_its_timeouts(tmp_path) -> None:
    """A step's save that waits behind the agent's own commits (agent_wait) pauses the state's
    timers, as a stalled event loop does: here the wait lasts longer than the state's `lost`."""
    waits: list[str] = []

    async def exec_(ctx):
        with agent_wait():
            await asyncio.sleep(0.4)  # a commit queued behind thousands of others
        waits.append(ctx.node.name)

    async def post(ctx):
        return Poll(done=True)

    slow = State("slow", Step(exec=exec_, post=post), before_reboot=10, lost=20)
    node_type = NodeType(
        name="raspberry", states=(slow,), processes={"deploy": process("deploy", slow, DEPLOYED)},
        properties=(), default_environments=(),
    )
    # 100x: the 20 s timeout lasts 0.2 real seconds, half the wait.
    async with _ExecutorOnStore(tmp_path / "wait.sqlite", node_type, clock=FastClock(100)) as harness:
        await harness.run_one("slow")
        final = await harness.action()
    assert waits == ["n1"]
    assert final.state == "deployed"


@pytest.mark.slow  # a few seconds of CPU: 400 nodes deploying
async def test_a_burst_of_nodes_at_time_scale_0_all_deploy(tmp_path) -> None:
    """400 raspberry nodes started at once, half through StartActions and half one StartAction
    each, at time_scale 0 (timeouts 100x shorter: about a second): every one ends deployed, with
    every state of deploy entered once, none lost."""
    nodes = 400
    async with open_agent(make_settings(tmp_path, sim_nodes=nodes)) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            names = [f"rpi-{i:03d}" for i in range(1, nodes + 1)]
            batch = stub.StartActions(
                pb.StartActionsRequest(actions=[_item(n) for n in names[::2]]), metadata=AUTH, timeout=30
            )
            singles = [stub.StartAction(_item(n), metadata=AUTH, timeout=30) for n in names[1::2]]
            reply, *_ = await asyncio.gather(batch, *singles)
            assert all(r.code == OK for r in reply.results)
            await asyncio.wait_for(agent.executor.wait_idle(), 120)
            states = await _states(stub)
        transitions = await agent.db(agent.store.transitions)
    assert {name: a.state for name, a in states.items() if a.state != "deployed"} == {}
    assert not [t for t in transitions if t.event == "lost"]
    deploy = agent.service.node_type.processes["deploy"].state_names
    entered = [t for t in transitions if t.event == "enter"]
    assert len(entered) == nodes * len(deploy)
