"""The configuration loader: one-line errors naming the key and the file; env overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebed.config import ConfigError, Key, check_host_port, in_range, load_config

SCHEMA = {
    "name": Key(str),
    "listen": Key(str, check=check_host_port),
    "driver": Key(str, default="sim", choices=("sim", "real")),
    "sim": {"nodes": Key(int, default=4), "failure_rate": Key(float, default=0.0, check=in_range(0, 1))},
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_valid_file_with_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "a1"\nlisten = "127.0.0.1:0"\n[sim]\nnodes = 3\n')
    assert load_config(path, SCHEMA, env={}) == {
        "name": "a1", "listen": "127.0.0.1:0", "driver": "sim",
        "sim": {"nodes": 3, "failure_rate": 0.0},
    }


def test_env_overrides_top_level_and_table_keys(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "a1"\nlisten = "127.0.0.1:0"\n')
    config = load_config(path, SCHEMA, env={"EDGEBED_NAME": "a2", "EDGEBED_SIM_NODES": "7"})
    assert config["name"] == "a2" and config["sim"]["nodes"] == 7


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ('listen = "h:1"\n', {}, "key 'name' is missing"),
        ('name = 3\nlisten = "h:1"\n', {}, "key 'name' must be a string"),
        ('name = "a"\nlisten = "nope"\n', {}, "key 'listen' must be 'host:port'"),
        ('name = "a"\nlisten = "h:1"\ndriver = "x"\n', {}, "key 'driver' must be one of"),
        ('name = "a"\nlisten = "h:1"\ncolour = 1\n', {}, "unknown key 'colour'"),
        ('name = "a"\nlisten = "h:1"\n[sim]\nfailure_rate = 2\n', {}, "key 'sim.failure_rate' must be between"),
        ('name = "a"\nlisten = "h:1"\n', {"EDGEBED_SIM_NODES": "many"}, "EDGEBED_SIM_NODES"),
        ('name = "a\n', {}, "not valid TOML"),
    ],
)
def test_bad_files_name_the_key_and_the_file(tmp_path: Path, text: str, env: dict, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, SCHEMA, env=env)
    message = str(caught.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.toml", SCHEMA, env={})


def test_a_secret_key_is_never_repeated_in_errors(tmp_path: Path) -> None:
    schema = {"token": Key(str, secret=True, choices=("only-this",))}
    for text, env in [("token = 123456789\n", {}), ('token = "hunter2-token"\n', {})]:
        with pytest.raises(ConfigError) as caught:
            load_config(write(tmp_path, text), schema, env=env)
        message = str(caught.value)
        assert "key 'token'" in message and "hidden" in message
        assert "123456789" not in message and "hunter2" not in message
