"""`edgebed controller` refusing to start, each time with one line on stderr and exit code 2: a
damaged SQLite file, a listen address in use, a second controller on the same SQLite file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from edgebed.controller.settings import load_settings
from edgebed.controller.store import StoreInUse
from tests.conftest import free_port
from tests.controller.conftest import controller_for, make_settings
from tests.controller.test_cli import edgebed, one_line_error, write_config
from tests.processes import REPO, child_environment, edgebed_command

pytestmark = pytest.mark.slow


def damage_middle(path: Path) -> None:
    """Garbage over 4 KiB in the middle of the file, as a bad sector or a torn copy leaves it."""
    size = path.stat().st_size
    assert size > 16384, size
    with path.open("r+b") as file:
        file.seek(size // 2)
        file.write(os.urandom(4096))


def _start(config: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        edgebed_command("controller", "--config", str(config)),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO, env=child_environment(),
    )
    port = load_settings(config).listen.rpartition(":")[2]
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2):
                return process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise AssertionError(f"the controller did not start: {process.communicate()[1]}") from None
            time.sleep(0.1)


def _stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    assert process.returncode == 0, stderr
    return stderr


async def test_a_damaged_database_stops_the_controller_with_one_line_naming_the_file(tmp_path):
    config = write_config(tmp_path)
    database = tmp_path / "var" / "controller.sqlite"
    async with controller_for(load_settings(config)) as ctl:
        # Enough rows that the middle of the file holds table pages.
        for n in range(300):
            await ctl.accounts.create_user(f"user{n}@example.org", "a-long-password")
    damage_middle(database)
    line = one_line_error(edgebed("controller", "--config", str(config)))
    assert line.startswith(f"edgebed: database {database} is damaged (")
    assert line.endswith("restore it from a backup, or move it away to start with an empty one")

    # A file that is no database at all says so too.
    database.write_bytes(os.urandom(65536))
    line = one_line_error(edgebed("controller", "--config", str(config)))
    assert line.startswith(f"edgebed: database {database} is damaged (file is not a database)")


def test_a_listen_address_in_use_stops_the_controller_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, listen=f'"127.0.0.1:{port}"')
        line = one_line_error(edgebed("controller", "--config", str(config)))
    assert line == f"edgebed: {config}: key 'listen' '127.0.0.1:{port}': cannot listen there: address already in use"
    # Refused before anything else: the database was not even created.
    assert not (tmp_path / "var" / "controller.sqlite").exists()


def test_a_second_controller_on_the_same_sqlite_file_is_refused_until_the_first_stops(tmp_path):
    first_config = write_config(tmp_path)
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    # Another port and key file, the same database.
    second_config = write_config(second_dir, database=f'"{tmp_path / "var" / "controller.sqlite"}"')
    database = tmp_path / "var" / "controller.sqlite"
    first = _start(first_config)
    try:
        line = one_line_error(edgebed("controller", "--config", str(second_config)))
        assert line == (
            f"edgebed: database {database} is in use by another controller (which holds {database}.lock); "
            "one SQLite file serves one controller"
        )
        # The administrator's commands run beside it: they start no scheduler.
        assert edgebed("admin", "api-token", "nobody@example.org", "--config", str(second_config)).returncode == 2
        assert "no user" in edgebed("admin", "api-token", "nobody@example.org", "--config", str(second_config)).stderr
    finally:
        stderr = _stop(first)
    assert "Traceback" not in stderr
    # Once the first has stopped, the second starts.
    _stop(_start(second_config))


async def test_the_lock_is_taken_by_the_scheduler_only_and_released_on_close(tmp_path):
    settings = make_settings(tmp_path)
    async with controller_for(settings, run_scheduler=True):
        with pytest.raises(StoreInUse, match="in use by another controller"):
            async with controller_for(settings, run_scheduler=True):
                pass
        async with controller_for(settings, run_scheduler=False) as reader:
            assert await reader.store.schema_version() > 0
    async with controller_for(settings, run_scheduler=True):
        pass


async def test_postgresql_takes_no_file_lock(tmp_path, postgres_url):
    settings = make_settings(tmp_path, database=postgres_url)
    async with controller_for(settings, run_scheduler=True), controller_for(settings, run_scheduler=True):
        pass
    assert not list(tmp_path.glob("*.lock"))


def test_the_port_is_free_again_after_a_clean_stop(tmp_path):
    port = free_port()
    config = write_config(tmp_path, listen=f'"127.0.0.1:{port}"')
    _stop(_start(config))
    _stop(_start(config))
