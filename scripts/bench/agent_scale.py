"""One agent, many simulated raspberry nodes deploying at once: how many end `deployed` and how
many `lost`, the makespan, the step gap (real time from one step's end to the next one's start:
the commit between them), committed transitions per second, CPU seconds of this process (agent
and client) per node, and how late the event loop wakes a 10 ms sleep (the part of every gap the
loop itself adds); medians over repeated runs, with the load average (the machine is shared).

    .venv/bin/python -m scripts.bench.agent_scale [--nodes 1000 5000] [--time-scale 0]
        [--repeat 5] [--single]

Each run is a fresh agent in this process (SQLite in a temporary folder). The deploys are started
with StartActions in calls of at most 1,000 nodes sent together (the controller's path), or with
`--single` one StartAction per node, all at once (the grpcurl path). Goals (issue #12): at
time_scale 0, 5,000 nodes all `deployed` in 5 runs of 5; at time_scale 0.01, step gap p95 <= 50 ms
with 1,000 nodes. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
from scripts.bench.common import AUTH, BATCH, TOKEN, load, percentile, start_deploys


async def one_run(nodes: int, time_scale: float, single: bool, data: Path, index: int) -> dict:
    settings = AgentSettings(
        name=f"scale{index}", type="raspberry", listen="127.0.0.1:0", token=TOKEN,
        database=str(data / f"scale-{nodes}-{index}.sqlite"), sim_nodes=nodes,
        sim_time_scale=time_scale,
    )
    gaps: list[float] = []
    lags: list[float] = []

    async def loop_lag() -> None:
        # How late a 10 ms sleep wakes: the event loop's own delay, which every gap includes.
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - before - 0.01)

    async with open_agent(settings) as agent:
        agent.executor.on_step_gap = gaps.append
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            environment = (await stub.ListEnvironments(
                pb.ListEnvironmentsRequest(), metadata=AUTH, timeout=10)).environments[0].name
            names = [n.name for n in (await stub.GetNodes(pb.GetNodesRequest(), metadata=AUTH, timeout=10)).nodes]
            began, cpu = time.perf_counter(), time.process_time()
            lagging = asyncio.ensure_future(loop_lag())
            refused = await start_deploys(stub, names, environment, single)
            started = time.perf_counter()
            await agent.executor.wait_idle()
            ended, cpu = time.perf_counter(), time.process_time() - cpu
            lagging.cancel()
            states = await stub.GetActionState(pb.GetActionStateRequest(), metadata=AUTH, timeout=30)
        entered = [t for t in await agent.db(agent.store.transitions) if t.event == "enter"]
    return {
        "deployed": sum(a.state == "deployed" for a in states.actions),
        "lost": sum(a.state == "lost" for a in states.actions),
        "refused": len(refused),
        "first_refusal": refused[0] if refused else "",
        "start_seconds": started - began,
        "makespan": ended - began,
        "gap_p50": percentile(gaps, 0.5) * 1000,
        "gap_p95": percentile(gaps, 0.95) * 1000,
        "transitions_per_second": len(entered) / (ended - began),
        "lag_p95": percentile(lags, 0.95) * 1000,
        "cpu_ms_per_node": cpu / nodes * 1000,
        "load": os.getloadavg()[0],
    }


async def run(nodes_list: list[int], time_scale: float, repeat: int, single: bool, data: Path) -> None:
    how = "one StartAction per node" if single else f"StartActions, {BATCH} nodes per call"
    print(f"raspberry sim nodes at time_scale {time_scale}, started with {how}; {load()}")
    for nodes in nodes_list:
        runs = []
        for index in range(repeat):
            result = await one_run(nodes, time_scale, single, data, index)
            runs.append(result)
            print(
                f"  {nodes} nodes, run {index + 1}/{repeat}: {result['deployed']} deployed, "
                f"{result['lost']} lost, {result['refused']} refused; started in "
                f"{result['start_seconds']:.2f} s, makespan {result['makespan']:.2f} s, step gap "
                f"p50/p95 {result['gap_p50']:.0f}/{result['gap_p95']:.0f} ms, "
                f"{result['transitions_per_second']:,.0f} transitions/s, {result['cpu_ms_per_node']:.1f} ms "
                f"CPU per node, event loop lag p95 {result['lag_p95']:.0f} ms (load {result['load']:.1f})"
                + (f"; first refusal: {result['first_refusal']}" if result["refused"] else "")
            )

        def median(key: str, runs: list[dict] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        complete = sum(r["deployed"] == nodes for r in runs)
        print(
            f"{nodes} nodes: all deployed in {complete} runs of {repeat}; medians: makespan "
            f"{median('makespan'):.2f} s, step gap p50/p95 {median('gap_p50'):.0f}/"
            f"{median('gap_p95'):.0f} ms, {median('transitions_per_second'):,.0f} transitions/s, "
            f"{median('cpu_ms_per_node'):.1f} ms CPU per node, loop lag p95 {median('lag_p95'):.0f} ms, "
            f"lost {median('lost'):.0f}; {load()}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--time-scale", type=float, default=0.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--single", action="store_true", help="one StartAction per node")
    args = parser.parse_args()
    # As the agent process does (edgebed agent).
    tune_collector()
    with tempfile.TemporaryDirectory() as data:
        asyncio.run(run(args.nodes, args.time_scale, args.repeat, args.single, Path(data)))


if __name__ == "__main__":
    main()
