"""What every node type is made of: processes of states, step functions, action properties.

A node type package (raspberry, node, sensor) describes its processes in states.py, implements the
step functions in steps.py against its own driver interface (driver.py), and offers a `sim`
driver (sim.py). The agent's executor only knows the types below, so a new driver or a new node
type never touches it.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# An action that reaches one of these stays there until the next action on the node replaces it.
FINAL_STATES = ("deployed", "rebooted", "destroyed", "lost")
LOST = "lost"

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class DriverError(Exception):
    """A hardware operation failed (switch unreachable, SSH refused, ...). The executor retries the
    step until the state's timeouts decide on a hard reboot or on `lost`."""


class DriverUnavailable(Exception):
    """The configuration asks for a driver that this installation does not have."""


@dataclass(frozen=True)
class StateSpec:
    """One state of a process. Timeouts in seconds; 0 means none."""

    name: str
    # Seconds without progress before the node is hard rebooted and the state is tried again.
    before_reboot: float = 0
    # Seconds in this state before the action is given up as lost.
    lost: float = 0


@dataclass(frozen=True)
class Process:
    name: str
    states: tuple[StateSpec, ...]

    @property
    def state_names(self) -> list[str]:
        return [state.name for state in self.states]

    @property
    def final_state(self) -> str:
        return self.states[-1].name


def process(name: str, *states: StateSpec) -> Process:
    if not states or states[-1].name not in FINAL_STATES:
        raise ValueError(f"process {name!r} must end with one of {FINAL_STATES}")
    for state in states[:-1]:
        if state.name in FINAL_STATES:
            raise ValueError(f"process {name!r}: final state {state.name!r} before the end")
    return Process(name, tuple(states))


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

    @property
    def hardware_id(self) -> str:
        # Hardware is identified by its serial number when it has one, so that renaming a node
        # in the inventory does not make it another machine.
        return self.properties.get("serial") or self.name


@dataclass(frozen=True)
class Poll:
    """What a `post` step function reports each time it is polled."""

    done: bool
    # Percent of the state's work done (the image copy), None when the state has no measure.
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


def ssh_answers(system: str) -> "PollFunction":
    """The `post` of a state that waits for SSH on `system` (a maintenance or the installed one);
    the driver (any with ssh_system and seconds_until_ssh) tells when a boot should be over."""

    async def post(ctx: "StepContext") -> Poll:
        if await ctx.driver.ssh_system(ctx.node) == system:
            return DONE
        return Poll(done=False, retry_after=ctx.driver.seconds_until_ssh(ctx.node))

    return post


async def poll_copy(ctx: "StepContext", status: CopyStatus, restart: Callable[[], Awaitable[None]]) -> Poll:
    """The `post` of every copy-like state: done, progressing, or died (the SSH session went with
    a restart or a reboot) and started again."""
    if status.done:
        return DONE
    if not status.running:
        await restart()
        return Poll(done=False, progress=0)
    return Poll(done=False, progress=status.percent, retry_after=status.eta)


@dataclass(frozen=True)
class StepContext:
    """What a step function gets: the node, the action's inputs, the driver."""

    node: NodeRef
    process: str
    environment: Environment | None
    # The action properties the user set (ssh_key, os_password, partition_size, ...); out of
    # repr() because of the password.
    properties: Mapping[str, str] = field(repr=False)
    driver: Any

    def prop(self, name: str, default: str = "") -> str:
        return self.properties.get(name) or default

    def hostname(self) -> str:
        """The deployed system's host name: the user's, else the node name made host-safe."""
        return self.prop("hostname", self.node.name.replace(".", "-").replace("_", "-"))


StepFunction = Callable[[StepContext], Awaitable[None]]
PollFunction = Callable[[StepContext], Awaitable[Poll]]


@dataclass(frozen=True)
class Step:
    """`exec` runs once when the state is entered (again after a hard reboot or an agent restart,
    which is why it must be idempotent); `post` is polled until it reports done."""

    exec: StepFunction | None = None
    post: PollFunction | None = None


@dataclass(frozen=True)
class PropertySpec:
    """An action property users set before a deploy (DescribeNodeType)."""

    name: str
    required: bool = False
    values: tuple[str, ...] = ()
    secret: bool = False
    description: str = ""
    # Returns what is wrong with a value, or None. `values`, when set, is checked first.
    check: Callable[[str], str | None] | None = None

    def problem(self, value: str) -> str | None:
        if self.values and value not in self.values:
            shown = "<hidden>" if self.secret else repr(value)
            return f"property {self.name!r} must be one of {', '.join(self.values)}; got {shown}"
        if self.check is not None:
            problem = self.check(value)
            if problem:
                return f"property {self.name!r} {problem}"
        return None


@dataclass(frozen=True)
class NodeType:
    name: str
    processes: Mapping[str, Process]
    steps: Mapping[str, Step]
    # The action properties besides `environment`, which every type requires.
    properties: tuple[PropertySpec, ...]
    default_environments: tuple[Environment, ...]
    sim_node_properties: Callable[[int], dict[str, str]]
    # driver name -> factory(options) returning the driver; options hold the [sim] settings.
    drivers: Mapping[str, Callable[..., Any]]
    # A one-line note shown when a configured driver is missing.
    driver_note: str = ""

    def property_specs(self, environment_names: list[str]) -> list[PropertySpec]:
        environment = PropertySpec(
            name="environment",
            required=True,
            values=tuple(environment_names),
            description="The image or firmware to deploy",
        )
        return [environment, *self.properties]

    def validate(self) -> None:
        for proc in self.processes.values():
            for state in proc.states[:-1]:
                if state.name not in self.steps:
                    raise ValueError(f"{self.name}: state {state.name!r} has no step")


# Checks shared by several node types.


def check_ssh_keys(value: str) -> str | None:
    lines = [line.strip() for line in value.splitlines() if line.strip()]
    if not lines:
        return "must hold at least one public key"
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or not re.match(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+)$", parts[0]):
            return "must be OpenSSH public keys ('ssh-ed25519 AAAA... comment'), one per line"
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            return "has a key whose base64 part does not decode"
        if len(blob) < 16:
            return "has a key that is too short"
    return None


def check_password(value: str) -> str | None:
    if not 8 <= len(value) <= 128:
        return "must be 8 to 128 characters long"
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        return "must not contain control characters"
    return None


def check_hostname(value: str) -> str | None:
    if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$", value):
        return "must be a host name: letters, digits and '-', at most 63 characters"
    return None


def check_ip(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"must be an IP address, got {value!r}"
    return None
