"""The agent's domain types, kept apart from both the protobuf messages and the Peewee models."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgebed.nodetypes.base import FINAL_STATES, Environment, NodeRef
from edgebed.records import replaced

__all__ = ["ActionRecord", "ActionView", "Environment", "NodeRecord", "TransitionRecord"]


@dataclass(frozen=True)
class NodeRecord:
    """A node and its properties: the rasp_node rows of one node_name."""

    name: str
    properties: Mapping[str, str]

    def ref(self) -> NodeRef:
        return NodeRef(self.name, dict(self.properties))


@dataclass(frozen=True)
class ActionRecord:
    """The seed's action row, plus what the executor needs to resume it after a restart."""

    node_name: str
    node_ip: str
    environment: str
    process: str
    state: str
    state_idx: int
    # Epoch seconds of the last state change.
    updated_at: int
    progress: int = 0
    reboots: int = 0
    # Identifies this action among the node's successive ones (epoch microseconds at its start).
    action_id: int = 0
    started_at: int = 0
    # Real seconds the agent has driven this action, measured on a monotonic clock (never the
    # wall clock, which may step); as of the last commit. Time while the agent was stopped is
    # not counted: nothing measured it.
    elapsed: float = 0.0
    # Out of repr(): they hold os_password until the action ends.
    properties: Mapping[str, str] = field(default_factory=dict, repr=False)
    # The environment as it was when the action started: a later edit does not change a deploy.
    environment_spec: Environment | None = None
    # The last error a driver step raised during this action, one line of at most
    # MAX_LAST_ERROR characters with the action's secrets scrubbed (edgebed.redact); for a lost
    # action, why it was lost. '' when there was none; a new action starts with ''.
    last_error: str = ""

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def but(self, **changes: Any) -> ActionRecord:
        """dataclasses.replace(self, **changes), faster (edgebed.records.replaced): the executor
        makes one for every state of every node it drives. TypeError for a name that is not a
        field, as replace raises."""
        return replaced(self, **changes)


@dataclass(frozen=True)
class ActionView:
    """An action as GetActionState reports it."""

    record: ActionRecord
    progress: int
    state_count: int
    final: bool


@dataclass(frozen=True)
class TransitionRecord:
    """One line of the append-only transition log: a state entered, a hard reboot, a loss."""

    node_name: str
    action_id: int
    process: str
    state: str
    state_idx: int
    # enter | retry | reboot | power_cut | lost (the escalation rungs are nodetypes.base.Rung)
    event: str
    at: float
