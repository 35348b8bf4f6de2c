"""Errors of the controller's service layer.

Every message is safe to show to the user who made the call: it says what is wrong and never
contains a secret (passwords, tokens, os_password values). The web's one error middleware maps
each class to an HTTP status.
"""

from __future__ import annotations

from collections.abc import Mapping


class ServiceError(Exception):
    """Base class; `message` is shown to the user as is."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        # The gRPC status code name when the error came from an agent ("NOT_FOUND", ...).
        self.code = code


class InvalidInput(ServiceError):
    """The request itself is wrong (400)."""


class InvalidProperties(InvalidInput):
    """Action properties that cannot be set (400). `fields` maps each wrong property's name to
    what is wrong with it ("must be 8 to 128 characters long"); the message names them all."""

    def __init__(self, message: str, *, fields: Mapping[str, str] | None = None, code: str = "") -> None:
        super().__init__(message, code=code)
        self.fields = dict(fields or {})

    @classmethod
    def of(cls, fields: Mapping[str, str]) -> InvalidProperties:
        return cls("; ".join(f"{name}: {problem}" for name, problem in fields.items()), fields=fields)


class AuthenticationFailed(ServiceError):
    """Wrong email/password or an unknown API token (401)."""


class NotAuthorized(ServiceError):
    """The account exists but an administrator has not authorized it yet (403)."""


class Forbidden(ServiceError):
    """The caller may not do this (403), e.g. a non-admin on an admin action."""


class NotFound(ServiceError):
    """No such thing, or not one the caller may see (404)."""


class Conflict(ServiceError):
    """The request cannot be met in the current state (409): node taken, name exists, ..."""


class AgentUnavailable(ServiceError):
    """The agent that owns the node is disconnected or did not answer (503)."""


class AgentRejectedToken(AgentUnavailable):
    """The agent answered UNAUTHENTICATED: the token registered for it is wrong (503).

    A subclass of AgentUnavailable so callers that only care "the agent cannot be used" need not
    know the difference, while the admin page can show the precise cause.
    """


class BadReply(AgentUnavailable):
    """An agent answered with something the controller refuses to store (502): a name, length,
    range or count out of bounds, or a state its node type does not have (controller/replies.py).

    A subclass of AgentUnavailable: whoever needed the answer cannot use this agent for it, as if
    it had not answered; nothing of the reply was stored.
    """


class StorageFull(ServiceError):
    """The disk holding the database is full (503): nothing of the request was written, and the
    same request succeeds once there is space again."""
