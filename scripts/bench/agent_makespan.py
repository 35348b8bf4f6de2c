"""Makespan of 100 nodes deploying at once over the makespan of one node (goal <= 1.2), with the
realistic simulated durations (boots, image copy at SD card speed, configuration) scaled down.

    .venv/bin/python -m scripts.bench.agent_makespan [--nodes 100] [--time-scale 0.01] [--type raspberry]

Makespan: from the first StartAction call until the last node is deployed. Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import grpc

from edgebed.agent.app import open_agent
from edgebed.agent.settings import AgentSettings
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc

TOKEN = "bench-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


async def makespan(nodes: int, node_type: str, time_scale: float, data: Path) -> tuple[float, int]:
    settings = AgentSettings(
        name=f"ms{nodes}", type=node_type, listen="127.0.0.1:0", token=TOKEN,
        database=str(data / f"makespan-{nodes}.sqlite"), sim_nodes=nodes,
        sim_time_scale=time_scale,
    )
    async with open_agent(settings) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            environment = (await stub.ListEnvironments(
                pb.ListEnvironmentsRequest(), metadata=AUTH, timeout=10)).environments[0].name
            names = [n.name for n in (await stub.GetNodes(pb.GetNodesRequest(), metadata=AUTH, timeout=10)).nodes]
            began = time.perf_counter()
            await asyncio.gather(*[
                stub.StartAction(
                    pb.StartActionRequest(node_name=name, process="deploy", environment=environment),
                    metadata=AUTH, timeout=60,
                )
                for name in names
            ])
            await agent.executor.wait_idle()
            elapsed = time.perf_counter() - began
            states = await stub.GetActionState(pb.GetActionStateRequest(), metadata=AUTH, timeout=10)
    return elapsed, sum(a.state == "deployed" for a in states.actions)


async def run(nodes: int, node_type: str, time_scale: float, data: Path) -> None:
    one, _ = await makespan(1, node_type, time_scale, data)
    many, deployed = await makespan(nodes, node_type, time_scale, data)
    print(f"type: {node_type}, time_scale: {time_scale} (durations x {time_scale})")
    print(f"makespan of 1 node: {one:.3f} s")
    print(f"makespan of {nodes} nodes at once: {many:.3f} s ({deployed} deployed)")
    print(f"ratio: {many / one:.3f} (goal <= 1.2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--time-scale", type=float, default=0.01)
    parser.add_argument("--type", default="raspberry", choices=("raspberry", "node", "sensor"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        asyncio.run(run(args.nodes, args.type, args.time_scale, Path(data)))


if __name__ == "__main__":
    main()
