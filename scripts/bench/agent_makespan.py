"""Makespan of N nodes deploying at once over the makespan of one node (goals: <= 1.2 for 100
nodes, <= 1.5 for 500, issue #12), with the realistic simulated durations (boots, image copy at
SD card speed, configuration) scaled down; medians over repeated runs, with the load average.

    .venv/bin/python -m scripts.bench.agent_makespan [--nodes 100 500] [--time-scale 0.01]
        [--type raspberry] [--repeat 3] [--single]

Makespan: from the first start call until the last node is deployed. The deploys start with
StartActions, 1,000 nodes per call (the controller's path), or with `--single` one StartAction
per node. Also prints the agent process's CPU seconds per node deploy (this process holds the
agent and the client). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from edgebed.agent.app import open_agent
from edgebed.agent.settings import AgentSettings
from edgebed.collector import tune_collector
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from scripts.bench.common import AUTH, TOKEN, load, sim_nodes, start_deploys


async def makespan(
    nodes: int, node_type: str, time_scale: float, data: Path, index: int, single: bool
) -> tuple[float, int, float]:
    """(seconds, nodes deployed, CPU seconds of this process meanwhile)."""
    settings = AgentSettings(
        name=f"ms{nodes}", type=node_type, listen="127.0.0.1:0", token=TOKEN,
        database=str(data / f"makespan-{nodes}-{index}.sqlite"), sim_nodes=nodes,
        sim_time_scale=time_scale,
    )
    async with open_agent(settings) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            environment, names = await sim_nodes(stub)
            began, cpu = time.perf_counter(), time.process_time()
            await start_deploys(stub, names, environment, single)
            await agent.executor.wait_idle()
            elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
            states = await stub.GetActionState(pb.GetActionStateRequest(), metadata=AUTH, timeout=10)
    return elapsed, sum(a.state == "deployed" for a in states.actions), cpu



async def run(
    nodes_list: list[int], node_type: str, time_scale: float, repeat: int, single: bool, data: Path
) -> None:
    how = "one StartAction per node" if single else "StartActions"
    print(f"type: {node_type}, time_scale: {time_scale} (durations x {time_scale}), {how}; {load()}")
    ones = [await makespan(1, node_type, time_scale, data, index, single) for index in range(repeat)]
    one = statistics.median(r[0] for r in ones)
    print(f"makespan of 1 node, median of {repeat}: {one:.3f} s ({', '.join(f'{r[0]:.2f}' for r in ones)})")
    goals = {100: " (goal <= 1.2)", 500: " (goal <= 1.5)"}
    for nodes in nodes_list:
        runs = [await makespan(nodes, node_type, time_scale, data, index, single) for index in range(repeat)]
        many = statistics.median(r[0] for r in runs)
        cpu_ms = statistics.median(r[2] for r in runs) / nodes * 1000
        print(
            f"makespan of {nodes} nodes at once, median of {repeat}: {many:.3f} s "
            f"({', '.join(f'{r[0]:.2f} s, {r[1]} deployed' for r in runs)}); ratio {many / one:.2f}"
            f"{goals.get(nodes, '')}; {cpu_ms:.1f} ms CPU per node deploy; {load()}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--time-scale", type=float, default=0.01)
    parser.add_argument("--type", default="raspberry", choices=("raspberry", "node", "sensor"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--single", action="store_true", help="one StartAction per node")
    args = parser.parse_args()
    # As the agent process does (edgebed agent).
    tune_collector()
    with tempfile.TemporaryDirectory() as data:
        asyncio.run(run(args.nodes, args.type, args.time_scale, args.repeat, args.single, Path(data)))


if __name__ == "__main__":
    main()
