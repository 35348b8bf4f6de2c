"""Committed state transitions per second: 1000 simulated raspberry nodes deploying at once with
time_scale 0, so that the executor and its grouped commits are all that is measured.

    .venv/bin/python -m scripts.bench.agent_transitions [--nodes 1000] [--type raspberry] [--single]

The deploys start with StartActions, 1,000 nodes per call (the controller's path), or with
`--single` one StartAction per node, all at once. Prints figures and the load average; asserts
nothing.
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
from edgebed.collector import tune_collector
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from scripts.bench.common import AUTH, TOKEN, load, sim_nodes, start_deploys


async def run(nodes: int, node_type: str, single: bool, data: Path) -> None:
    settings = AgentSettings(
        name="bench", type=node_type, listen="127.0.0.1:0", token=TOKEN,
        database=str(data / "bench.sqlite"), sim_nodes=nodes, sim_time_scale=0.0,
    )
    async with open_agent(settings) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            environment, names = await sim_nodes(stub)
            transactions_before = agent.committer.transactions
            began = time.perf_counter()
            await start_deploys(stub, names, environment, single)
            started = time.perf_counter()
            await agent.executor.wait_idle()
            ended = time.perf_counter()
            states = await stub.GetActionState(pb.GetActionStateRequest(), metadata=AUTH, timeout=10)
        transitions = [t for t in await agent.db(agent.store.transitions) if t.event == "enter"]
        transactions = agent.committer.transactions - transactions_before
    deployed = sum(a.state == "deployed" for a in states.actions)
    elapsed = ended - began
    how = "one StartAction per node" if single else "StartActions"
    print(f"nodes: {nodes} ({node_type}), started with {how}, deployed: {deployed}; "
          f"{load()}")
    print(f"committed transitions: {len(transitions)} (every state entered, the first included)")
    print(f"start calls done after {started - began:.2f} s; all deployed after {elapsed:.2f} s")
    print(f"transitions per second: {len(transitions) / elapsed:,.0f}")
    print(f"transactions: {transactions}, mean changes per transaction: "
          f"{agent.committer.changes / max(agent.committer.transactions, 1):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--type", default="raspberry", choices=("raspberry", "node", "sensor"))
    parser.add_argument("--single", action="store_true", help="one StartAction per node")
    args = parser.parse_args()
    # As the agent process does (edgebed agent).
    tune_collector()
    with tempfile.TemporaryDirectory() as data:
        asyncio.run(run(args.nodes, args.type, args.single, Path(data)))


if __name__ == "__main__":
    main()
