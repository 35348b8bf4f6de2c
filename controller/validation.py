"""Checks of user input shared by the services. Each returns the cleaned value or raises
InvalidInput with a message that says what is wrong (never echoing a secret); action property
values are checked against the constraints their agent declared (`property_problem`)."""

from __future__ import annotations

import base64
import binascii
import functools
import math
import re
import struct
from collections.abc import Sequence
from typing import Any

from edgebed.constraints import MAX_VALUE_LENGTH, UnsafePattern, compile_pattern, value_problem
from edgebed.controller.domain import PropertySpec
from edgebed.controller.errors import InvalidInput

# Both used with fullmatch only: `$` would also match before a final newline, and "pi-001\n"
# would pass for a second "pi-001".
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
# Agent, node, environment and property names (the store's name columns hold 64 characters).
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
MAX_SSH_KEYS_LENGTH = 16384
MAX_PROPERTY_LENGTH = MAX_VALUE_LENGTH
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024

# The reservation window's rules, defined once: the service checks them with the messages below,
# the reserve form (its input attributes), the JSON API and the OpenAPI document
# (web/openapi.py) state the same bounds. The shortest and longest durations are settings
# ([reservations] min_duration_hours, max_duration_hours); this is the shortest's default.
MIN_DURATION_HOURS = 0.25
# The start date must be before 2100-01-01 00:00 UTC: beyond any reservation, below any overflow.
LATEST_START = 4_102_444_800
LATEST_START_TEXT = "2100-01-01 00:00 UTC"
# A start this many seconds in the past still counts as "now": a form filled in a minute ago on
# a minute-granular field, a script's clock a little behind.
START_SLACK_SECONDS = 300


def email(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput("the email must be text")
    cleaned = value.strip().lower()
    if len(cleaned) > 254 or not _EMAIL.fullmatch(cleaned):
        raise InvalidInput("the email address is malformed")
    return cleaned


def password(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput("the password must be text")
    if len(value) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(value) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"the password must have at most {MAX_PASSWORD_LENGTH} characters")
    return value


def _ssh_key_line(line: str, number: int) -> str:
    parts = line.split(None, 2)
    where = f"SSH key line {number}"
    if len(parts) < 2:
        raise InvalidInput(f"{where} is malformed: expected '<type> <base64 key> [comment]'")
    key_type, blob = parts[0], parts[1]
    if key_type not in _SSH_KEY_TYPES:
        raise InvalidInput(f"{where}: unknown key type (expected one of {', '.join(_SSH_KEY_TYPES)})")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: the key is not valid base64") from None
    # The blob starts with the key type as an SSH string: 4-byte length, then the name.
    if len(raw) < 4:
        raise InvalidInput(f"{where}: the key is truncated")
    (length,) = struct.unpack(">I", raw[:4])
    if raw[4 : 4 + length].decode("ascii", "replace") != key_type:
        raise InvalidInput(f"{where}: the key data does not match its type {key_type}")
    return " ".join(parts)


def ssh_keys(value: Any) -> str:
    """One or more OpenSSH public keys, one per line; '' is allowed (no key)."""
    if not isinstance(value, str):
        raise InvalidInput("the SSH key must be text")
    if len(value) > MAX_SSH_KEYS_LENGTH:
        raise InvalidInput(f"the SSH keys must fit in {MAX_SSH_KEYS_LENGTH} characters")
    lines = [line.strip() for line in value.replace("\r", "").split("\n")]
    keys = [_ssh_key_line(line, n) for n, line in enumerate(lines, 1) if line and not line.startswith("#")]
    return "\n".join(keys)


def name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise InvalidInput(
            f"the {what} name must be 1 to 64 letters, digits, '-', '_' or '.'"
        )
    return value


def bin_name(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput("the bin must be text")
    cleaned = value.strip()
    if len(cleaned) > 64 or any(not ch.isprintable() for ch in cleaned):
        raise InvalidInput("the bin must be at most 64 printable characters")
    return cleaned


def epoch_seconds(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"the {what} must be a number of seconds since 1970 (UTC)")
    if not math.isfinite(value) or not 0 <= value < 2**40:
        raise InvalidInput(f"the {what} is out of range")
    return int(value)


def positive_hours(value: Any, maximum: float) -> float:
    """A positive number of hours up to `maximum` (extend by hours)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput("the duration must be a number of hours")
    if value <= 0:
        raise InvalidInput("the duration must be positive")
    if value > maximum:
        raise InvalidInput(f"the duration must be at most {maximum:g} hours")
    return float(value)


def start_date(value: Any) -> int:
    """A start date in epoch seconds (UTC): a whole number from 0 to before LATEST_START."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not value.is_integer())
    ):
        raise InvalidInput("the start date must be a whole number of seconds since 1970-01-01 00:00 UTC")
    if value < 0:
        raise InvalidInput("the start date must not be before 1970-01-01 00:00 UTC")
    if value >= LATEST_START:
        raise InvalidInput(f"the start date must be before {LATEST_START_TEXT}")
    return int(value)


def duration_hours(value: Any, minimum: float, maximum: float) -> float:
    """A duration in hours, from `minimum` to `maximum` ([reservations] min_duration_hours and
    max_duration_hours)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput("the duration must be a number of hours")
    try:
        hours = float(value)
    except OverflowError:
        # A JSON integer of hundreds of digits: no float holds it.
        hours = math.inf
    if math.isnan(hours):
        raise InvalidInput("the duration must be a number of hours")
    if hours < minimum:
        raise InvalidInput(f"the duration must be at least {minimum:g} hours")
    if hours > maximum:
        raise InvalidInput(f"the duration must be at most {maximum:g} hours")
    return hours


def property_value(value: Any, *, secret: bool) -> str:
    """An action property's value as given by a user, cleaned (stripped, unless secret).
    InvalidInput with a phrase to put after the property's name ("must be text")."""
    if not isinstance(value, str):
        raise InvalidInput("must be text")
    if len(value) > MAX_PROPERTY_LENGTH:
        raise InvalidInput(f"must fit in {MAX_PROPERTY_LENGTH} characters")
    if "\x00" in value:
        raise InvalidInput("contains a NUL character")
    if not secret:
        value = value.strip()
    return value


# Agents' patterns, compiled once each: the compiled pattern, or why it is not applied.
@functools.lru_cache(maxsize=512)
def _agent_pattern(pattern: str, max_length: int) -> re.Pattern[str] | str:
    try:
        return compile_pattern(pattern, max_length)
    except UnsafePattern as exc:
        return str(exc)


def _constraints(spec: PropertySpec) -> tuple[int, int, re.Pattern[str] | None, list[str]]:
    """The constraints of an agent's spec that the controller applies: (min_length, max_length,
    pattern), and why the others are not (they come from the agent, and are untrusted)."""
    ignored = []
    min_length, max_length = max(0, spec.min_length), max(0, spec.max_length)
    if max_length and min_length > max_length:
        ignored.append(f"min_length {min_length} is above max_length {max_length}")
        min_length = max_length = 0
    pattern = None
    if spec.pattern:
        compiled = _agent_pattern(spec.pattern, max_length)
        if isinstance(compiled, str):
            ignored.append(f"pattern {compiled}")
        else:
            pattern = compiled
    return min_length, max_length, pattern, ignored


def ignored_constraints(spec: PropertySpec) -> list[str]:
    """Why some constraints of an agent's property spec are not applied ("pattern uses a
    backreference"); [] when all are. The agent still applies them at StartAction."""
    return _constraints(spec)[3]


def property_problem(spec: PropertySpec, value: str, allowed: Sequence[str] | None = None) -> str | None:
    """What is wrong with `value` (cleaned by `property_value`) under the constraints the agent
    declared for it, as a phrase to put after the property's name ("must be 8 to 128 characters
    long"), or None. `allowed` replaces the spec's values (the environments' names for
    "environment"). A secret value is never repeated."""
    min_length, max_length, pattern, _ = _constraints(spec)
    return value_problem(
        value,
        values=spec.values if allowed is None else allowed,
        min_length=min_length,
        max_length=max_length,
        pattern=pattern,
        # The agent's words; long ones are cut so one cannot fill the page.
        help=spec.help[:300],
        secret=spec.secret,
    )
