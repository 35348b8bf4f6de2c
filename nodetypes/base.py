"""What every node type is made of: states with their steps and timeouts, processes of those
states, action properties.

A node type package (raspberry, node, sensor) declares each of its states once, in states.py,
with the step it runs (shared step functions, nodetypes/steps.py) and its timeouts, and builds its
processes from those State objects. Steps work through the capability interfaces of
nodetypes/interfaces.py; drivers implementing them (`sim`, later `real`) are found through the
`edgebed.drivers` entry points (nodetypes/drivers.py) and are no part of the type. The agent's
executor only knows the types below, so a new driver or a new node type never touches it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from edgebed.constraints import UnsafePattern, compile_pattern, value_problem

if TYPE_CHECKING:
    # interfaces.py builds on the values below; only the annotations here need it.
    from edgebed.nodetypes.interfaces import Driver

# An action that reaches one of these stays there until the next action on the node replaces it.
FINAL_STATES = ("deployed", "rebooted", "destroyed", "lost")
LOST = "lost"

# Node, environment, property and state names. Always used with fullmatch: `$` would also match
# before a final newline, and "pi-001\n" would pass for a second "pi-001".
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class DriverError(Exception):
    """A hardware operation failed (switch unreachable, SSH refused, ...). The executor retries the
    step until the state's timeouts decide on a hard reboot or on `lost`."""


class DriverUnavailable(Exception):
    """The configuration asks for a driver that this installation does not have."""


@dataclass(frozen=True)
class Environment:
    """An image or firmware that an agent can deploy (the agent's environment table)."""

    name: str
    description: str = ""
    image: str = ""
    size_bytes: int = 0
    default_user: str = ""
    properties: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeRef:
    """The node a step works on: its name and inventory properties (ip, serial, switch_port...)."""

    name: str
    properties: Mapping[str, str]

    @property
    def ip(self) -> str:
        return self.properties.get("ip", "")

    @functools.cached_property
    def hardware_id(self) -> str:
        # Hardware is identified by its serial number when it has one, so that renaming a node
        # in the inventory does not make it another machine. Cached: the sim reads it at every
        # poll, and a NodeRef's properties are not changed after it is made.
        return self.properties.get("serial") or self.name


@dataclass(frozen=True)
class Poll:
    """What a `post` step function reports each time it is polled."""

    done: bool
    # Percent of the state's work done (the image copy), 0..100; None when the state has no
    # measure. Anything else is a driver error, never progress (agent/executor.py).
    progress: int | None = None
    # A hint: poll again after this many seconds (the driver knows when a boot should end).
    retry_after: float | None = None


DONE = Poll(done=True)


@dataclass(frozen=True)
class CopyStatus:
    """Where an image copy, disk write or firmware flash stands."""

    done: bool
    running: bool
    percent: int
    # Seconds until done, None when unknown (stalled, not running, or a driver that cannot tell).
    eta: float | None


@dataclass(frozen=True)
class StepContext:
    """What a step function gets: the node, the action's inputs, the driver."""

    node: NodeRef
    process: str
    environment: Environment | None
    # The action properties the user set (ssh_key, os_password, partition_size, ...); out of
    # repr() because of the password.
    properties: Mapping[str, str] = field(repr=False)
    driver: Driver

    def prop(self, name: str, default: str = "") -> str:
        return self.properties.get(name) or default

    def hostname(self) -> str:
        """The deployed system's host name: the user's, else the node name made host-safe."""
        return self.prop("hostname", self.node.name.replace(".", "-").replace("_", "-"))

    def require_environment(self) -> Environment:
        """The environment the action deploys; DriverError when it has none (the executor then
        retries until the state's timeouts end the action), never a None passed on to a driver."""
        if self.environment is None:
            raise DriverError(f"{self.node.name}: {self.process} has no environment to write")
        return self.environment


StepFunction = Callable[[StepContext], Awaitable[None]]
PollFunction = Callable[[StepContext], Awaitable[Poll]]


@dataclass(frozen=True)
class Step:
    """`exec` runs once when the state is entered (again after a hard reboot or an agent restart,
    which is why it must be idempotent); `post` is polled until it reports done. `needs` names
    the driver interfaces (interfaces.POWER, ...) the functions use."""

    exec: StepFunction | None = None
    post: PollFunction | None = None
    needs: frozenset[str] = frozenset()


class Rung(StrEnum):
    """What the executor does when a state has made no progress for its `before_reboot`
    seconds: one rung of the state's escalation `Ladder`. The value is also the event written to
    the agent's transition log."""

    # Cancel the step and run it again from its exec, without touching the power: a hung SSH
    # session or a lost reply costs a new session, not a reboot.
    RETRY = "retry"
    # The power interface's hard_reboot (a PoE port or a BMC power cycle).
    HARD_REBOOT = "reboot"
    # Power off, wait Ladder.power_cut_seconds, power on: long enough for a board that a short
    # cycle leaves wedged (capacitors, a stuck USB bridge) to lose its state.
    POWER_CUT = "power_cut"


@dataclass(frozen=True)
class Ladder:
    """The escalation of a state that keeps making no progress. The n-th time the state goes
    `before_reboot` seconds without progress the executor takes `rungs[n - 1]`, and once past
    the top the top rung again, until the state has lasted `lost` seconds and the action ends in
    `lost`: the ladder decides what is tried, the state's timeouts still decide when."""

    rungs: tuple[Rung, ...] = (Rung.RETRY, Rung.HARD_REBOOT, Rung.HARD_REBOOT, Rung.POWER_CUT)
    # Seconds (on the executor's clock, so a simulated testbed's are scaled) the power stays off
    # during a POWER_CUT.
    power_cut_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not self.rungs:
            raise ValueError("an escalation ladder needs at least one rung")
        for rung in self.rungs:
            if not isinstance(rung, Rung):
                raise TypeError(f"escalation rung {rung!r} is not a Rung")
        if not self.power_cut_seconds > 0:
            raise ValueError(f"power_cut_seconds must be > 0, got {self.power_cut_seconds!r}")

    def rung(self, stalls: int) -> Rung:
        """The rung for the `stalls`-th stall of a state (1, 2, ...); ValueError below 1."""
        if stalls < 1:
            raise ValueError(f"stalls counts from 1, got {stalls}")
        return self.rungs[min(stalls, len(self.rungs)) - 1]


# Every state's ladder unless its type declares another.
DEFAULT_LADDER = Ladder()


@dataclass(frozen=True)
class State:
    """One state of a node type, declared once with its step and its timeouts (seconds; 0 means
    none). A final state (FINAL_STATES) has no step; every other state must have one."""

    name: str
    step: Step | None = None
    # Seconds without progress before the next rung of `ladder` (a retry, a hard reboot, a
    # power cut) and the state is tried again.
    before_reboot: float = 0
    # Seconds in this state before the action is given up as lost.
    lost: float = 0
    ladder: Ladder = DEFAULT_LADDER

    def __post_init__(self) -> None:
        if not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"state name {self.name!r} is not a name")
        if self.before_reboot < 0 or self.lost < 0:
            raise ValueError(f"state {self.name!r}: timeouts must be >= 0 seconds")
        if not isinstance(self.ladder, Ladder):
            raise TypeError(f"state {self.name!r}: ladder must be a Ladder, got {self.ladder!r}")
        final = self.name in FINAL_STATES
        if final and self.step is not None:
            raise ValueError(f"final state {self.name!r} cannot have a step")
        if not final and self.step is None:
            raise ValueError(f"state {self.name!r} has no step")

    @property
    def final(self) -> bool:
        return self.name in FINAL_STATES


# The final states every process ends with (LOST is reached by a timeout, never by a process).
DEPLOYED = State("deployed")
REBOOTED = State("rebooted")
DESTROYED = State("destroyed")


@dataclass(frozen=True)
class Process:
    name: str
    states: tuple[State, ...]

    @property
    def state_names(self) -> list[str]:
        return [state.name for state in self.states]

    @property
    def final_state(self) -> str:
        return self.states[-1].name


def process(name: str, *states: State) -> Process:
    """A process: `states` in order, the last one final. States are State objects from the
    type's table, never names: a misspelt name would be a new, silently timeout-less state.
    Raises TypeError for a name, ValueError for a final state out of place."""
    for state in states:
        if not isinstance(state, State):
            raise TypeError(
                f"process {name!r}: {state!r} is not a State; declare it in the type's states"
            )
    if not states or not states[-1].final:
        raise ValueError(f"process {name!r} must end with one of {FINAL_STATES}")
    for state in states[:-1]:
        if state.final:
            raise ValueError(f"process {name!r}: final state {state.name!r} before the end")
    return Process(name, tuple(states))


@dataclass(frozen=True)
class PropertySpec:
    """An action property users set before a deploy (DescribeNodeType).

    The declarative constraints (`values`, `min_length`, `max_length`, `pattern`) are sent to
    the controller, which applies them when the user sets the value; the agent applies them
    again at StartAction, with `check` for what they cannot say (SSH keys that decode). `label`
    is the form's name for the property, `help` what a valid value looks like, in words that
    follow "must be" (the message when the pattern does not match). ValueError at definition for a pattern outside
    the subset both sides accept (edgebed/constraints.py) or lengths that contradict.
    """

    name: str
    required: bool = False
    values: tuple[str, ...] = ()
    secret: bool = False
    description: str = ""
    label: str = ""
    help: str = ""
    # Characters; 0 means no bound.
    min_length: int = 0
    max_length: int = 0
    # Python `re` syntax, matched against the whole value.
    pattern: str = ""
    # Returns what is wrong with a value, or None; run after the declarative constraints.
    check: Callable[[str], str | None] | None = None
    _compiled: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.min_length < 0 or self.max_length < 0:
            raise ValueError(f"property {self.name!r}: lengths must be >= 0")
        if self.max_length and self.min_length > self.max_length:
            raise ValueError(f"property {self.name!r}: min_length {self.min_length} > max_length {self.max_length}")
        if self.pattern:
            try:
                compiled = compile_pattern(self.pattern, self.max_length)
            except UnsafePattern as exc:
                raise ValueError(f"property {self.name!r}: pattern {exc}") from None
            object.__setattr__(self, "_compiled", compiled)

    def problem(self, value: str) -> str | None:
        """What is wrong with `value` ("property 'os_password' must be 8 to 128 characters
        long"), or None; a secret value is never repeated."""
        problem = value_problem(
            value,
            values=self.values,
            min_length=self.min_length,
            max_length=self.max_length,
            pattern=self._compiled,
            help=self.help,
            secret=self.secret,
        )
        if problem is None and self.check is not None:
            problem = self.check(value)
        return f"property {self.name!r} {problem}" if problem else None


@dataclass(frozen=True)
class NodeType:
    """A node type: its states (each declared once), the processes made of them, the action
    properties users set and the environments an agent starts with."""

    name: str
    # Every state with a step, each once; processes may only use these (and DEPLOYED, REBOOTED,
    # DESTROYED), the same objects.
    states: tuple[State, ...]
    processes: Mapping[str, Process]
    # The action properties besides `environment`, which every type requires.
    properties: tuple[PropertySpec, ...]
    default_environments: tuple[Environment, ...]
    # The hardware a real driver of this type drives, for the message when it is missing.
    driver_note: str = ""

    def __post_init__(self) -> None:
        self.validate()

    @property
    def needs(self) -> frozenset[str]:
        """The driver interfaces the type's steps use (interfaces.POWER, ...)."""
        return frozenset().union(*(s.step.needs for s in self.states if s.step is not None))

    def property_specs(self, environment_names: list[str]) -> list[PropertySpec]:
        environment = PropertySpec(
            name="environment",
            required=True,
            values=tuple(environment_names),
            description="The image or firmware to deploy",
        )
        return [environment, *self.properties]

    def validate(self) -> None:
        """Raises ValueError when a process uses a state the type does not declare (or another
        object of the same name), a state is declared twice, or a declared state is in no
        process: each would be a typo that runs with the wrong step or timeouts."""
        declared: dict[str, State] = {}
        for state in self.states:
            if state.final:
                raise ValueError(f"{self.name}: final state {state.name!r} is not declared")
            if state.name in declared:
                raise ValueError(f"{self.name}: state {state.name!r} is declared twice")
            declared[state.name] = state
        used: set[str] = set()
        for key, proc in self.processes.items():
            if key != proc.name:
                raise ValueError(f"{self.name}: process {proc.name!r} is filed as {key!r}")
            for state in proc.states[:-1]:
                if declared.get(state.name) is not state:
                    raise ValueError(
                        f"{self.name}: process {proc.name!r} uses state {state.name!r}, "
                        "which is not one of the type's declared states"
                    )
                used.add(state.name)
        unused = [name for name in declared if name not in used]
        if unused:
            raise ValueError(f"{self.name}: states {', '.join(unused)} are in no process")


# Checks shared by several node types.


def check_ssh_keys(value: str) -> str | None:
    lines = [line.strip() for line in value.splitlines() if line.strip()]
    if not lines:
        return "must hold at least one public key"
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or not re.fullmatch(r"ssh-(ed25519|rsa|dss)|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+", parts[0]):
            return "must be OpenSSH public keys ('ssh-ed25519 AAAA... comment'), one per line"
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            return "has a key whose base64 part does not decode"
        if len(blob) < 16:
            return "has a key that is too short"
    return None


def check_ip(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"must be an IP address, got {value!r}"
    return None


# Host names of the deployed systems: one DNS label (RFC 1123).
HOSTNAME_PATTERN = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# Anything but ASCII control characters, which a password prompt or chpasswd would mangle.
NO_CONTROL_CHARACTERS = r"[^\x00-\x1f\x7f]*"


def installed_system_properties(
    partition_sizes: tuple[str, ...], storage: str
) -> tuple[PropertySpec, ...]:
    """The action properties of a type that writes a whole system and sets it up (raspberry,
    node): SSH keys, password, root partition size (`partition_sizes`, 'full' first: the whole
    `storage`, e.g. 'SD card') and host name."""
    return (
        PropertySpec("ssh_key", label="SSH public keys",
                     description="SSH public keys for the default user, one per line",
                     help="OpenSSH public keys ('ssh-ed25519 AAAA... comment'), one per line",
                     max_length=16384, check=check_ssh_keys),
        PropertySpec("os_password", secret=True, label="Password of the default user",
                     description="Password of the default user (8 to 128 characters)",
                     help="8 to 128 characters without control characters",
                     min_length=8, max_length=128, pattern=NO_CONTROL_CHARACTERS),
        PropertySpec("partition_size", values=partition_sizes, label="Root partition size",
                     description=f"Size of the root partition; full uses the whole {storage}"),
        PropertySpec("hostname", label="Host name",
                     description="Host name of the deployed system (default: the node name)",
                     help=("a host name: letters, digits and '-', at most 63 characters, "
                           "not starting or ending with '-'"),
                     max_length=63, pattern=HOSTNAME_PATTERN),
    )
