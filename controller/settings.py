"""The controller's configuration: TOML keys, defaults and checks, and the Settings it becomes."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgebed.config import (
    ConfigError,
    Key,
    Schema,
    check_host_port,
    in_range,
    load_config,
    non_empty,
    redacted_url,
)
from edgebed.controller.validation import MIN_DURATION_HOURS
from edgebed.tls import Identity, TlsError, load_identity


def _check_database(value: str) -> str | None:
    if not value.strip():
        return "must not be empty"
    if "://" in value and not value.startswith(
        ("sqlite://", "postgresql://", "postgres://")
    ):
        return f"must be a file path, sqlite:///PATH or postgresql://..., got {redacted_url(value)!r}"
    return None


def _check_public_url(value: str) -> str | None:
    if value and not value.startswith(("http://", "https://")):
        return f"must start with http:// or https://, got {value!r}"
    return None


CONTROLLER_SCHEMA: Schema = {
    "listen": Key(str, check=check_host_port, help="host:port of the web server"),
    "database": Key(str, check=_check_database, help="file path, sqlite:///... or postgresql://..."),
    "secret_key_file": Key(str, check=non_empty, help="created with 32 random bytes when absent"),
    "public_url": Key(str, "", check=_check_public_url, help="base URL for links in mails"),
    "scheduler": {
        "poll_seconds": Key(float, 2.0, check=in_range(0.05, 3600)),
        "max_clock_jump_seconds": Key(
            float, 120.0, check=in_range(1, 7 * 86400),
            help="a wall clock jump beyond this pauses starting and ending reservations",
        ),
    },
    "reservations": {
        "min_duration_hours": Key(
            float, MIN_DURATION_HOURS, check=in_range(1 / 3600, 24), help="shortest reservation"
        ),
        "max_duration_hours": Key(float, 168.0, check=in_range(0.001, 24 * 366)),
        "turnaround_seconds": Key(int, 300, check=in_range(0, 86400)),
        "extend_cap_hours": Key(float, 168.0, check=in_range(0.001, 24 * 366)),
    },
    "agents": {
        "call_timeout_seconds": Key(float, 6.0, check=in_range(0.1, 600)),
        "refresh_seconds": Key(float, 60.0, check=in_range(1, 86400)),
        "tls_client_cert": Key(str, "", help="PEM certificate the controller presents to mutual-TLS agents"),
        "tls_client_key": Key(str, "", help="its PEM private key (unencrypted, mode 0600)"),
    },
    "smtp": {
        "host": Key(str, ""),
        "port": Key(int, 25, check=in_range(1, 65535)),
        "sender": Key(str, "edgebed@localhost", check=non_empty),
    },
    "web": {
        "secure_cookies": Key(bool, False),
    },
}


@dataclass(frozen=True)
class Settings:
    listen: str
    database: str
    secret_key_file: str
    public_url: str = ""
    poll_seconds: float = 2.0
    # A wall clock that moves this much more (or less) than the monotonic clock between two polls
    # pauses starting and ending reservations (controller.clock).
    max_clock_jump_seconds: float = 120.0
    min_duration_hours: float = MIN_DURATION_HOURS
    max_duration_hours: float = 168.0
    turnaround_seconds: int = 300
    extend_cap_hours: float = 168.0
    call_timeout_seconds: float = 6.0
    # How often the scheduler refreshes the node cache and catalogs from connected agents.
    refresh_seconds: float = 60.0
    # The controller's one TLS client identity, presented to every agent that has a CA set
    # (file paths; both or neither; "" = none, enough for agents without tls_client_ca).
    tls_client_cert: str = ""
    tls_client_key: str = ""
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_sender: str = "edgebed@localhost"
    secure_cookies: bool = False

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") if self.public_url else f"http://{self.listen}"

    def secret_key(self) -> bytes:
        """The key for signed tokens and session cookies; created (mode 0600) when absent."""
        path = Path(self.secret_key_file)
        try:
            text = path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return _create_secret_key(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"secret_key_file {path}: cannot read: {exc}") from None
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"secret_key_file {path}: not base64 text") from None
        if len(key) < 32:
            raise ConfigError(f"secret_key_file {path}: holds {len(key)} bytes, needs 32")
        return key

    def client_identity(self) -> Identity | None:
        """The certificate and key the controller presents to agents (None when neither key is
        set); ConfigError naming the key when only one is set or a file is unreadable, not PEM,
        or the key is not the certificate's."""
        if not self.tls_client_cert and not self.tls_client_key:
            return None
        if not self.tls_client_key:
            raise ConfigError("key 'agents.tls_client_key' is missing: tls_client_cert needs its private key")
        if not self.tls_client_cert:
            raise ConfigError("key 'agents.tls_client_cert' is missing: tls_client_key needs its certificate")
        try:
            return load_identity(self.tls_client_cert, self.tls_client_key, cert_what="file", key_what="file")
        except TlsError as exc:
            key = "tls_client_key" if exc.role == "key" else "tls_client_cert"
            raise ConfigError(f"key 'agents.{key}' {exc}") from None


def _create_secret_key(path: Path) -> bytes:
    key = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it between our read and our create: use theirs.
        return base64.b64decode(path.read_text(encoding="ascii").strip())
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(base64.b64encode(key).decode("ascii") + "\n")
    return key


def settings_from_config(config: Mapping) -> Settings:
    return Settings(
        listen=config["listen"],
        database=config["database"],
        secret_key_file=config["secret_key_file"],
        public_url=config["public_url"],
        poll_seconds=config["scheduler"]["poll_seconds"],
        max_clock_jump_seconds=config["scheduler"]["max_clock_jump_seconds"],
        min_duration_hours=config["reservations"]["min_duration_hours"],
        max_duration_hours=config["reservations"]["max_duration_hours"],
        turnaround_seconds=config["reservations"]["turnaround_seconds"],
        extend_cap_hours=config["reservations"]["extend_cap_hours"],
        call_timeout_seconds=config["agents"]["call_timeout_seconds"],
        refresh_seconds=config["agents"]["refresh_seconds"],
        tls_client_cert=config["agents"]["tls_client_cert"],
        tls_client_key=config["agents"]["tls_client_key"],
        smtp_host=config["smtp"]["host"],
        smtp_port=config["smtp"]["port"],
        smtp_sender=config["smtp"]["sender"],
        secure_cookies=config["web"]["secure_cookies"],
    )


def load_settings(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Settings:
    """Reads a controller TOML file (with EDGEBED_* overrides); ConfigError names the bad key."""
    return settings_from_config(load_config(path, CONTROLLER_SCHEMA, env))
