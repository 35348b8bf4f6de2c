"""The controller's configuration: the example file, environment overrides, the secret key."""

from __future__ import annotations

import os

import pytest

from edgebed.config import ConfigError
from edgebed.controller.settings import Settings, load_settings
from edgebed.controller.store import Store, StoreUnavailable
from tests.processes import REPO


def test_the_example_file_loads_with_the_documented_defaults():
    settings = load_settings(REPO / "scripts" / "controller.example.toml", env={})
    assert settings == Settings(
        listen="127.0.0.1:8080",
        database="var/controller.sqlite",
        secret_key_file="var/secret.key",
    )
    assert settings.base_url == "http://127.0.0.1:8080"


def test_environment_variables_override_keys_and_bad_values_name_the_key(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('listen = "0.0.0.0:80"\ndatabase = "x.sqlite"\nsecret_key_file = "k"\n[scheduler]\npoll_seconds = 1\n')
    settings = load_settings(config, env={"EDGEBED_SCHEDULER_POLL_SECONDS": "0.5", "EDGEBED_AGENTS_CALL_TIMEOUT_SECONDS": "3"})
    assert (settings.poll_seconds, settings.call_timeout_seconds) == (0.5, 3.0)
    with pytest.raises(ConfigError, match=r"key 'reservations.turnaround_seconds' must be an integer"):
        load_settings(config, env={"EDGEBED_RESERVATIONS_TURNAROUND_SECONDS": "soon"})
    config.write_text(config.read_text() + "[sheduler]\npoll_seconds = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'sheduler'"):
        load_settings(config, env={})


def test_the_secret_key_is_created_once_private_and_then_reused(tmp_path):
    settings = Settings(listen="127.0.0.1:0", database="db", secret_key_file=str(tmp_path / "var" / "secret.key"))
    key = settings.secret_key()
    assert len(key) == 32
    assert os.stat(settings.secret_key_file).st_mode & 0o777 == 0o600
    assert settings.secret_key() == key
    (tmp_path / "var" / "secret.key").write_text("not base64 !!")
    with pytest.raises(ConfigError, match="secret_key_file .*not base64"):
        settings.secret_key()


async def test_a_bad_database_url_is_refused_without_showing_its_password(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('listen = "127.0.0.1:80"\nsecret_key_file = "k"\ndatabase = "mysql://root:hunter2@db/edgebed"\n')
    with pytest.raises(ConfigError, match=r"key 'database' must be") as refused:
        load_settings(config, env={})
    assert "hunter2" not in str(refused.value) and "root:***@db" in str(refused.value)
    with pytest.raises(StoreUnavailable, match="names no database") as refused:
        await Store("postgresql://root:hunter2@127.0.0.1:1/", secret_key=bytes(32)).open()
    assert "hunter2" not in str(refused.value)
