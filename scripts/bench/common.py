"""What the agent benchmarks share: the load average line, a percentile, and starting a deploy
on every simulated node the way the controller does (StartActions, 1,000 nodes a call) or the
way a grpcurl user does (one StartAction per node)."""

from __future__ import annotations

import asyncio
import os

from edgebed.v1 import agent_pb2 as pb

TOKEN = "bench-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
# Nodes per StartActions call: the controller's batch.
BATCH = 1000


def load() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def sim_nodes(stub) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    """(the agent's first environment, the names of its nodes)."""
    environments = await stub.ListEnvironments(pb.ListEnvironmentsRequest(), metadata=AUTH, timeout=10)
    environment = environments.environments[0].name
    names = [n.name for n in (await stub.GetNodes(pb.GetNodesRequest(), metadata=AUTH, timeout=10)).nodes]
    return environment, names


async def start_deploys(stub, names: list[str], environment: str, single: bool,  # type: ignore[no-untyped-def]
                        timeout: float = 60) -> list[str]:
    """Starts a deploy on every node: StartActions of BATCH nodes sent together, or with `single`
    one StartAction per node, all at once. The nodes refused, with why."""
    items = [pb.StartActionRequest(node_name=name, process="deploy", environment=environment) for name in names]
    if single:
        results = await asyncio.gather(
            *[stub.StartAction(item, metadata=AUTH, timeout=timeout) for item in items], return_exceptions=True)
        return [f"{name}: {r}" for name, r in zip(names, results, strict=True) if isinstance(r, Exception)]
    replies = await asyncio.gather(*[
        stub.StartActions(pb.StartActionsRequest(actions=items[start : start + BATCH]), metadata=AUTH, timeout=timeout)
        for start in range(0, len(items), BATCH)
    ])
    return [f"{r.node_name}: {r.code} {r.message}" for reply in replies for r in reply.results if r.code]
