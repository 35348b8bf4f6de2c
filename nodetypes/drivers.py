"""Drivers are found through entry points, so one can be added without editing `nodetypes`.

An installed distribution offers a driver for a node type with an entry point in the group
`edgebed.drivers`, named `<node type>.<driver name>` and naming a `DriverPlugin`:

    [project.entry-points."edgebed.drivers"]
    "raspberry.sim" = "edgebed.nodetypes.sim.raspberry:PLUGIN"

The agent's `driver` setting picks the driver name; `load_driver` finds the plugin, and the agent
checks the driver it creates against the interfaces the node type's steps need.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from edgebed.nodetypes.base import DriverUnavailable
from edgebed.nodetypes.interfaces import Driver
from edgebed.nodetypes.real.boards import SensorRealConfig
from edgebed.nodetypes.real.config import RealConfig, ServerRealConfig
from edgebed.nodetypes.sim.hardware import SimOptions

ENTRY_POINT_GROUP = "edgebed.drivers"

# The checked [real] table of the agent's type (agent/settings.py REAL_TABLES).
RealSettings = RealConfig | ServerRealConfig | SensorRealConfig

# async load(key) -> the value saved under key, or None; async save(key, value). Backed by the
# agent's database; keys are the driver's own ("real.image_sums").
LoadState = Callable[[str], Awaitable[str | None]]
SaveState = Callable[[str, str], Awaitable[None]]


async def _nothing_saved(key: str) -> str | None:
    return None


async def _save_nowhere(key: str, value: str) -> None:
    return None


@dataclass(frozen=True)
class DriverOptions:
    """What a driver factory gets at agent start-up: the agent's settings tables, the driver's
    state from the agent's database, and an exit stack the agent closes when it stops."""

    # The [sim] settings and the simulated machines saved during earlier runs.
    sim: SimOptions = field(default_factory=SimOptions)
    # The checked [real] table of the agent's type; None when the configuration has none.
    real: RealSettings | None = None
    # The agent's name (for what a driver names after it, such as log lines).
    agent_name: str = ""
    load_state: LoadState = _nothing_saved
    save_state: SaveState = _save_nowhere
    # Connections, servers and tasks the driver opens are closed through this stack when the
    # agent stops (push_async_callback); a driver that creates something starts it here.
    closing: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)


# Builds a driver; may be a coroutine function (a driver that starts a server). Raises
# edgebed.config.KeyProblem naming the settings key for what the machine says is wrong (a missing
# key file, a folder that is not there, an address that cannot be served).
CreateDriver = Callable[[DriverOptions], "Driver | Awaitable[Driver]"]

# The properties of a node an administrator adds (AddNode) -> what is wrong with them, or None.
# Gets the same options as `create`, so that it can check names the settings define (switches).
CheckNode = Callable[[DriverOptions, Mapping[str, str]], "str | None"]


@dataclass(frozen=True)
class DriverPlugin:
    """What an `edgebed.drivers` entry point names."""

    node_type: str
    name: str
    # Builds the driver at agent start-up.
    create: CreateDriver
    # Properties of the index-th node (1, 2, ...) the agent puts in its inventory on its very
    # first start ([sim] nodes): made-up machines for the simulation. None: the driver creates
    # no nodes; an administrator adds the real ones.
    node_properties: Callable[[int], dict[str, str]] | None = None
    # Checks a node's properties before AddNode stores them (INVALID_ARGUMENT with the text);
    # None: the agent's own checks only.
    check_node: CheckNode | None = None


def driver_names(node_type: str) -> list[str]:
    """The names of the installed drivers for `node_type`, sorted."""
    prefix = f"{node_type}."
    return sorted(
        point.name[len(prefix):]
        for point in entry_points(group=ENTRY_POINT_GROUP)
        if point.name.startswith(prefix)
    )


def load_driver(node_type: str, name: str) -> DriverPlugin:
    """The plugin of driver `name` for `node_type`. Raises DriverUnavailable when none is
    installed, TypeError when the entry point names something else than a matching plugin."""
    wanted = f"{node_type}.{name}"
    found = [point for point in entry_points(group=ENTRY_POINT_GROUP) if point.name == wanted]
    if not found:
        raise DriverUnavailable(f"no {name!r} driver for {node_type} is installed")
    # Two distributions offering the same name: the first one importlib finds wins, as for
    # console scripts.
    plugin = found[0].load()
    if not isinstance(plugin, DriverPlugin) or (plugin.node_type, plugin.name) != (node_type, name):
        raise TypeError(
            f"entry point {wanted} = {found[0].value} is not the DriverPlugin of {wanted}"
        )
    return plugin
