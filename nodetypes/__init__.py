"""Node types: per type, its states and processes (states.py), built from the step functions
shared by all types (steps.py) over the drivers' capability interfaces (interfaces.py). Drivers,
`sim` among them, are entry points (drivers.py), no part of a type.

`load_node_type(name)` imports only the type an agent runs; a type checks its states and
processes when it is built, so a malformed one fails at import.
"""

from __future__ import annotations

import importlib

from edgebed.nodetypes.base import NodeType

TYPE_NAMES = ("raspberry", "node", "sensor")


def load_node_type(name: str) -> NodeType:
    if name not in TYPE_NAMES:
        raise ValueError(f"unknown node type {name!r}; known: {', '.join(TYPE_NAMES)}")
    node_type = importlib.import_module(f"edgebed.nodetypes.{name}").NODE_TYPE
    node_type.validate()
    return node_type
