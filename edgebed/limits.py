"""The size limits of the agent contract (protos/edgebed/v1/agent.proto), shared by both sides.

An agent refuses (INVALID_ARGUMENT) a node or an environment beyond these limits, and one that
would make GetNodes or ListEnvironments larger than REPLY_BUDGET_BYTES, so that none of its
replies can exceed what the controller receives (RECEIVE_LIMIT_BYTES). The controller checks
every reply against the same limits where it enters (controller/replies.py) and refuses one
that breaks them, whatever the agent's version. Lengths are in characters (Python `len`, what
PostgreSQL's varchar(n) counts) unless the name says bytes.

The `*_bound` functions give an upper bound of a value's protobuf encoding inside its reply,
from the plain values (the agent's service layer knows no protobuf): every string counts 6
bytes of tag and length besides its UTF-8 bytes, every message and map entry 6 bytes more.
"""

from __future__ import annotations

from collections.abc import Mapping

# gRPC's default maximum received message size; the controller's channels keep it.
RECEIVE_LIMIT_BYTES = 4 * 1024 * 1024
# What GetNodes, and ListEnvironments, may hold: 1 MiB below the receive limit, which leaves
# room for what the bound does not count (the response's own framing, a rename racing an add).
REPLY_BUDGET_BYTES = 3 * 1024 * 1024

# Node, environment and property names (the store's name columns hold 64 characters).
MAX_NAME = 64
# Nodes one agent manages (the sim driver's `nodes` setting has the same cap).
MAX_NODES = 10_000
# Properties of one node or one environment.
MAX_PROPERTIES = 64
# Characters of one property value (node or environment property).
MAX_PROPERTY_VALUE = 4096
# Environments one agent offers.
MAX_ENVIRONMENTS = 200
# Items of one StartActions call (the controller splits a larger batch).
MAX_START_ACTIONS = 1000
# Characters of an environment's description, image (path or URL) and default user.
MAX_DESCRIPTION = 4096
MAX_IMAGE = 1024
MAX_DEFAULT_USER = 64
# Characters of an action's last_error (ActionState.last_error): one line for people.
MAX_LAST_ERROR = 1024
# An image size: an exact integer in JSON and in a browser (2**53 - 1 bytes, 8 PiB).
MAX_SIZE_BYTES = 2**53 - 1

_STRING = 6
_MESSAGE = 6


def _text(value: str) -> int:
    return _STRING + len(value.encode("utf-8", "surrogatepass"))


def properties_bound(properties: Mapping[str, str]) -> int:
    """Bytes of a map<string, string> field, at most."""
    return sum(_MESSAGE + _text(key) + _text(value) for key, value in properties.items())


def node_bound(name: str, properties: Mapping[str, str]) -> int:
    """Bytes one Node takes in GetNodesResponse, at most."""
    return _MESSAGE + _text(name) + properties_bound(properties)


def environment_bound(
    name: str, description: str, image: str, default_user: str, properties: Mapping[str, str]
) -> int:
    """Bytes one Environment takes in ListEnvironmentsResponse, at most (size_bytes included)."""
    texts = sum(_text(value) for value in (name, description, image, default_user))
    return _MESSAGE + texts + 11 + properties_bound(properties)
