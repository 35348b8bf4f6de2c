"""Error messages made fit to show: one line, bounded, without secrets.

An action's last_error (ActionState.last_error) travels from a driver to the agent's store, the
controller's store, the reservation's pages and the JSON API, and is read by the reservation's
owner and the administrators. A driver's message may quote a command's stderr or a URL; the
agent scrubs what it knows to be secret (the action's secret properties, such as os_password)
and both sides scrub what looks like a credential: `password=...`, `token: ...`, `Bearer ...`,
the user:password@ of a URL, a sealed token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from edgebed.limits import MAX_LAST_ERROR

HIDDEN = "***"

# key=value where the key names a credential, and "key: value" for the words that introduce
# one in prose (not "community: ...", which is as likely a node of that name as a community).
_VALUE = r"(\"[^\"]*\"|'[^']*'|[^\s,;]+)"
_ASSIGNED = re.compile(
    r"(?i)\b(password|passwd|passphrase|pwd|token|secret|community|api[_-]?key|private[_-]?key)"
    r"(\s*=\s*)" + _VALUE
)
_STATED = re.compile(r"(?i)\b(password|passwd|passphrase|token|secret)(:\s*)" + _VALUE)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=*-]+")
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_SEALED = re.compile(r"sealed:v1:\S+")


def one_line(text: str, limit: int = MAX_LAST_ERROR) -> str:
    """`text` on one printable line (each run of line breaks and other control characters
    becomes one space) of at most `limit` characters ('...' ends a cut one)."""
    line = " ".join("".join(char if char.isprintable() else "\n" for char in text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with each of `secrets` (exact values, longest first) and whatever looks like a
    credential replaced by HIDDEN."""
    if not text:
        return text
    for secret in sorted({value for value in secrets if value}, key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    for pattern in (_ASSIGNED, _STATED):
        text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}{HIDDEN}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {HIDDEN}", text)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{HIDDEN}@", text)
    return _SEALED.sub(HIDDEN, text)


def error_line(text: str, secrets: Iterable[str] = ()) -> str:
    """A last_error from a message: scrubbed, then made one line of at most MAX_LAST_ERROR
    characters (scrubbed first, so that a cut never leaves half a secret)."""
    return one_line(scrub(text, secrets))
