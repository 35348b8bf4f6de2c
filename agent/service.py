"""The agent's service layer: checks requests, reads the store, hands actions to the executor.

It knows neither protobuf nor Peewee: the servicer (agent.server) converts messages, the store
(agent.store) runs on the database thread behind `DbWorker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from edgebed import limits
from edgebed.agent.dbworker import DbWorker, GroupReader
from edgebed.agent.domain import ActionRecord, ActionView, Environment, NodeRecord
from edgebed.agent.errors import AgentError, Busy, InvalidArgument, NotFound
from edgebed.agent.executor import Executor
from edgebed.agent.store import Store
from edgebed.nodetypes.base import FINAL_STATES, NAME_PATTERN, NodeType, PropertySpec, check_ip

# Every limit on what the agent accepts is in edgebed.limits: what keeps each of its replies
# under the controller's receive limit.
MAX_PROPERTY_VALUE = limits.MAX_PROPERTY_VALUE

# The driver's check of a new node's properties: what is wrong, or None (DriverPlugin.check_node).
NodeCheck = Callable[[Mapping[str, str]], "str | None"]


# Items of one StartActions call (edgebed.v1.StartActionsRequest).
MAX_START_ITEMS = limits.MAX_START_ACTIONS


@dataclass(frozen=True)
class StartItem:
    """One action to start: StartActionRequest's fields."""

    node_name: str
    process: str
    environment: str = ""
    properties: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class StartResult:
    """What one StartItem came to: the new action, or the error StartAction would have raised."""

    node_name: str
    view: ActionView | None = None
    error: AgentError | None = None


@dataclass(frozen=True)
class NodeTypeDescription:
    agent_name: str
    type: str
    processes: Mapping[str, list[str]]
    properties: list[PropertySpec]
    final_states: tuple[str, ...]


def shown(value: str, limit: int = 40) -> str:
    """`value` as repr() for a message, cut after `limit` characters: a refused request's
    message never carries a megabyte back."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def check_name(name: str, what: str = "node name") -> None:
    if not name:
        raise InvalidArgument(f"{what} is empty")
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidArgument(
            f"{what} {shown(name)} is not valid: use letters, digits, '-', '_' and '.', "
            f"at most {limits.MAX_NAME} characters, starting with a letter or digit"
        )


def _check_text(value: str, what: str, maximum: int, *, line: bool) -> None:
    """At most `maximum` characters, no NUL (PostgreSQL cannot store it); a `line` has no
    control characters at all."""
    if len(value) > maximum:
        raise InvalidArgument(f"{what} has {len(value)} characters, more than {maximum}")
    if "\x00" in value:
        raise InvalidArgument(f"{what} contains a NUL character")
    if line and not value.isprintable():
        raise InvalidArgument(f"{what} contains control characters")


def _check_properties(properties: Mapping[str, str], what: str) -> None:
    """Node or environment properties: at most MAX_PROPERTIES, named like nodes, values of at
    most MAX_PROPERTY_VALUE characters without NUL."""
    if len(properties) > limits.MAX_PROPERTIES:
        raise InvalidArgument(
            f"{what} has {len(properties)} properties, more than {limits.MAX_PROPERTIES}"
        )
    for key, value in properties.items():
        if not key or not NAME_PATTERN.fullmatch(key):
            raise InvalidArgument(f"property name {shown(key)} is not valid")
        _check_text(value, f"property {key!r}", MAX_PROPERTY_VALUE, line=False)


def _check_environment(environment: Environment) -> None:
    check_name(environment.name, "environment name")
    if environment.size_bytes < 0:
        raise InvalidArgument("size_bytes must not be negative")
    if environment.size_bytes > limits.MAX_SIZE_BYTES:
        raise InvalidArgument(f"size_bytes must be at most {limits.MAX_SIZE_BYTES}")
    if not environment.image:
        raise InvalidArgument("image is empty: give the image's path or URL on the agent")
    _check_text(environment.image, "image", limits.MAX_IMAGE, line=True)
    _check_text(environment.description, "description", limits.MAX_DESCRIPTION, line=False)
    _check_text(environment.default_user, "default_user", limits.MAX_DEFAULT_USER, line=True)
    if any(char.isspace() for char in environment.default_user):
        raise InvalidArgument("default_user contains spaces")
    _check_properties(environment.properties, f"environment {environment.name!r}")


def _environment_bound(env: Environment) -> int:
    return limits.environment_bound(env.name, env.description, env.image, env.default_user, env.properties)


def _node_bound(node: NodeRecord) -> int:
    return limits.node_bound(node.name, node.properties)


def _check_budget(total: int, what: str, listing: str) -> None:
    """Refuses a change after which `listing` (GetNodes, ListEnvironments) would exceed the
    reply budget."""
    if total > limits.REPLY_BUDGET_BYTES:
        raise InvalidArgument(
            f"{what} would make {listing} take up to {total} bytes, more than the "
            f"{limits.REPLY_BUDGET_BYTES} a controller receives; remove some first"
        )


class _UnknownEnvironment(Exception):
    """A deploy names an environment the store does not hold (the message lists the known ones,
    read once per call)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class AgentService:
    def __init__(
        self,
        *,
        agent_name: str,
        node_type: NodeType,
        store: Store,
        worker: DbWorker,
        executor: Executor,
        reader: DbWorker | None = None,
        check_node: NodeCheck | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent_name = agent_name
        # Stamps what is stored (updated_at, started_at, action ids); never measures a duration.
        self._wall = wall_clock
        self.node_type = node_type
        self._store = store
        self._db = worker
        # Reads that must not wait for a group commit (GetActionState, StartAction's look-ups):
        # a second thread with its own connection, or the writer's when there is none.
        self._read = reader or worker
        # Concurrent StartAction calls share one read of their nodes, actions and environments.
        self._inputs: GroupReader[tuple[str, str], tuple] = GroupReader(
            self._read, self._store.action_inputs_many
        )
        self._executor = executor
        self._check_node = check_node
        # Nodes that a request is changing right now (start, remove, rename): a second request on
        # the same node meanwhile is refused rather than interleaved.
        self._claimed: set[str] = set()
        # Held from the size check of an add, rename or put to its write, so that two requests
        # cannot both pass the check and together exceed the limits.
        self._growing = asyncio.Lock()

    @contextlib.contextmanager
    def _claim(self, *names: str) -> Iterator[None]:
        for name in names:
            if name in self._claimed or self._executor.is_running(name):
                raise Busy(f"node {name!r} is busy with an unfinished action")
        self._claimed.update(names)
        try:
            yield
        finally:
            self._claimed.difference_update(names)

    # Nodes.

    async def get_nodes(self, names: Sequence[str]) -> list[NodeRecord]:
        for name in names:
            check_name(name)
        nodes = await self._read.call(self._store.list_nodes, list(names))
        missing = sorted(set(names) - {node.name for node in nodes})
        if missing:
            raise NotFound(f"no node named {missing[0]!r}")
        return nodes

    async def add_node(self, name: str, properties: Mapping[str, str]) -> NodeRecord:
        check_name(name)
        _check_properties(properties, f"node {name!r}")
        if "ip" not in properties:
            raise InvalidArgument("property 'ip' is missing: every node needs one")
        problem = check_ip(properties["ip"])
        if problem:
            raise InvalidArgument(f"property 'ip' {problem}")
        # The driver's own needs: a real Pi must name its switch, port and serial.
        problem = self._check_node(properties) if self._check_node is not None else None
        if problem:
            raise InvalidArgument(problem)
        node = NodeRecord(name, dict(properties))
        async with self._growing:
            nodes = await self._db.call(self._store.list_nodes, [])
            if len(nodes) >= limits.MAX_NODES:
                raise InvalidArgument(f"this agent has {len(nodes)} nodes, the most it can hold")
            total = sum(map(_node_bound, nodes)) + _node_bound(node)
            _check_budget(total, f"node {name!r}", "GetNodes")
            await self._db.call(self._store.add_nodes, [node])
        return node

    async def remove_node(self, name: str) -> None:
        check_name(name)
        with self._claim(name):
            await self._db.call(self._store.remove_node, name)

    async def rename_node(self, name: str, new_name: str) -> NodeRecord:
        check_name(name)
        check_name(new_name, "new name")
        if new_name == name:
            raise InvalidArgument(f"new name {new_name!r} is the current name")
        with self._claim(name, new_name):
            async with self._growing:
                if len(new_name) > len(name):
                    nodes = await self._db.call(self._store.list_nodes, [])
                    total = sum(map(_node_bound, nodes)) + len(new_name) - len(name)
                    _check_budget(total, f"new name {new_name!r}", "GetNodes")
                return await self._db.call(self._store.rename_node, name, new_name)

    # Environments.

    async def list_environments(self) -> list[Environment]:
        return await self._read.call(self._store.list_environments)

    async def put_environment(self, environment: Environment) -> Environment:
        _check_environment(environment)
        async with self._growing:
            others = [env for env in await self.list_environments() if env.name != environment.name]
            if len(others) >= limits.MAX_ENVIRONMENTS:
                raise InvalidArgument(
                    f"this agent has {len(others)} environments, the most it can hold"
                )
            total = sum(map(_environment_bound, others)) + _environment_bound(environment)
            _check_budget(total, f"environment {environment.name!r}", "ListEnvironments")
            await self._db.call(self._store.put_environments, [environment])
        return environment

    async def remove_environment(self, name: str) -> None:
        check_name(name, "environment name")
        await self._db.call(self._store.remove_environment, name)

    # The node type.

    async def describe(self) -> NodeTypeDescription:
        environments = await self.list_environments()
        return NodeTypeDescription(
            agent_name=self.agent_name,
            type=self.node_type.name,
            processes={name: proc.state_names for name, proc in self.node_type.processes.items()},
            properties=self.node_type.property_specs([env.name for env in environments]),
            final_states=FINAL_STATES,
        )

    # Actions.

    async def start_action(
        self, node_name: str, process: str, environment: str, properties: Mapping[str, str]
    ) -> ActionView:
        """Starts `process` on the node (StartAction); the action in its first state, committed.
        InvalidArgument, NotFound or Busy as the item's checks find (see start_actions)."""
        [result] = await self._start([StartItem(node_name, process, environment, properties)])
        if result.error is not None:
            raise result.error
        assert result.view is not None, "a result without an error has a view"
        return result.view

    async def start_actions(self, items: Sequence[StartItem]) -> list[StartResult]:
        """Starts each item as start_action would (StartActions): one result per item in the
        order of `items`, an item refused with the error start_action would raise, the others
        started in one commit. InvalidArgument for the whole call only when it has more than
        MAX_START_ITEMS items or names a node twice; a failed commit (the store's error) fails
        the whole call, and then none of them started."""
        if len(items) > MAX_START_ITEMS:
            raise InvalidArgument(
                f"{len(items)} actions in one call, more than {MAX_START_ITEMS}: split the call"
            )
        seen: set[str] = set()
        for item in items:
            if item.node_name in seen:
                raise InvalidArgument(f"node {shown(item.node_name)} is named twice")
            seen.add(item.node_name)
        return await self._start(items)

    async def _start(self, items: Sequence[StartItem]) -> list[StartResult]:
        errors: dict[int, AgentError] = {}
        checked: dict[int, StartItem] = {}
        for index, item in enumerate(items):
            try:
                checked[index] = self._checked_item(item)
            except AgentError as exc:
                errors[index] = exc
        claimed: list[int] = []
        try:
            for index, item in checked.items():
                if item.node_name in self._claimed or self._executor.is_running(item.node_name):
                    errors[index] = Busy(f"node {item.node_name!r} is busy with an unfinished action")
                else:
                    self._claimed.add(item.node_name)
                    claimed.append(index)
            keys = [
                (checked[i].node_name, checked[i].environment if checked[i].process == "deploy" else "")
                for i in claimed
            ]
            inputs = await self._inputs.get_many(keys) if keys else []
            records: dict[int, tuple[ActionRecord, NodeRecord]] = {}
            known: list[Environment] | None = None
            for index, (node, previous, spec) in zip(claimed, inputs, strict=True):
                try:
                    records[index] = (self._new_record(checked[index], node, previous, spec), node)
                except _UnknownEnvironment as exc:
                    if known is None:
                        known = await self.list_environments()
                    errors[index] = InvalidArgument(
                        f"unknown environment {shown(exc.name)}; this agent has "
                        f"{', '.join(env.name for env in known) or 'none'}"
                    )
                except AgentError as exc:
                    errors[index] = exc
            if records:
                await self._executor.start_many(
                    [(record, node.ref()) for record, node in records.values()]
                )
        finally:
            self._claimed.difference_update(checked[i].node_name for i in claimed)
        return [
            StartResult(item.node_name, error=errors[index])
            if index in errors
            else StartResult(item.node_name, view=self._view(records[index][0]))
            for index, item in enumerate(items)
        ]

    def _checked_item(self, item: StartItem) -> StartItem:
        """The item's own checks, before any read: its names, process and properties; the item
        with empty properties dropped and the environment taken from either field."""
        check_name(item.node_name)
        processes = self.node_type.processes
        if item.process not in processes:
            raise InvalidArgument(
                f"unknown process {shown(item.process)}; this agent knows {', '.join(processes)}"
            )
        properties = {key: value for key, value in item.properties.items() if value != ""}
        given_environment = properties.pop("environment", "")
        environment = item.environment
        if environment and given_environment and environment != given_environment:
            raise InvalidArgument(
                f"environment {shown(environment)} and property environment "
                f"{shown(given_environment)} disagree"
            )
        environment = environment or given_environment
        self._check_properties(properties)
        return StartItem(item.node_name, item.process, environment, properties)

    def _new_record(
        self,
        item: StartItem,
        node: NodeRecord | None,
        previous: ActionRecord | None,
        spec: Environment | None,
    ) -> ActionRecord:
        """The item's action in the first state of its process, from what the store holds."""
        node_name, process, environment = item.node_name, item.process, item.environment
        if node is None:
            raise NotFound(f"no node named {node_name!r}")
        if previous is not None and not previous.final:
            raise Busy(f"node {node_name!r} is busy: {previous.process} is in state {previous.state!r}")
        if process == "deploy":
            if not environment:
                raise InvalidArgument("environment is empty: deploy needs one")
            if spec is None:
                raise _UnknownEnvironment(environment)
        elif previous is not None:
            # Reboot and destroy act on what was deployed last.
            environment = previous.environment
            spec = previous.environment_spec
        else:
            environment = ""
        first = self.node_type.processes[process].states[0].name
        now = self._wall()
        # Larger than the previous action's id even when the wall clock stepped back: the
        # controller tells a new action from the previous one by it.
        action_id = int(now * 1_000_000)
        if previous is not None and action_id <= previous.action_id:
            action_id = previous.action_id + 1
        return ActionRecord(
            node_name=node_name,
            node_ip=node.properties.get("ip", ""),
            environment=environment,
            process=process,
            state=first,
            state_idx=0,
            updated_at=int(now),
            action_id=action_id,
            started_at=int(now),
            properties=item.properties,
            environment_spec=spec,
        )

    def _check_properties(self, properties: Mapping[str, str]) -> None:
        specs = {spec.name: spec for spec in self.node_type.properties}
        for key, value in properties.items():
            spec = specs.get(key)
            if spec is None:
                known = ", ".join(["environment", *specs])
                raise InvalidArgument(f"unknown property {shown(key)}; {self.node_type.name} nodes take {known}")
            problem = spec.problem(value)
            if problem:
                raise InvalidArgument(problem)

    async def get_action_states(self, names: Sequence[str]) -> list[ActionView]:
        for name in names:
            check_name(name)
        records = await self._read.call(self._store.list_actions, list(names))
        return [self._view(record) for record in records]

    def _view(self, record: ActionRecord) -> ActionView:
        process = self.node_type.processes.get(record.process)
        live = self._executor.live_progress(record.node_name)
        return ActionView(
            record=record,
            progress=record.progress if live is None or record.final else live,
            state_count=len(process.states) if process else 0,
            final=record.final,
        )
