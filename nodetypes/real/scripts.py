"""The bash scripts the real raspberry driver runs on a node, from the package's scripts/ folder.

Each script is constant text: its values come as positional parameters (quoted by
`ssh.bash`), or on stdin for secrets and larger data. `script(name)` gives the text to run,
common.sh (shared functions) first. They are plain files so that shellcheck and the tests can
run them as they are.
"""

from __future__ import annotations

import functools
from importlib import resources

NAMES = (
    "job-start", "job-status", "copy", "wipe", "partition", "configure-host", "configure-login",
    "read-back",
)


@functools.cache
def script(name: str) -> str:
    """The text of scripts/<name>.sh with common.sh before it. Raises ValueError for an unknown
    name."""
    if name not in NAMES:
        raise ValueError(f"no script named {name!r}")
    folder = resources.files(__package__).joinpath("scripts")
    common = folder.joinpath("common.sh").read_text(encoding="utf-8")
    body = folder.joinpath(f"{name}.sh").read_text(encoding="utf-8")
    return f"#!/bin/bash\n{common}\n{body}"
