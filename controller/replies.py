"""Checks of what agents answer, where it enters the controller.

An agent is another program on another machine, maybe of another version, maybe broken: what it
answers is input, checked like a user's form before any of it reaches the services or the
store. The agent client (controller/agent_client.py) converts each reply to domain values and
passes them through the function here for that reply; a reply that fails a check is refused
whole (BadReply), nothing of it is stored, and the client's call observer puts the reason in the
agent's last_error ("bad reply to GetActionState: ...").

What is checked: names (the whole string: letters, digits, '-', '_', '.'), lengths (the store's
column sizes below, and the contract's limits in edgebed.limits, which agents enforce on what
they accept), ranges (progress 0..100, state_idx within its process, non-negative counts, dates
and durations), an action's last_error (one printable line of at most 1,024 characters, with
what looks like a credential scrubbed), counts, duplicates, and every action's state against the agent's node type
description (DescribeNodeType): a state must be the one at `state_idx` of its process, or a
final state.

Messages name the field and say what is wrong with its value, showing at most SHOWN characters
of it: a reply of megabytes never ends up in a log line or a last_error.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Collection, Iterable, Mapping, Sequence, Sized

from edgebed import limits, redact
from edgebed.controller.domain import ActionState, Environment, NodeTypeInfo, PropertySpec
from edgebed.controller.errors import BadReply
from edgebed.controller.validation import NAME_PATTERN

# The store's columns (controller/store/models.py) that replies are written to; a test checks
# that these agree with the models.
MAX_NODE_NAME = 64  # node.name, schedule.node_name
MAX_TYPE_NAME = 32  # agent.type, agent_catalog.type
MAX_PROCESS_NAME = 32  # schedule.process, schedule.pending
MAX_STATE_NAME = 64  # schedule.action_state
MAX_NODE_IP = 255  # schedule.node_ip
MAX_PROPERTY_NAME = 64  # action_prop.prop_name
INT32_MAX = 2**31 - 1  # schedule.state_idx, state_count, progress: IntegerField, int4 on PostgreSQL
# Dates in epoch seconds: the range validation.epoch_seconds takes from users.
MAX_EPOCH = 2**40
INT64_MAX = 2**63 - 1
# An action's duration: a year is far beyond any state's `lost` timeout.
MAX_DURATION_SECONDS = 366 * 86400

# DescribeNodeType: far above what any node type declares, small enough for the pages.
MAX_PROCESSES = 16
MAX_STATES = 256  # per process
MAX_FINAL_STATES = 16
MAX_PROPERTY_SPECS = 64
# The values a property may take; "environment" lists every environment's name.
MAX_SPEC_VALUES = limits.MAX_ENVIRONMENTS + 56
MAX_SPEC_DESCRIPTION = 1024
# A property's label (one line) and help text. Its pattern is refused beyond MAX_SPEC_PATTERN
# characters; one of fewer characters that the controller cannot apply (longer than
# edgebed.constraints.MAX_PATTERN_LENGTH, or unbounded) is kept and ignored, as
# controller/validation.py says in the agent's last_error. Length bounds beyond any value the
# controller stores are refused.
MAX_SPEC_LABEL = 256
MAX_SPEC_HELP = 1024
MAX_SPEC_PATTERN = 4096
MAX_SPEC_LENGTH_BOUND = INT32_MAX

# Characters of an offending value shown in a message.
SHOWN = 40


def shown(value: str) -> str:
    """`value` for a message: its repr, cut after SHOWN characters with its length said."""
    if len(value) <= SHOWN:
        return repr(value)
    return f"{value[:SHOWN]!r}... ({len(value)} characters)"


def _name(value: str, field: str, maximum: int = limits.MAX_NAME) -> str:
    if len(value) > maximum:
        raise BadReply(f"{field} has {len(value)} characters, more than {maximum}")
    if not _is_name(value):
        raise BadReply(f"{field} {shown(value)} is not a name (letters, digits, '-', '_' or '.')")
    return value


@functools.lru_cache(maxsize=65536)
def _is_name(value: str) -> bool:
    """Cached (for values within a name's length only, so the cache stays small): a controller
    checks the same node, process and state names in every poll of every agent, 20,000 actions a
    poll at testbed scale."""
    return NAME_PATTERN.fullmatch(value) is not None


def _text(value: str, field: str, maximum: int, *, line: bool) -> str:
    """At most `maximum` characters without NUL (PostgreSQL cannot store it); a `line` has no
    control characters at all."""
    if len(value) > maximum:
        raise BadReply(f"{field} has {len(value)} characters, more than {maximum}")
    if "\x00" in value:
        raise BadReply(f"{field} contains a NUL character")
    if line and not value.isprintable():
        raise BadReply(f"{field} {shown(value)} contains control characters")
    return value


def _number(value: int, field: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise BadReply(f"{field} is {value}, not between {low} and {high}")
    return value


def _count(items: Sized, field: str, maximum: int) -> None:
    if len(items) > maximum:
        raise BadReply(f"{field}: {len(items)} of them, more than {maximum}")


def _distinct(names: Iterable[str], field: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise BadReply(f"{field} {shown(name)} appears twice")
        seen.add(name)


def _properties(properties: Mapping[str, str], field: str) -> dict[str, str]:
    _count(properties, f"{field} properties", limits.MAX_PROPERTIES)
    for key, value in properties.items():
        _name(key, f"{field} property name", MAX_PROPERTY_NAME)
        _text(value, f"{field} property {key}", limits.MAX_PROPERTY_VALUE, line=False)
    return dict(properties)


# -- GetNodes ----------------------------------------------------------------------------------


def nodes(items: Sequence[tuple[str, Mapping[str, str]]]) -> dict[str, dict[str, str]]:
    """GetNodes: the (name, properties) of every node, in the reply's order; {name: properties}."""
    _count(items, "nodes", limits.MAX_NODES)
    _distinct((name for name, _ in items), "node")
    result: dict[str, dict[str, str]] = {}
    for index, (name, properties) in enumerate(items):
        _name(name, f"node {index + 1}: name", MAX_NODE_NAME)
        result[name] = _properties(properties, f"node {name}:")
    return result


# -- DescribeNodeType --------------------------------------------------------------------------


def _spec(spec: PropertySpec) -> PropertySpec:
    field = f"property {spec.name}:"
    _count(spec.values, f"{field} values", MAX_SPEC_VALUES)
    for value in spec.values:
        _text(value, f"{field} value", limits.MAX_PROPERTY_VALUE, line=True)
    _text(spec.description, f"{field} description", MAX_SPEC_DESCRIPTION, line=False)
    _text(spec.label, f"{field} label", MAX_SPEC_LABEL, line=True)
    _text(spec.help, f"{field} help", MAX_SPEC_HELP, line=False)
    _text(spec.pattern, f"{field} pattern", MAX_SPEC_PATTERN, line=False)
    _number(spec.min_length, f"{field} min_length", 0, MAX_SPEC_LENGTH_BOUND)
    _number(spec.max_length, f"{field} max_length", 0, MAX_SPEC_LENGTH_BOUND)
    return spec


def node_type(
    type_: str,
    processes: Sequence[tuple[str, Sequence[str]]],
    properties: Sequence[PropertySpec],
    final_states: Sequence[str],
) -> NodeTypeInfo:
    """DescribeNodeType: the type, each process's (name, states) in the reply's order, the
    property specs and the final states; the NodeTypeInfo they make."""
    _name(type_, "type", MAX_TYPE_NAME)
    _count(final_states, "final_states", MAX_FINAL_STATES)
    for state in final_states:
        _name(state, "final state", MAX_STATE_NAME)
    if not processes:
        raise BadReply("processes: there are none")
    _count(processes, "processes", MAX_PROCESSES)
    _distinct((name for name, _ in processes), "process")
    for name, states in processes:
        _name(name, "process name", MAX_PROCESS_NAME)
        if not states:
            raise BadReply(f"process {name}: it has no states")
        _count(states, f"process {name}: states", MAX_STATES)
        for state in states:
            _name(state, f"process {name}: state", MAX_STATE_NAME)
        if states[-1] not in final_states:
            raise BadReply(f"process {name}: its last state {states[-1]} is not a final state")
    _count(properties, "properties", MAX_PROPERTY_SPECS)
    for spec in properties:
        _name(spec.name, "property name", MAX_PROPERTY_NAME)
    _distinct((spec.name for spec in properties), "property")
    return NodeTypeInfo(
        type=type_,
        processes={name: list(states) for name, states in processes},
        properties=[_spec(spec) for spec in properties],
        final_states=list(final_states),
    )


# -- ListEnvironments, PutEnvironment ----------------------------------------------------------


def environment(env: Environment) -> Environment:
    """One environment (PutEnvironment's answer, or one of ListEnvironments)."""
    _name(env.name, "environment name")
    field = f"environment {env.name}:"
    _text(env.description, f"{field} description", limits.MAX_DESCRIPTION, line=False)
    _text(env.image, f"{field} image", limits.MAX_IMAGE, line=True)
    _text(env.default_user, f"{field} default_user", limits.MAX_DEFAULT_USER, line=True)
    _number(env.size_bytes, f"{field} size_bytes", 0, limits.MAX_SIZE_BYTES)
    _properties(env.properties, field)
    return env


def environments(envs: Sequence[Environment]) -> list[Environment]:
    """ListEnvironments."""
    _count(envs, "environments", limits.MAX_ENVIRONMENTS)
    for env in envs:
        _name(env.name, "environment name")
    _distinct((env.name for env in envs), "environment")
    return [environment(env) for env in envs]


# -- GetActionState, StartAction ---------------------------------------------------------------


def action(state: ActionState, described: NodeTypeInfo) -> ActionState:
    """One node's action, checked against the agent's node type description: its process is one
    of the type's, `state_count` that process's length, `state_idx` within it, and `state` the
    state at `state_idx`, or a final state (an action is lost in whatever state it was).
    Returns the action to keep: `state`, or a copy whose last_error is scrubbed."""
    _name(state.node_name, "action: node name", MAX_NODE_NAME)
    try:
        _checked_action(state, described)
    except BadReply as exc:
        # The node's name prefixes each message; built only for a refusal (this runs for every
        # action of every poll).
        raise BadReply(f"action of node {state.node_name}: {exc}") from None
    if not state.last_error:
        return state
    # Shown to the owner and administrators: whatever looks like a credential goes, whatever
    # the agent's version scrubbed (the agent also hides the action's secret values).
    scrubbed = redact.scrub(state.last_error)
    return state if scrubbed == state.last_error else dataclasses.replace(state, last_error=scrubbed)


def _checked_action(state: ActionState, described: NodeTypeInfo) -> None:
    """action()'s checks after the node's name; BadReply without the node's name."""
    _name(state.process, "process", MAX_PROCESS_NAME)
    _name(state.state, "state", MAX_STATE_NAME)
    if state.environment:
        _name(state.environment, "environment")
    if state.node_ip:
        _text(state.node_ip, "node_ip", MAX_NODE_IP, line=True)
        if any(char.isspace() for char in state.node_ip):
            raise BadReply(f"node_ip {shown(state.node_ip)} contains spaces")
    _number(state.progress, "progress", 0, 100)
    _number(state.reboots, "reboots", 0, INT32_MAX)
    _number(state.updated_at, "updated_at", 0, MAX_EPOCH)
    _number(state.action_id, "action_id", 0, INT64_MAX)
    if not (math.isfinite(state.duration_seconds) and 0 <= state.duration_seconds <= MAX_DURATION_SECONDS):
        raise BadReply(f"duration_seconds is {state.duration_seconds}, not between 0 and {MAX_DURATION_SECONDS}")
    states = described.processes.get(state.process)
    if states is None:
        raise BadReply(f"process {state.process} is not one of its node type's ({', '.join(described.processes)})")
    if state.state_count != len(states):
        raise BadReply(f"state_count is {state.state_count}, but {state.process} has {len(states)} states")
    _number(state.state_idx, "state_idx", 0, len(states) - 1)
    final = state.state in described.final_states
    if state.state != states[state.state_idx] and not final:
        raise BadReply(
            f"state {state.state} is not state {state.state_idx} of {state.process} "
            f"({states[state.state_idx]}) nor a final state"
        )
    if state.final != final:
        raise BadReply(f"final is {state.final}, but {state.state} is {'' if final else 'not '}final")
    if state.last_error:
        _text(state.last_error, "last_error", limits.MAX_LAST_ERROR, line=True)


def actions(
    reported: Sequence[ActionState], described: NodeTypeInfo, asked: Collection[str]
) -> dict[str, ActionState]:
    """GetActionState for the nodes `asked` (every node when empty): {node name: action}; a
    node reported that was not asked for, or twice, fails the reply."""
    _distinct((a.node_name for a in reported), "action of node")
    result: dict[str, ActionState] = {}
    for state in reported:
        state = action(state, described)
        if asked and state.node_name not in asked:
            raise BadReply(f"action of node {state.node_name}: that node was not asked for")
        result[state.node_name] = state
    return result


def started(state: ActionState, described: NodeTypeInfo, node: str, process: str) -> ActionState:
    """StartAction's answer for `process` on `node`: the new action, of that node and process."""
    state = action(state, described)
    if state.node_name != node:
        raise BadReply(f"action: it is of node {state.node_name}, not of {node}")
    if state.process != process:
        raise BadReply(f"action of node {node}: its process is {state.process}, not {process}")
    return state


# -- what the database refused -----------------------------------------------------------------

# The beginning of an agent's last_error when the database refused to store what it reported:
# written and cleared by whoever writes that agent's data (the scheduler, the inventory).
NOT_STORED_PREFIX = "not stored: "


def not_stored(what: str, exc: BaseException) -> str:
    """The agent's last_error when the database refused `what` (e.g. "its nodes"): the error's
    class and the first line of its message (PostgreSQL puts the offending values on later
    lines), at most 300 characters."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{NOT_STORED_PREFIX}{what}: {type(exc).__name__}: {first}"[:300]


def is_not_stored(text: str, what: str) -> bool:
    """Whether an agent's last_error is the one not_stored(what, ...) wrote."""
    return text.startswith(f"{NOT_STORED_PREFIX}{what}:")
