"""Errors shared by every command, in a module of their own so that `python -m edgebed.cli` (which
loads the CLI a second time as __main__) still catches the very classes the sides raise."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit code 2."""
