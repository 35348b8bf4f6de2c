"""Domain types of the controller: what the service layer hands to the pages and the JSON API.

Plain frozen dataclasses, free of Peewee and protobuf. Dates are integer epoch seconds (UTC).
The `*Record` types are internal to the controller: they carry what must never leave it (an
agent's token, the scheduler's intent bookkeeping).
"""

from __future__ import annotations

from dataclasses import dataclass, field

FINAL_STATES = ("deployed", "rebooted", "destroyed", "lost")
PROCESSES = ("deploy", "reboot", "destroy")

# Reservation statuses are `lifecycle.Status`, beside the state machine that moves them.

# Agent statuses, from the seed.
CONNECTED = "connected"
DISCONNECTED = "disconnected"


@dataclass(frozen=True)
class User:
    email: str
    ssh_key: str
    confirmed_email: bool
    is_authorized: bool
    is_admin: bool
    created_at: int


@dataclass(frozen=True)
class ApiToken:
    id: int
    label: str
    created_at: int
    last_used_at: int | None


@dataclass(frozen=True)
class AgentInfo:
    name: str
    type: str
    ip: str
    port: int
    status: str
    last_error: str
    node_count: int
    # Whether the controller speaks TLS to the agent (a CA is set for it).
    tls: bool = False


@dataclass(frozen=True)
class AgentRecord:
    """An agent row with its token: only the agent client and the store see it."""

    name: str
    type: str
    ip: str
    port: int
    status: str
    # Kept out of repr(): a record that ends up in a log or a traceback must not show it.
    token: str = field(repr=False)
    last_error: str = ""
    # PEM: the CA the agent's certificate must chain to, or the agent's own (pinned)
    # certificate; "" = plaintext. Long, hence out of repr().
    ca_pem: str = field(default="", repr=False)

    @property
    def tls(self) -> bool:
        return bool(self.ca_pem)

    @property
    def address(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class NodeInfo:
    name: str
    agent: str
    type: str
    properties: dict[str, str]
    connected: bool
    # Why the node is in maintenance ('' when it is not) and since when (epoch seconds, 0).
    maintenance: str = ""
    maintenance_since: int = 0
    # True while an administrator's removal of the node or of its agent waits for its
    # reservations to end (it takes no new one).
    retiring: bool = False


@dataclass(frozen=True)
class NodeMaintenance:
    """A node in maintenance: never handed to a new reservation until an administrator
    releases it. `set_by` is the administrator's email, or "edgebed" when the controller put it
    there (a destroy ended lost, or `lost_in_a_row` actions in a row did)."""

    node_name: str
    reason: str
    since: int
    set_by: str
    lost_in_a_row: int
    # The agent that lists the node now, '' when no agent does (removed, or its agent deleted).
    agent: str = ""


@dataclass(frozen=True)
class Retirement:
    """An administrator's removal of an agent or node (`kind` "agent" or "node") that waits for
    its reservations to end; the scheduler removes it once the last one is gone."""

    kind: str
    name: str
    requested_by: str
    requested_at: int


@dataclass(frozen=True)
class Removal:
    """What a removal request did: `removed` at once, or `waiting_for` these reservations
    (node, owner) to be destroyed first (the agent or node is then retiring)."""

    kind: str
    name: str
    removed: bool
    waiting_for: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class HistoryEntry:
    """An ended reservation (table reservation_history). `ended` says how (lifecycle.Ended),
    `end_reason` why (lifecycle.EndReason), `ended_by` who ('' the clock), `outcome` the final
    state of its last action ('' when nothing ran). Dates are epoch seconds; end_date is when
    the window closed (earlier than planned when it was ended early)."""

    id: int
    node_name: str
    owner: str
    bin: str
    start_date: int
    end_date: int
    environment: str
    outcome: str
    ended: str
    end_reason: str
    ended_by: str
    ended_at: int
    last_error: str


@dataclass(frozen=True)
class PropertySpec:
    """An action property as the agent describes it (DescribeNodeType), constraints included.

    The constraints come from the agent and are untrusted: controller/validation.py applies
    them (`property_problem`) and says which it ignores (`ignored_constraints`)."""

    name: str
    required: bool
    values: list[str]
    secret: bool
    description: str
    # The form's name for the property ("" = name) and what a valid value looks like, in words
    # that follow "must be".
    label: str = ""
    help: str = ""
    # Characters; 0 = no bound.
    min_length: int = 0
    max_length: int = 0
    # Python `re` syntax, matched against the whole value; "" = any.
    pattern: str = ""


@dataclass(frozen=True)
class NodeTypeInfo:
    type: str
    processes: dict[str, list[str]]
    properties: list[PropertySpec]
    final_states: list[str]

    def property(self, name: str) -> PropertySpec | None:
        for spec in self.properties:
            if spec.name == name:
                return spec
        return None


@dataclass(frozen=True)
class Environment:
    name: str
    description: str = ""
    image: str = ""
    size_bytes: int = 0
    default_user: str = ""
    properties: dict[str, str] = field(default_factory=dict)
    agent: str = ""
    type: str = ""


@dataclass(frozen=True)
class AgentCatalog:
    """What an agent told us about itself: its node type and its environments."""

    agent: str
    type: str
    node_type: NodeTypeInfo | None
    environments: list[Environment]


@dataclass(frozen=True)
class ActionState:
    """One node's current action as the agent reports it (GetActionState)."""

    node_name: str
    node_ip: str
    environment: str
    process: str
    state: str
    state_idx: int
    updated_at: int
    progress: int
    state_count: int
    final: bool
    reboots: int = 0
    # 0 from an agent that does not report it; then the other fields must tell actions apart.
    action_id: int = 0
    # Seconds the agent has driven the action, on its monotonic clock; 0 when not reported.
    duration_seconds: float = 0.0
    # The last error the agent's driver reported during this action (why a lost one was lost),
    # one printable line, scrubbed of what looks like a credential (replies.action); '' if none.
    last_error: str = ""

    def fingerprint(self) -> str:
        """Identifies this action at this point of its life: the `baseline` of a schedule row
        (see controller/lifecycle.py for how a restart uses it)."""
        return f"{self.action_id}|{self.process}|{self.state}|{self.state_idx}|{self.updated_at}"


@dataclass(frozen=True)
class NodeOutcome:
    """One finished action of a node as the controller recorded it (table `node_outcome`)."""

    node_name: str
    # The node type (its agent's type) when the action finished.
    type: str
    process: str
    environment: str
    # deployed, rebooted, destroyed or lost.
    final_state: str
    action_id: int
    # Seconds the agent drove the action (its monotonic clock); 0 when it did not say.
    duration_seconds: float
    # Power cycles (hard reboots, power cuts) the agent made for states without progress.
    reboots: int
    # The agent's updated_at of the final state, epoch seconds.
    finished_at: int

    @property
    def succeeded(self) -> bool:
        """True when the action reached its process's final state, not `lost`."""
        return self.final_state != "lost"


@dataclass(frozen=True)
class NodeHealth:
    """A node's recent record: its last `actions` finished actions (at most
    health.OUTCOMES_PER_NODE), how many succeeded and how many power cycles they needed."""

    node_name: str
    actions: int
    successes: int
    reboots: int

    @property
    def success_rate(self) -> float:
        """0..1; 1.0 for a node with no recorded action (nothing against it)."""
        return self.successes / self.actions if self.actions else 1.0

    @property
    def reboots_per_action(self) -> float:
        return self.reboots / self.actions if self.actions else 0.0

    @property
    def score(self) -> float:
        """0..1, higher is healthier: the success rate, divided by 1 + reboots per action (a
        node that deploys, but only after a power cycle each time, ranks below one that needs
        none). What reservations by filter and count prefer."""
        return self.success_rate / (1.0 + self.reboots_per_action)


@dataclass(frozen=True)
class Reservation:
    node_name: str
    owner: str
    bin: str
    start_date: int
    end_date: int
    status: str
    action_state: str
    progress: int
    process: str
    state_idx: int
    state_count: int
    # Out of repr(): they hold os_password.
    properties: dict[str, str] = field(repr=False)
    node_ip: str
    default_user: str
    agent: str
    type: str
    pending: str = ""
    # Why the last action the controller asked for was refused or failed ("deploy refused:
    # property 'os_password' ..."); "" once a later one is accepted.
    last_error: str = ""
    # The required properties not set yet, in the node type's order (the reservation stays
    # configuring until there are none).
    missing: list[str] = field(default_factory=list)
    # The window is over (or it was ended) and the node is being destroyed.
    ending: bool = False
    # What an administrator did to it (moved, ended): shown to the owner.
    notice: str = ""
    # Why its node is in maintenance, '' when it is not: a reservation not started yet waits
    # until an administrator releases the node or moves it.
    node_maintenance: str = ""
    end_reason: str = ""
    # What the agent's driver last reported failing during the current action (why a lost one
    # was lost), '' when nothing did: shown to the owner and administrators.
    action_error: str = ""


@dataclass(frozen=True)
class Busy:
    """A reserved window on the timeline. `owner` is filled in for administrators only; other
    viewers learn that a node is taken, never by whom."""

    node_name: str
    start_date: int
    end_date: int
    mine: bool
    owner: str = ""


@dataclass(frozen=True)
class ScheduleRecord:
    """A schedule row with the scheduler's bookkeeping.

    `pending` is the process the controller intends to start on the node ('' when none). It is
    written before StartAction is called, so a controller killed at any moment finds its
    intention on restart. `pending_issued` says whether StartAction may already have been sent;
    `baseline` is the fingerprint of the node's action on the agent just before it was sent, so
    on restart the controller can tell whether the agent already runs the action (adopt it) or
    not (send it again).
    """

    node_name: str
    owner: str
    bin: str
    start_date: int
    end_date: int
    status: str
    action_state: str
    process: str = ""
    state_idx: int = 0
    state_count: int = 0
    progress: int = 0
    node_ip: str = ""
    action_updated_at: int = 0
    pending: str = ""
    pending_issued: bool = False
    pending_since: int = 0
    baseline: str = ""
    ending: bool = False
    last_error: str = ""
    # Why and by whom it ends, once it does (lifecycle.EndReason; an email, '' for the clock).
    end_reason: str = ""
    ended_by: str = ""
    # The property filter it was reserved with (JSON text), '' when nodes were named: an
    # administrator moving it picks another node matching the same filter.
    request_filter: str = ""
    # What an administrator did to it (moved, ended), shown to the owner on the manage page.
    notice: str = ""
    # The agent's last_error of the node's action (ActionState.last_error), mirrored with it.
    action_error: str = ""

    @property
    def started(self) -> bool:
        """True once an action was ever started (or may have been) for this reservation."""
        return bool(self.action_state or self.pending_issued or self.process)


def overall_progress(state_idx: int, state_count: int, progress: int, final: bool) -> int:
    """0..100 over the whole process: the state's position refined by its own percentage."""
    if final:
        return 100
    if state_count <= 0:
        return 0
    fraction = (state_idx + max(0, min(progress, 100)) / 100.0) / state_count
    return max(0, min(99, int(fraction * 100)))
