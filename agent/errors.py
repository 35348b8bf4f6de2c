"""What the agent's service layer raises; the gRPC servicer maps each to one status code."""

from __future__ import annotations


class AgentError(Exception):
    """Base class; `message` says what is wrong and is safe to send to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(AgentError):
    """A malformed request: unknown process, empty or bad name, unknown environment, bad value."""


class NotFound(AgentError):
    """No node (or environment) with that name."""


class Busy(AgentError):
    """The node has an unfinished action, or another request is changing it."""


class AlreadyExists(AgentError):
    """The name is taken."""


class DiskFull(AgentError):
    """The disk holding the agent's database is full: nothing was written, and the same request
    succeeds once there is space again (RESOURCE_EXHAUSTED)."""
