"""The agent's configuration: one line naming the key and the file for every mistake."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edgebed.agent.app import open_agent, start_agent
from edgebed.agent.settings import EXAMPLE_TOKEN, load_settings
from edgebed.config import ConfigError
from tests.agent.conftest import make_settings
from tests.processes import REPO, edgebed_command, write_toml

GOOD = dict(
    name="rpi", type="raspberry", listen="127.0.0.1:0", token="t0ken", database="var/agent.sqlite"
)


def _without(key: str) -> dict:
    return {k: v for k, v in GOOD.items() if k != key}


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (_without("name"), "key 'name' is missing"),
        (_without("type"), "key 'type' is missing"),
        (_without("listen"), "key 'listen' is missing"),
        (_without("token"), "key 'token' is missing"),
        (_without("database"), "key 'database' is missing"),
        ({**GOOD, "type": "toaster"}, "key 'type' must be one of"),
        ({**GOOD, "listen": "50051"}, "key 'listen' must be 'host:port'"),
        ({**GOOD, "listen": "127.0.0.1:70000"}, "key 'listen' must end with a port number"),
        ({**GOOD, "token": ""}, "key 'token' must not be empty"),
        ({**GOOD, "token": "two words"}, "key 'token' must not contain spaces"),
        # No gRPC client can send a header value that is not ASCII.
        ({**GOOD, "token": "accentu\u00e9"}, "key 'token' must be printable ASCII"),
        ({**GOOD, "name": "my agent"}, "key 'name' must be letters"),
        ({**GOOD, "database": " "}, "key 'database' must not be empty"),
        ({**GOOD, "driver": "magic"}, "key 'driver' must be one of"),
        ({**GOOD, "port": 50051}, "unknown key 'port'"),
        ({**GOOD, "sim": {"nodes": -1}}, "key 'sim.nodes' must be between"),
        ({**GOOD, "sim": {"nodes": "ten"}}, "key 'sim.nodes' must be an integer"),
        ({**GOOD, "sim": {"time_scale": -0.5}}, "key 'sim.time_scale' must be between"),
        ({**GOOD, "sim": {"failure_rate": 1.5}}, "key 'sim.failure_rate' must be between"),
        ({**GOOD, "sim": {"colour": 1}}, "unknown key 'sim.colour'"),
        ({**GOOD, "sim": {"hang_commands": "wipe, wash"}},
         "key 'sim.hang_commands' names unknown commands 'wash'; known: configure, partition, verify, wipe"),
    ],
)
def test_a_bad_key_is_named_with_the_file(tmp_path, keys, expected) -> None:
    path = write_toml(tmp_path / "agent.toml", keys)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    message = str(caught.value)
    assert message.startswith(str(path)) and expected in message
    assert "\n" not in message


def test_hang_commands_is_a_comma_separated_list(tmp_path) -> None:
    path = write_toml(tmp_path / "agent.toml", {**GOOD, "sim": {"hang_commands": "wipe, verify"}})
    assert load_settings(path, env={}).sim_hang_commands == {"wipe", "verify"}
    assert load_settings(write_toml(tmp_path / "b.toml", GOOD), env={}).sim_hang_commands == set()


def test_environment_variables_override_keys(tmp_path) -> None:
    path = write_toml(tmp_path / "agent.toml", GOOD)
    settings = load_settings(
        path, env={"EDGEBED_TOKEN": "from-env", "EDGEBED_SIM_NODES": "3", "EDGEBED_SIM_TIME_SCALE": "0"}
    )
    assert settings.token == "from-env" and settings.sim_nodes == 3 and settings.sim_time_scale == 0
    assert "from-env" not in repr(settings)


@pytest.mark.slow  # a child process
def test_the_cli_reports_a_missing_key_in_one_line(tmp_path) -> None:
    path = write_toml(tmp_path / "agent.toml", _without("token"))
    result = subprocess.run(
        edgebed_command("agent", "--config", str(path)), cwd=REPO, capture_output=True,
        text=True, timeout=30,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == f"edgebed: {path}: key 'token' is missing"


@pytest.mark.slow  # a child process
def test_the_cli_reports_a_missing_file(tmp_path) -> None:
    result = subprocess.run(
        edgebed_command("agent", "--config", str(tmp_path / "nope.toml")), cwd=REPO,
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"edgebed: {tmp_path / 'nope.toml'}: no such configuration file"


# Every type has a real driver now; each needs its [real] table.
@pytest.mark.parametrize("node_type", ["raspberry", "node", "sensor"])
async def test_a_real_driver_without_its_table_is_refused(tmp_path, node_type) -> None:
    settings = make_settings(tmp_path, node_type, driver="real", source="agent.toml")
    with pytest.raises(ConfigError) as caught:
        await start_agent(settings)
    assert str(caught.value) == 'agent.toml: key \'real\' is missing: driver = "real" needs a [real] table'


async def test_a_database_of_another_type_is_refused(tmp_path) -> None:
    async with open_agent(make_settings(tmp_path, database=str(tmp_path / "a.sqlite"))):
        pass
    settings = make_settings(tmp_path, "sensor", database=str(tmp_path / "a.sqlite"), source="s.toml")
    with pytest.raises(ConfigError) as caught:
        await start_agent(settings)
    assert "s.toml: key 'type' is 'sensor'" in str(caught.value)


async def test_one_database_serves_one_agent_at_a_time(tmp_path) -> None:
    async with open_agent(make_settings(tmp_path)):
        with pytest.raises(ConfigError) as caught:
            await start_agent(make_settings(tmp_path, name="rpi2", source="b.toml"))
    assert "b.toml: key 'database'" in str(caught.value) and "in use" in str(caught.value)


async def test_a_port_in_use_is_reported_as_the_listen_key(tmp_path) -> None:
    async with open_agent(make_settings(tmp_path)) as first:
        settings = make_settings(
            tmp_path, name="rpi2", database=str(tmp_path / "b.sqlite"),
            listen=f"127.0.0.1:{first.port}", source="b.toml",
        )
        with pytest.raises(ConfigError) as caught:
            await start_agent(settings)
    assert str(caught.value).startswith("b.toml: key 'listen'")


async def test_a_peewee_url_and_wal_mode(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'url.sqlite'}"
    async with open_agent(make_settings(tmp_path, database=url)) as agent:
        assert await agent.db(agent.store.journal_mode) == "wal"
        assert len(await agent.service.get_nodes([])) == 6
    with pytest.raises(ConfigError) as caught:
        await start_agent(make_settings(tmp_path, database="postgresqlx://x/y", source="c.toml"))
    assert str(caught.value).startswith("c.toml: key 'database' is not usable")


@pytest.mark.parametrize("database", ["/proc/edgebed/agent.sqlite", "{tmp}"])
async def test_an_unusable_database_path_is_reported_as_the_database_key(tmp_path, database) -> None:
    settings = make_settings(tmp_path, database=database.format(tmp=tmp_path), source="d.toml")
    with pytest.raises(ConfigError) as caught:
        await start_agent(settings)
    assert str(caught.value).startswith("d.toml: key 'database'")


def test_example_config_is_valid_once_its_token_is_replaced() -> None:
    settings = load_settings(Path(REPO, "scripts", "agent.example.toml"), env={"EDGEBED_TOKEN": "a-real-token-4Qz"})
    assert settings.type in ("raspberry", "node", "sensor") and settings.driver == "sim"
    assert not settings.tls


def test_the_example_token_is_refused_in_one_line_naming_the_key() -> None:
    example = Path(REPO, "scripts", "agent.example.toml")
    with pytest.raises(ConfigError) as caught:
        load_settings(example, env={})
    message = str(caught.value)
    assert message.startswith(f"{example}: key 'token' is the example token") and "\n" not in message
    # Set through the environment, it is refused the same way, naming the variable.
    with pytest.raises(ConfigError, match="overridden by EDGEBED_TOKEN.*key 'token' is the example token"):
        load_settings(example, env={"EDGEBED_TOKEN": EXAMPLE_TOKEN})


async def test_a_database_password_never_shows_in_settings_or_start_up_errors(tmp_path) -> None:
    settings = make_settings(
        tmp_path, database="postgresql://edgebed:db-secret-pw@127.0.0.1:1/agentdb", token="tok-secret"
    )
    assert "db-secret-pw" not in repr(settings) and "tok-secret" not in repr(settings)
    with pytest.raises(ConfigError) as caught:
        async with open_agent(settings):
            pass
    message = str(caught.value)
    assert "key 'database'" in message and "db-secret-pw" not in message
