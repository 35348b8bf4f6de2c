"""The agent's configuration: the TOML schema and the settings it gives."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgebed.config import (
    ConfigError,
    Key,
    KeyProblem,
    Schema,
    check_host_port,
    env_name,
    in_range,
    load_config,
    load_table,
    redacted_url,
)
from edgebed.nodetypes import TYPE_NAMES
from edgebed.nodetypes.base import NAME_PATTERN
from edgebed.nodetypes.drivers import RealSettings
from edgebed.nodetypes.real.boards import SENSOR_REAL_SCHEMA, SensorRealConfig
from edgebed.nodetypes.real.config import (
    RASPBERRY_REAL_SCHEMA,
    SERVER_REAL_SCHEMA,
    RealConfig,
    ServerRealConfig,
)
from edgebed.nodetypes.sim.hardware import COMMANDS

# The node types that have a real driver, and so a [real] table: its schema, and what builds
# the driver's typed settings from the checked table (raising KeyProblem).
REAL_TABLES: dict[str, tuple[Schema, Callable[[Mapping[str, Any]], RealSettings]]] = {
    "raspberry": (RASPBERRY_REAL_SCHEMA, RealConfig.from_table),
    "node": (SERVER_REAL_SCHEMA, ServerRealConfig.from_table),
    "sensor": (SENSOR_REAL_SCHEMA, SensorRealConfig.from_table),
}
REAL_TYPES = tuple(REAL_TABLES)


def _check_agent_name(value: str) -> str | None:
    # Node names are "<agent name>-NNN" and must stay within 64 characters.
    if not NAME_PATTERN.fullmatch(value) or len(value) > 56:
        return (
            f"must be letters, digits, '-', '_' or '.', at most 56 characters, got {value!r}"
        )
    return None


# The token scripts/agent.example.toml ships with: anyone who read the example knows it.
EXAMPLE_TOKEN = "change-me-to-a-long-random-token"


def _check_token(value: str) -> str | None:
    if not value:
        return "must not be empty"
    if value == EXAMPLE_TOKEN:
        return (
            "is the example token from scripts/agent.example.toml, which anyone can read; set a "
            "long random one: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if re.search(r"\s", value) or not value.isprintable():
        return "must not contain spaces or control characters"
    if not value.isascii():
        return "must be printable ASCII: gRPC sends nothing else in a header"
    return None


def hang_commands(value: str) -> frozenset[str]:
    """The `[sim] hang_commands` text ("wipe", "wipe, verify") as a set of names."""
    return frozenset(name.strip() for name in value.split(",") if name.strip())


def _check_hang_commands(value: str) -> str | None:
    unknown = sorted(hang_commands(value) - set(COMMANDS))
    if unknown:
        return f"names unknown commands {', '.join(map(repr, unknown))}; known: {', '.join(COMMANDS)}"
    return None


def _check_database(value: str) -> str | None:
    return "must not be empty" if not value.strip() else None


AGENT_SCHEMA: Schema = {
    "name": Key(str, check=_check_agent_name, help="unique agent name; sim nodes are NAME-001..."),
    "type": Key(str, choices=TYPE_NAMES, help="the node type this agent manages"),
    "listen": Key(str, check=check_host_port, help="gRPC address host:port (port 0: any)"),
    "token": Key(
        str, check=_check_token, secret=True, help="the token callers send as 'Bearer <token>'"
    ),
    "database": Key(str, check=_check_database, help="SQLite file path or Peewee URL"),
    "driver": Key(str, default="sim", choices=("sim", "real"), help="hardware driver"),
    "tls_cert": Key(str, default="", help="PEM certificate (chain) the agent serves TLS with; with tls_key"),
    "tls_key": Key(str, default="", help="PEM private key of tls_cert (unencrypted, mode 0600)"),
    "tls_client_ca": Key(
        str, default="", help="PEM CA bundle: callers must present a certificate it signed (mutual TLS)"
    ),
    "log_calls": Key(
        bool, default=False,
        help="log every call with its caller (a controller's user-agent names its instance)",
    ),
    "sim": {
        "nodes": Key(int, default=8, check=in_range(0, 10_000), help="nodes created on first start"),
        "time_scale": Key(float, default=1.0, check=in_range(0, 100),
                          help="multiplies every simulated duration; 0 = instant"),
        "failure_rate": Key(float, default=0.0, check=in_range(0, 1),
                            help="chance that a simulated boot, command or copy hangs"),
        "seed": Key(int, default=-1, help="seed for the simulated failures; -1 = unpredictable"),
        "hang_commands": Key(str, default="", check=_check_hang_commands,
                             help="test aid: simulated commands that always hang, comma-separated "
                                  "(e.g. \"wipe\": every destroy ends lost)"),
    },
    # The keys of [real] depend on the agent's type (REAL_TABLES): read here as it stands,
    # checked by load_settings against the type's schema; required with driver = "real".
    "real": Key(dict, default=None, help="the real driver's settings, by node type"),
}


@dataclass(frozen=True)
class AgentSettings:
    name: str
    type: str
    listen: str
    token: str
    database: str
    driver: str = "sim"
    sim_nodes: int = 8
    sim_time_scale: float = 1.0
    sim_failure_rate: float = 0.0
    sim_seed: int = -1
    sim_hang_commands: frozenset[str] = frozenset()
    # TLS (file paths; "" = none): tls_cert and tls_key together, tls_client_ca only with them.
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # One log line per gRPC call, with the caller's user-agent (which controller asks).
    log_calls: bool = False
    # The [real] table of the agent's type; None when the file has none. Its repr hides the
    # communities.
    real: RealSettings | None = None
    # Where the settings came from, for error messages that name the file.
    source: str = "<settings>"

    def __repr__(self) -> str:
        # Settings end up in logs and tracebacks; the token must not.
        return (
            f"AgentSettings(name={self.name!r}, type={self.type!r}, listen={self.listen!r}, "
            f"database={redacted_url(self.database)!r}, driver={self.driver!r}, sim_nodes={self.sim_nodes}, "
            f"sim_time_scale={self.sim_time_scale}, sim_failure_rate={self.sim_failure_rate}, "
            f"tls_cert={self.tls_cert!r}, tls_client_ca={self.tls_client_ca!r}, real={self.real!r})"
        )

    @property
    def tls(self) -> bool:
        """Whether the agent serves TLS (tls_cert and tls_key set)."""
        return bool(self.tls_cert)

    def problem(self, key: str, text: str) -> ConfigError:
        return ConfigError(f"{self.source}: key '{key}' {text}")


def load_settings(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> AgentSettings:
    env = os.environ if env is None else env
    config = load_config(path, AGENT_SCHEMA, env)
    sim = config["sim"]
    real = _real_settings(config, env, str(path))
    settings = AgentSettings(
        name=config["name"],
        type=config["type"],
        listen=config["listen"],
        token=config["token"],
        database=config["database"],
        driver=config["driver"],
        sim_nodes=sim["nodes"],
        sim_time_scale=sim["time_scale"],
        sim_failure_rate=sim["failure_rate"],
        sim_seed=sim["seed"],
        sim_hang_commands=hang_commands(sim["hang_commands"]),
        tls_cert=config["tls_cert"],
        tls_key=config["tls_key"],
        tls_client_ca=config["tls_client_ca"],
        log_calls=config["log_calls"],
        real=real,
        source=str(path),
    )
    check_tls_keys(settings)
    return settings


def _real_settings(config: Mapping[str, Any], env: Mapping[str, str], path: str) -> RealSettings | None:
    """The [real] table checked against the schema of the agent's type; None when the file has
    none (and no EDGEBED_REAL_ variable names a key of it) and the driver is not real."""
    raw = config["real"]
    overridden = any(name.startswith(env_name("real") + "_") for name in env)
    if raw is None and not overridden and (config["driver"] != "real" or config["type"] not in REAL_TABLES):
        # (A real driver for a type without one is refused when the driver is looked up.)
        return None
    if config["type"] not in REAL_TABLES:
        raise ConfigError(
            f"{path}: key 'real' is for a {' or '.join(REAL_TYPES)} agent; a {config['type']} "
            "agent has no real driver yet"
        )
    schema, build = REAL_TABLES[config["type"]]
    # Names the first key that is missing, as for any other table.
    table = load_table(raw or {}, schema, env, path, "real.")
    try:
        return build(table)
    except KeyProblem as problem:
        raise ConfigError(f"{path}: {problem}") from None


def check_tls_keys(settings: AgentSettings) -> None:
    """ConfigError naming the key when the TLS keys do not go together: tls_cert and tls_key
    both or neither; tls_client_ca only with them (mutual TLS is TLS first)."""
    if settings.tls_cert and not settings.tls_key:
        raise settings.problem("tls_key", "is missing: tls_cert needs the certificate's private key")
    if settings.tls_key and not settings.tls_cert:
        raise settings.problem("tls_cert", "is missing: tls_key needs its certificate")
    if settings.tls_client_ca and not settings.tls_cert:
        raise settings.problem(
            "tls_client_ca", "needs tls_cert and tls_key: the agent checks client certificates over TLS only"
        )
