"""The bash scripts the real raspberry driver runs on a node, from the package's shell/ folder.

Each script is constant text: its values come as positional parameters (quoted by
`ssh.bash`), or on stdin for secrets and larger data. `script(name)` gives the text to run,
common.sh (shared functions) first. They are plain files so that shellcheck and the tests can
read them as they are.
"""

from __future__ import annotations

import functools
from importlib import resources

NAMES = (
    "job-start", "job-status", "copy", "wipe", "partition", "configure-host", "configure-login",
    "read-back",
)


def _code(text: str) -> str:
    """`text` without its comment lines and blank lines: they would travel with every command
    (the status script runs at every poll). No script has a here-document or a multi-line
    string, so a line starting with '#' is always a comment."""
    return "".join(
        line for line in text.splitlines(keepends=True)
        if line.strip() and not line.lstrip().startswith("#")
    )


def _read(name: str) -> tuple[str, str]:
    """(common.sh, shell/<name>.sh). Raises ValueError for an unknown name."""
    if name not in NAMES:
        raise ValueError(f"no script named {name!r}")
    folder = resources.files(__package__).joinpath("shell")
    return (folder.joinpath("common.sh").read_text(encoding="utf-8"),
            folder.joinpath(f"{name}.sh").read_text(encoding="utf-8"))


@functools.cache
def script(name: str) -> str:
    """The code of shell/<name>.sh with common.sh's before it, comments left out. Raises
    ValueError for an unknown name."""
    common, body = _read(name)
    return f"#!/bin/bash\n{_code(common)}{_code(body)}"


def source(name: str) -> str:
    """shell/<name>.sh with common.sh before it, comments and all (for shellcheck)."""
    common, body = _read(name)
    return f"#!/bin/bash\n{common}\n{body}"
