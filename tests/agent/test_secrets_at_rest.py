"""What the agent keeps on disk and in its logs: a private database (with its -wal and -shm), and
Peewee's DEBUG query log without the values the queries carry (os_password)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat

import grpc
import pytest

from edgebed.agent.app import open_agent
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from tests.agent.conftest import AUTH, make_settings

PASSWORD = "correct horse battery staple"


@pytest.fixture
def open_umask():
    """The usual umask (022), under which SQLite alone makes its files 0644."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_the_agent_database_and_its_wal_and_shm_are_private(tmp_path, open_umask) -> None:
    settings = make_settings(tmp_path, sim_nodes=2)
    database = tmp_path / "raspberry.sqlite"
    async with open_agent(settings) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            await stub.StartAction(
                pb.StartActionRequest(
                    node_name="rpi-001", process="deploy", environment="raspios-lite-arm64",
                    properties={"os_password": PASSWORD},
                ),
                metadata=AUTH, timeout=5,
            )
            await asyncio.wait_for(agent.executor.wait_idle(), 20)
        # WAL mode: while the agent runs, its database is three files.
        files = [database, tmp_path / "raspberry.sqlite-wal", tmp_path / "raspberry.sqlite-shm"]
        assert {path.name: oct(mode(path)) for path in files} == {path.name: "0o600" for path in files}


async def test_an_agent_database_left_readable_by_an_older_version_is_made_private(tmp_path, open_umask) -> None:
    database = tmp_path / "raspberry.sqlite"
    # An older agent's files, open in WAL mode: the database and its companions are 0644.
    older = sqlite3.connect(database)
    older.execute("PRAGMA journal_mode=wal")
    older.execute("CREATE TABLE leftover (x)")
    older.commit()
    wal = tmp_path / "raspberry.sqlite-wal"
    assert (mode(database), mode(wal)) == (0o644, 0o644)
    older.close()
    database.chmod(0o644)
    async with open_agent(make_settings(tmp_path, sim_nodes=1)):
        assert mode(database) == 0o600
        assert mode(wal) == 0o600 and mode(tmp_path / "raspberry.sqlite-shm") == 0o600


async def test_peewee_debug_log_of_an_agent_hides_query_parameters(tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="peewee")
    async with open_agent(make_settings(tmp_path, sim_nodes=1)) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            await stub.StartAction(
                pb.StartActionRequest(
                    node_name="rpi-001", process="deploy", environment="raspios-lite-arm64",
                    properties={"os_password": PASSWORD},
                ),
                metadata=AUTH, timeout=5,
            )
            await asyncio.wait_for(agent.executor.wait_idle(), 20)
    queries = [r.getMessage() for r in caplog.records if r.name == "peewee"]
    # The queries are logged (the action row with its properties was written), their values not.
    assert any('INSERT INTO "action"' in q or 'INTO "action"' in q for q in queries), queries[:5]
    assert all("<parameters hidden>" in q for q in queries)
    assert PASSWORD not in caplog.text
