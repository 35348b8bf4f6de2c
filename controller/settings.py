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


def _check_optional_host_port(value: str) -> str | None:
    return check_host_port(value) if value else None


CONTROLLER_SCHEMA: Schema = {
    "listen": Key(str, check=check_host_port, help="host:port of the web server"),
    "database": Key(str, check=_check_database, help="file path, sqlite:///... or postgresql://..."),
    "secret_key_file": Key(
        str, check=non_empty, help="base64 text or 32+ raw bytes; created (base64 text, 0600) when absent"
    ),
    "public_url": Key(str, "", check=_check_public_url, help="base URL for links in mails"),
    "scheduler": {
        "poll_seconds": Key(float, 2.0, check=in_range(0.05, 3600)),
        "metrics_listen": Key(
            str, "", check=_check_optional_host_port,
            help="host:port where `edgebed controller --role scheduler` serves /metrics; '' = nowhere",
        ),
        "lease_seconds": Key(
            float, 15.0, check=in_range(1, 3600),
            help="how long a controller drives an agent without renewing its lease; at least twice "
            "agents.call_timeout_seconds",
        ),
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
        "prestage": Key(bool, False),
        "prestage_margin_seconds": Key(int, 60, check=in_range(0, 86400)),
    },
    "maintenance": {
        "lost_in_a_row": Key(
            int, 3, check=in_range(0, 1000),
            help="a node goes into maintenance once this many actions in a row end lost; 0: never",
        ),
    },
    "agents": {
        "call_timeout_seconds": Key(float, 6.0, check=in_range(0.1, 600)),
        "refresh_seconds": Key(float, 60.0, check=in_range(1, 86400)),
        "max_calls": Key(
            int, 64, check=in_range(1, 10000),
            help="calls to agents in flight at once, in all; more wait their turn, their deadline not started",
        ),
        "max_calls_per_agent": Key(
            int, 4, check=in_range(1, 1000), help="calls in flight at once to one agent",
        ),
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
    "accounts": {
        "require_confirmed_email": Key(
            bool, False, help="log-in waits until the email address is confirmed (link or administrator)"
        ),
    },
}


@dataclass(frozen=True)
class Settings:
    listen: str
    database: str
    secret_key_file: str
    public_url: str = ""
    poll_seconds: float = 2.0
    # Controllers sharing a database (controller/leases.py): how long a controller's lease on an
    # agent lasts without renewal; a dead controller's agents are taken over after about this long.
    lease_seconds: float = 15.0
    # A wall clock that moves this much more (or less) than the monotonic clock between two polls
    # pauses starting and ending reservations (controller.clock).
    max_clock_jump_seconds: float = 120.0
    min_duration_hours: float = MIN_DURATION_HOURS
    max_duration_hours: float = 168.0
    turnaround_seconds: int = 300
    extend_cap_hours: float = 168.0
    # Start a reservation's first deploy ahead of its start_date, so that the node is deployed
    # at start_date (off by default: the seed defines start_date as the start of the deploy).
    prestage: bool = False
    # Added to the expected deploy duration when prestaging.
    prestage_margin_seconds: int = 60
    # A node goes into maintenance once this many of its actions in a row end `lost` (0: never);
    # a destroy that ends lost puts it there at once.
    lost_in_a_row: int = 3
    call_timeout_seconds: float = 6.0
    # Calls to agents in flight at once, in all and per agent (controller/agent_client.py).
    max_calls: int = 64
    max_calls_per_agent: int = 4
    # Where a scheduler-only process serves /metrics ('' = nowhere).
    metrics_listen: str = ""
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
    # Log-in (and API tokens) refused until the account's email address is confirmed.
    require_confirmed_email: bool = False

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") if self.public_url else f"http://{self.listen}"

    def secret_key(self) -> bytes:
        """The key for signed tokens, session cookies and sealed agent tokens (parse_secret_key);
        created when the file is absent. ConfigError (one line naming the file) when it cannot be
        read or holds no usable key."""
        path = Path(self.secret_key_file)
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            return _create_secret_key(path)
        except OSError as exc:
            raise ConfigError(f"secret_key_file {path}: cannot read: {exc.strerror or exc}") from None
        return parse_secret_key(content, path)

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


MIN_SECRET_KEY_BYTES = 32
_KEY_FORMATS = (
    "base64 text of 32 or more random bytes (`head -c 32 /dev/urandom | base64`, as edgebed "
    "writes it) or 32 or more raw random bytes"
)
_BASE64_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_=")


def parse_secret_key(content: bytes, path: Path) -> bytes:
    """The key in a secret_key_file's `content`, in one of two formats:

    - text (printable ASCII and whitespace only): base64 of the key (standard or URL-safe
      alphabet, padding optional, over one line or several); it must decode to 32 bytes or
      more. This is what edgebed writes.
    - anything else: the raw key, every byte of the file, 32 or more. 32 random bytes are almost
      never all printable ASCII (a chance of about 1 in 10^14), so the two never mix up.

    ConfigError naming the file and the formats it takes otherwise.
    """
    text_bytes = all(32 <= byte < 127 or byte in b"\t\n\r" for byte in content)
    if not text_bytes:
        if len(content) < MIN_SECRET_KEY_BYTES:
            raise ConfigError(
                f"secret_key_file {path}: holds {len(content)} raw bytes, too short for a key; "
                f"it needs {_KEY_FORMATS}"
            )
        return content
    # Line breaks are allowed (`base64` wraps at 76 columns); spaces inside a line are not.
    text = b"".join(line.strip() for line in content.splitlines())
    if not text:
        raise ConfigError(f"secret_key_file {path}: is empty; it needs {_KEY_FORMATS}")
    if not set(text) <= _BASE64_CHARS:
        raise ConfigError(f"secret_key_file {path}: holds text that is not base64; it needs {_KEY_FORMATS}")
    # Either alphabet (`openssl rand -base64`, Python's token_urlsafe), padding optional.
    standard = text.translate(bytes.maketrans(b"-_", b"+/")).rstrip(b"=")
    try:
        key = base64.b64decode(standard + b"=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"secret_key_file {path}: holds malformed base64 (a character too many or too few); "
            f"it needs {_KEY_FORMATS}"
        ) from None
    if len(key) < MIN_SECRET_KEY_BYTES:
        raise ConfigError(
            f"secret_key_file {path}: its base64 text decodes to {len(key)} bytes, too short for a "
            f"key; it needs {_KEY_FORMATS}"
        )
    return key


def _create_secret_key(path: Path) -> bytes:
    key = secrets.token_bytes(MIN_SECRET_KEY_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it between our read and our create: use theirs.
        return parse_secret_key(path.read_bytes(), path)
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
        lease_seconds=config["scheduler"]["lease_seconds"],
        max_clock_jump_seconds=config["scheduler"]["max_clock_jump_seconds"],
        min_duration_hours=config["reservations"]["min_duration_hours"],
        max_duration_hours=config["reservations"]["max_duration_hours"],
        turnaround_seconds=config["reservations"]["turnaround_seconds"],
        extend_cap_hours=config["reservations"]["extend_cap_hours"],
        prestage=config["reservations"]["prestage"],
        prestage_margin_seconds=config["reservations"]["prestage_margin_seconds"],
        lost_in_a_row=config["maintenance"]["lost_in_a_row"],
        call_timeout_seconds=config["agents"]["call_timeout_seconds"],
        max_calls=config["agents"]["max_calls"],
        max_calls_per_agent=config["agents"]["max_calls_per_agent"],
        metrics_listen=config["scheduler"]["metrics_listen"],
        refresh_seconds=config["agents"]["refresh_seconds"],
        tls_client_cert=config["agents"]["tls_client_cert"],
        tls_client_key=config["agents"]["tls_client_key"],
        smtp_host=config["smtp"]["host"],
        smtp_port=config["smtp"]["port"],
        smtp_sender=config["smtp"]["sender"],
        secure_cookies=config["web"]["secure_cookies"],
        require_confirmed_email=config["accounts"]["require_confirmed_email"],
    )


def load_settings(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Settings:
    """Reads a controller TOML file (with EDGEBED_* overrides); ConfigError names the bad key."""
    settings = settings_from_config(load_config(path, CONTROLLER_SCHEMA, env))
    if settings.lease_seconds < 2 * settings.call_timeout_seconds:
        # A StartAction is sent only while the lease lasts a whole call deadline more; a lease
        # renewed every third of its length must leave that room.
        raise ConfigError(
            f"{path}: key 'scheduler.lease_seconds' must be at least twice agents.call_timeout_seconds "
            f"({2 * settings.call_timeout_seconds:g}), got {settings.lease_seconds:g}"
        )
    return settings
