"""A real agent process on damaged, taken or full resources: a damaged database and a port in use
stop it with one line and exit code 2; a full disk answers RESOURCE_EXHAUSTED, is logged once a
minute, loses nothing, and the work goes on when there is space again."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from edgebed.agent.store import Store
from edgebed.nodetypes import load_node_type
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from tests.agent.conftest import AUTH, TOKEN
from tests.processes import REPO, AgentProcess, child_environment, edgebed_command

pytestmark = pytest.mark.slow

DEPLOY = load_node_type("raspberry").processes["deploy"].state_names
ENVIRONMENT = "raspios-lite-arm64"


def _agent(directory: Path, **keys: Any) -> AgentProcess:
    """The agent "rack" (raspberry, sim) with its config, log and stdout in `directory`."""
    return AgentProcess(directory, "rack", token=TOKEN, **keys)


def _run(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        edgebed_command("agent", "--config", str(config)), cwd=REPO, env=child_environment(),
        capture_output=True, text=True, timeout=60,
    )


def _one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_damaged_database_stops_the_agent_with_one_line_naming_the_file(tmp_path) -> None:
    agent = _agent(tmp_path, nodes=300).start()
    assert agent.terminate() == 0
    database, config = agent.database, agent.config_path
    size = database.stat().st_size
    assert size > 16384
    with database.open("r+b") as file:
        file.seek(size // 2)
        file.write(os.urandom(4096))
    line = _one_line(_run(config))
    assert line.startswith(f"edgebed: database {database} is damaged (")
    assert line.endswith("restore it from a backup, or move it away to start with an empty one")


def test_a_port_in_use_stops_the_agent_with_one_line(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _agent(tmp_path, listen=f"127.0.0.1:{port}").config_path
        line = _one_line(_run(config))
    # One line: not gRPC core's own "Failed to add port" line before ours.
    assert line == f"edgebed: {config}: key 'listen' '127.0.0.1:{port}': cannot listen there: address already in use"


def _checkpoint(database: Path) -> None:
    """Empties the WAL into the database file and truncates it, so that the agent's next write
    needs new blocks: on a full disk, the very next one fails."""
    connection = sqlite3.connect(database, timeout=10)
    try:
        while connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] != 0:
            time.sleep(0.01)
    finally:
        connection.close()


async def _state(stub, node: str) -> pb.ActionState:
    reply = await stub.GetActionState(pb.GetActionStateRequest(node_names=[node]), metadata=AUTH, timeout=6)
    return reply.actions[0]


async def _until_final(stub, node: str, timeout: float = 60) -> pb.ActionState:
    deadline = time.monotonic() + timeout
    while not (action := await _state(stub, node)).final:
        assert time.monotonic() < deadline, action
        await asyncio.sleep(0.1)
    return action


def _big_environment(name: str) -> pb.Environment:
    # About 240 KB: more than any space left in the WAL.
    properties = {f"p{n:02d}": "x" * 4000 for n in range(60)}
    return pb.Environment(name=name, image="/srv/images/big.img", size_bytes=1, properties=properties)


async def test_a_full_disk_answers_resource_exhausted_logs_once_and_loses_nothing(tmp_path, small_disk) -> None:
    # Only the database is on the small disk: the agent's log must still be written.
    database = small_disk.path / "agent.sqlite"
    # time_scale 0.02: a deploy lasts about four seconds, long enough to fill the disk in the middle.
    agent = _agent(tmp_path, nodes=4, time_scale=0.02, database=str(database)).start()
    try:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            request = pb.StartActionRequest(node_name="rack-001", process="deploy", environment=ENVIRONMENT)
            await stub.StartAction(request, metadata=AUTH, timeout=6)
            while (await _state(stub, "rack-001")).state_idx < 1:
                await asyncio.sleep(0.05)

            _checkpoint(database)
            small_disk.fill()
            full = f"the disk holding {database} is full: nothing was saved; free some space there and try again"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.PutEnvironment(
                    pb.PutEnvironmentRequest(environment=_big_environment("big")), metadata=AUTH, timeout=6
                )
            assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, full)
            second = pb.StartActionRequest(node_name="rack-002", process="deploy", environment=ENVIRONMENT)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.StartAction(second, metadata=AUTH, timeout=6)
            assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, full)

            # Reads still work; the deploy under way waits at its next commit, however long.
            stalled = await _state(stub, "rack-001")
            await asyncio.sleep(3)
            for _ in range(20):
                assert (await _state(stub, "rack-001")).state_idx in (stalled.state_idx, stalled.state_idx + 1)
                none = await stub.GetActionState(pb.GetActionStateRequest(node_names=["rack-002"]), metadata=AUTH)
                assert list(none.actions) == []  # the refused StartAction left nothing behind
                await asyncio.sleep(0.05)
            logged = agent.log()
            assert logged.count("is full") == 1, logged  # once a minute, whatever failed
            assert "Traceback" not in logged and "cannot rollback" not in logged

            small_disk.free()
            assert (await _until_final(stub, "rack-001")).state == "deployed"
            await stub.PutEnvironment(
                pb.PutEnvironmentRequest(environment=_big_environment("big")), metadata=AUTH, timeout=6
            )
            await stub.StartAction(second, metadata=AUTH, timeout=6)
            assert (await _until_final(stub, "rack-002")).state == "deployed"
        assert agent.terminate() == 0
    finally:
        agent.stop()

    logged = agent.log()
    assert "commits succeed again: the disk has space" in logged
    assert "Traceback" not in logged
    store = Store(str(database))
    try:
        transitions = store.transitions()
        environment = store.get_environment("big")
    finally:
        store.close()
    # Every state of each deploy entered once, in order: the one that waited for space neither
    # skipped nor repeated a state.
    for node in ("rack-001", "rack-002"):
        entered = [(t.state_idx, t.state) for t in transitions if t.node_name == node and t.event == "enter"]
        assert entered == list(enumerate(DEPLOY)), (node, entered)
    assert environment is not None and len(environment.properties) == 60
