"""The store's own value types, beside the domain records (controller/domain.py) it returns:
what a node cache read gives, what a schedule write takes, what a password check reads. Plain
dataclasses, no Peewee."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from edgebed.controller.domain import CONNECTED, User

if TYPE_CHECKING:
    from edgebed.controller.lifecycle import Clearance, Ending, Finished


@dataclass(frozen=True)
class CachedNode:
    """One node of the controller's node cache, with the status of the agent that holds it
    ("" when that agent is no longer registered)."""

    name: str
    agent: str
    type: str
    properties: dict[str, str]
    agent_status: str

    @property
    def connected(self) -> bool:
        return self.agent_status == CONNECTED


class CompareAndSet(Protocol):
    """What ScheduleRepository.update_schedule applies: ScheduleChange, or a lifecycle.Decision."""

    @property
    def node_name(self) -> str: ...
    @property
    def owner(self) -> str: ...
    @property
    def expect(self) -> Mapping[str, Any]: ...
    @property
    def changes(self) -> Mapping[str, Any]: ...
    @property
    def delete(self) -> bool: ...
    @property
    def history(self) -> Ending | None: ...
    @property
    def maintenance(self) -> str: ...
    @property
    def finished(self) -> Finished | None: ...
    @property
    def clear(self) -> Clearance | None: ...


@dataclass(frozen=True)
class ScheduleChange:
    """One compare-and-set on a schedule row: apply `changes` only if the row still matches
    `expect` (and, with `clear`, no other owner's window on the node comes within its
    turnaround of its interval); `delete=True` removes the row and its action properties
    instead, and writes the reservation's history row from `history` (required then). Keys of
    both mappings are ScheduleRecord field names (conversions.SCHEDULE_FIELDS). `maintenance`
    and `finished` act on the node as lifecycle.Decision's do."""

    node_name: str
    owner: str
    expect: Mapping[str, Any]
    changes: Mapping[str, Any]
    delete: bool = False
    history: Ending | None = None
    maintenance: str = ""
    finished: Finished | None = None
    clear: Clearance | None = None


@dataclass(frozen=True)
class Credentials:
    """What checking a password needs, read in one go: the user, the stored argon2 hash and the
    account's credential version. Whatever the check leads to (a session, a new password) is
    written only if the credential version is still this one, so a password changed meanwhile
    is never overtaken by a check against the old one."""

    user: User
    password_hash: str = field(repr=False)
    credential_version: str = field(repr=False)
