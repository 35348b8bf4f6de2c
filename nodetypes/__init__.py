"""Node types: per type, the processes (states.py), step functions, driver interface and sim.

`load_node_type(name)` imports only the type an agent runs.
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
