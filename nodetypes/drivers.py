"""Drivers are found through entry points, so one can be added without editing `nodetypes`.

An installed distribution offers a driver for a node type with an entry point in the group
`edgebed.drivers`, named `<node type>.<driver name>` and naming a `DriverPlugin`:

    [project.entry-points."edgebed.drivers"]
    "raspberry.sim" = "edgebed.nodetypes.sim.raspberry:PLUGIN"

The agent's `driver` setting picks the driver name; `load_driver` finds the plugin, and the agent
checks the driver it creates against the interfaces the node type's steps need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from edgebed.nodetypes.base import DriverUnavailable
from edgebed.nodetypes.interfaces import Driver
from edgebed.nodetypes.sim.hardware import SimOptions

ENTRY_POINT_GROUP = "edgebed.drivers"


@dataclass(frozen=True)
class DriverPlugin:
    """What an `edgebed.drivers` entry point names."""

    node_type: str
    name: str
    # Builds the driver at agent start-up. The options carry the [sim] settings and the state
    # the driver saved in the agent's store during earlier runs.
    create: Callable[[SimOptions], Driver]
    # Properties of the index-th node (1, 2, ...) the agent puts in its inventory on its very
    # first start ([sim] nodes): made-up machines for the simulation. None: the driver creates
    # no nodes; an administrator adds the real ones.
    node_properties: Callable[[int], dict[str, str]] | None = None


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
