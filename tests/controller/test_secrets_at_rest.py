"""What the controller keeps on disk: a private database file (with its -wal and -shm), and agent
tokens encrypted with a key derived from the secret key."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from edgebed.controller.errors import Conflict
from edgebed.controller.store import Store, open_database
from edgebed.controller.store.agents import UNREADABLE_TOKEN
from edgebed.controller.store.sealing import Sealer
from tests.controller.conftest import controller_for, make_settings
from tests.controller.test_cli import edgebed, write_config

SECRET = bytes(range(32))


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


async def test_the_controller_database_and_its_wal_and_shm_are_private(tmp_path, open_umask):
    database = tmp_path / "var" / "controller.sqlite"
    store = Store(str(database), secret_key=SECRET)
    await store.open()
    try:
        await store.users.create_user(
            "alice@example.org", "argon2-hash", ssh_key="", admin=False, authorized=True, now=0
        )
        # WAL mode: while the controller runs, its database is three files.
        files = [database, database.with_name("controller.sqlite-wal"), database.with_name("controller.sqlite-shm")]
        assert {p.name: oct(mode(p)) for p in files} == {p.name: "0o600" for p in files}
    finally:
        await store.close()


async def test_a_controller_database_left_readable_by_an_older_version_is_made_private(tmp_path, open_umask):
    database = tmp_path / "controller.sqlite"
    older = sqlite3.connect(database)
    older.execute("PRAGMA journal_mode=wal")
    older.execute("CREATE TABLE leftover (x)")
    older.commit()
    wal = tmp_path / "controller.sqlite-wal"
    assert (mode(database), mode(wal)) == (0o644, 0o644)
    store = Store(str(database), secret_key=SECRET)
    await store.open()
    try:
        assert (mode(database), mode(wal), mode(tmp_path / "controller.sqlite-shm")) == (0o600, 0o600, 0o600)
    finally:
        await store.close()
        older.close()


# -- agent tokens --------------------------------------------------------------------------------


def raw_agent_tokens(url: str) -> dict[str, str]:
    """The `agent` table's token column as stored, read without the controller's store."""
    db = open_database(url, max_connections=1)
    try:
        with db.connection_context():
            return dict(db.execute_sql('SELECT "name", "token" FROM "agent"').fetchall())
    finally:
        db.close_all()


async def test_agent_tokens_are_stored_sealed_and_still_sent(tmp_path, fake_agents, database_url):
    served = fake_agents("rpi", nodes=2)
    settings = make_settings(tmp_path, database=database_url)
    async with controller_for(settings) as ctl:
        admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
        info = await ctl.agents.add_agent(admin, "rpi", "raspberry", "127.0.0.1", served.port, served.fake.token)
        # The probe and the refresh carried the token: the agent answered them.
        assert (info.status, info.node_count) == ("connected", 2)
        assert (await ctl.store.agents.get_agent("rpi")).token == served.fake.token
    stored = raw_agent_tokens(database_url)["rpi"]
    assert stored.startswith("sealed:v1:") and served.fake.token not in stored
    if not database_url.startswith("postgresql://"):
        on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("controller.sqlite*"))
        assert served.fake.token.encode() not in on_disk
    # Sealed twice, one token gives two different values: equal tokens do not show as equal.
    sealer = Sealer(settings.secret_key())
    assert sealer.seal(served.fake.token) != sealer.seal(served.fake.token)


async def test_tokens_stored_in_clear_by_an_older_controller_are_sealed_at_the_next_start(tmp_path, database_url):
    store = Store(database_url, secret_key=SECRET)
    await store.open()
    await store.close()
    db = open_database(database_url, max_connections=1)
    with db.connection_context():
        db.execute_sql(
            'INSERT INTO "agent" ("name", "type", "ip", "port", "status", "token", "last_error") '
            "VALUES ('old', 'node', '10.0.0.2', 50051, 'connected', 'plain-old-token', '')"
        )
    db.close_all()
    store = Store(database_url, secret_key=SECRET)
    await store.open()
    try:
        record = await store.agents.get_agent("old")
        assert (record.token, record.status) == ("plain-old-token", "connected")
    finally:
        await store.close()
    stored = raw_agent_tokens(database_url)["old"]
    assert stored.startswith("sealed:v1:") and "plain-old-token" not in stored
    assert Sealer(SECRET).unseal(stored) == "plain-old-token"
    # Opening again changes nothing.
    store = Store(database_url, secret_key=SECRET)
    await store.open()
    await store.close()
    assert raw_agent_tokens(database_url)["old"] == stored


async def test_a_token_sealed_under_another_secret_key_is_reported_and_never_sent(tmp_path, fake_agents, caplog):
    served = fake_agents("rpi", nodes=1)
    settings = make_settings(tmp_path)
    async with controller_for(settings) as ctl:
        admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
        await ctl.agents.add_agent(admin, "rpi", "raspberry", "127.0.0.1", served.port, served.fake.token)
    # The key file is replaced (lost, or another controller's).
    (tmp_path / "secret.key").unlink()
    calls_before = sum(served.fake.calls.values())
    async with controller_for(settings) as ctl:
        admin = await ctl.accounts.get_user("admin@example.org")
        [info] = await ctl.agents.list_agents(admin)
        assert info.status == "disconnected" and info.last_error == UNREADABLE_TOKEN
        with pytest.raises(Conflict, match="cannot be decrypted with this controller's secret key"):
            await ctl.agents.reconnect(admin, "rpi")
    assert sum(served.fake.calls.values()) == calls_before
    assert any("rpi: its token cannot be decrypted" in r.getMessage() for r in caplog.records)


@pytest.mark.slow  # a child process
def test_the_admin_command_registers_an_agent_with_a_sealed_token(tmp_path, fake_agents):
    served = fake_agents("rpi", nodes=3)
    config = write_config(tmp_path)
    token_file = tmp_path / "agent.token"
    token_file.write_text(served.fake.token + "\n")
    result = edgebed("admin", "add-agent", "rpi", "--type", "raspberry", "--ip", "127.0.0.1", "--port",
                     str(served.port), "--token-file", str(token_file), "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "agent rpi added: connected (3 nodes)\n"
    stored = raw_agent_tokens(str(tmp_path / "var" / "controller.sqlite"))["rpi"]
    assert stored.startswith("sealed:v1:") and served.fake.token not in stored
