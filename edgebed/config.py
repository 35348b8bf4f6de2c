"""TOML configuration with EDGEBED_* environment overrides, checked against a schema.

A schema maps key names to `Key` (a scalar), to a nested dict (a TOML table whose absence means
every key takes its default), to `Table` (a table that may be absent as a whole: it loads as
None) or to `Array` (an array of tables, `[[real.switches]]`, each checked against one schema).
Every key can be overridden by an environment variable: `EDGEBED_<KEY>` for a top-level key,
`EDGEBED_<TABLE>_<KEY>` inside a table (`EDGEBED_SIM_NODES`, `EDGEBED_SCHEDULER_POLL_SECONDS`)
and `EDGEBED_<TABLE>_<ARRAY>_<N>_<KEY>` inside the N-th table of an array, counted from 1
(`EDGEBED_REAL_SWITCHES_1_COMMUNITY`: only for tables the file has).
Any problem raises `ConfigError` whose message names the key and the file, in one line; a key of
an array element is named with its position, counted from 1: `real.switches[2].community`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_MISSING = object()


class ConfigError(Exception):
    """A configuration file is unreadable, or a key is missing, unknown or has a wrong value."""


class KeyProblem(Exception):
    """A key's value that only the running program can find wrong (a file that is not there, an
    address that cannot be served): raised where the file is unknown, turned into a ConfigError
    naming the file by whoever knows it. `text` follows the key: "is not readable: ..."."""

    def __init__(self, key: str, text: str) -> None:
        super().__init__(f"key '{key}' {text}")
        self.key = key
        self.text = text


@dataclass(frozen=True)
class Key:
    kind: type
    default: Any = _MISSING
    choices: tuple[Any, ...] = ()
    # Returns an error text for a bad value, or None when the value is fine.
    check: Callable[[Any], str | None] | None = None
    help: str = ""
    # A secret (a token) is never repeated in an error message.
    secret: bool = False

    @property
    def required(self) -> bool:
        return self.default is _MISSING


@dataclass(frozen=True)
class Table:
    """A table that may be left out: absent from the file (and no EDGEBED_ variable naming one
    of its keys), it loads as None and its required keys are not asked for; present, it is
    checked like a nested dict."""

    schema: Schema


@dataclass(frozen=True)
class Array:
    """An array of tables (`[[name]]` in TOML), each checked against `schema`; loads as a list of
    dicts. `min_items` tables at least (with 0, an absent array loads as an empty list)."""

    schema: Schema
    min_items: int = 0


Schema = Mapping[str, "Key | Table | Array | Schema"]


def _describe(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            list: "an array", dict: "a table"}.get(
        kind, kind.__name__
    )


def _from_env(raw: str, key: Key) -> Any:
    if key.kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if key.kind in (int, float):
        return key.kind(raw.strip())
    return raw


def _shown(value: Any, key: Key) -> str:
    return f"a {type(value).__name__} value (hidden: secret)" if key.secret else repr(value)


def _coerce(value: Any, key: Key) -> Any:
    if key.kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if key.kind is int and isinstance(value, bool):
        raise TypeError
    if not isinstance(value, key.kind):
        raise TypeError
    return value


def env_name(dotted: str) -> str:
    """The environment variable overriding key `dotted`: real.switches[1].community ->
    EDGEBED_REAL_SWITCHES_1_COMMUNITY."""
    flat = dotted.replace("[", ".").replace("]", "").replace(".", "_")
    return "EDGEBED_" + flat.upper()


def _overridden(env: Mapping[str, str], dotted: str) -> bool:
    """Whether an environment variable names a key inside table `dotted`."""
    prefix = env_name(dotted) + "_"
    return any(name.startswith(prefix) for name in env)


def _load_array(
    data: Any, spec: Array, env: Mapping[str, str], source: str, dotted: str
) -> list[dict[str, Any]]:
    if data is None:
        data = []
    if not isinstance(data, list) or not all(isinstance(item, Mapping) for item in data):
        raise ConfigError(f"{source}: key '{dotted}' must be an array of tables ([[{dotted}]])")
    if len(data) < spec.min_items:
        raise ConfigError(
            f"{source}: key '{dotted}' is missing: at least {spec.min_items} [[{dotted}]] "
            f"table{'s' if spec.min_items > 1 else ''} needed"
        )
    return [
        _load_table(item, spec.schema, env, source, f"{dotted}[{index}].")
        for index, item in enumerate(data, start=1)
    ]


def load_table(
    data: Mapping[str, Any], schema: Schema, env: Mapping[str, str], source: str, prefix: str = ""
) -> dict[str, Any]:
    """Checks one table's `data` against `schema`; `prefix` names the table in messages and
    environment variables ("real." for [real]). Raises ConfigError."""
    return _load_table(data, schema, env, source, prefix)


def _load_table(
    data: Mapping[str, Any], schema: Schema, env: Mapping[str, str], source: str, prefix: str
) -> dict[str, Any]:
    for name in data:
        if name not in schema:
            raise ConfigError(f"{source}: unknown key '{prefix}{name}'")
    result: dict[str, Any] = {}
    for name, spec in schema.items():
        dotted = f"{prefix}{name}"
        if isinstance(spec, Array):
            result[name] = _load_array(data.get(name), spec, env, source, dotted)
            continue
        if isinstance(spec, Table):
            if name not in data and not _overridden(env, dotted):
                result[name] = None
                continue
            spec = spec.schema
        if not isinstance(spec, Key):
            table = data.get(name, {})
            if not isinstance(table, Mapping):
                raise ConfigError(f"{source}: key '{dotted}' must be a table")
            result[name] = _load_table(table, spec, env, source, dotted + ".")
            continue
        var = env_name(dotted)
        where = source
        if var in env:
            where = f"{source} (overridden by {var})"
            try:
                value = _from_env(env[var], spec)
            except ValueError:
                raise ConfigError(
                    f"{where}: key '{dotted}' must be {_describe(spec.kind)}, "
                    f"got {_shown(env[var], spec)}"
                ) from None
        elif name in data:
            value = data[name]
        elif spec.required:
            raise ConfigError(f"{source}: key '{dotted}' is missing")
        else:
            result[name] = spec.default
            continue
        try:
            value = _coerce(value, spec)
        except TypeError:
            raise ConfigError(
                f"{where}: key '{dotted}' must be {_describe(spec.kind)}, got {_shown(value, spec)}"
            ) from None
        if spec.choices and value not in spec.choices:
            allowed = ", ".join(repr(c) for c in spec.choices)
            raise ConfigError(
                f"{where}: key '{dotted}' must be one of {allowed}, got {_shown(value, spec)}"
            )
        if spec.check is not None:
            problem = spec.check(value)
            if problem:
                raise ConfigError(f"{where}: key '{dotted}' {problem}")
        result[name] = value
    return result


def load_config(
    path: str | os.PathLike[str], schema: Schema, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Reads `path`, applies EDGEBED_* overrides from `env` (default: os.environ), checks `schema`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such configuration file") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return _load_table(data, schema, os.environ if env is None else env, source, "")


def check_host_port(value: str) -> str | None:
    """A `check` for listen addresses: 'host:port' with a port in 0..65535 (0: any free port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        return f"must be 'host:port', got {value!r}"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"must end with a port number 0..65535, got {value!r}"
    return None


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def in_range(low: float, high: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not low <= value <= high:
            return f"must be between {low} and {high}, got {value!r}"
        return None

    return check


def non_empty(value: str) -> str | None:
    return "must not be empty" if not str(value).strip() else None


def redacted_url(url: str) -> str:
    """The database URL without its password, for messages."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
