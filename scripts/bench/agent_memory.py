"""Resident memory of a real agent process (`edgebed agent --config ...`) with simulated nodes:
after start-up, at its peak while all deploy at once (time_scale 0.01), and after (goal <= 80 MB
with 1,000 nodes in flight, issue #12); medians over repeated runs, with the load average.

    .venv/bin/python -m scripts.bench.agent_memory [--nodes 100 1000] [--type raspberry]
        [--repeat 3] [--single]

The deploys start with StartActions, 1,000 nodes per call (the controller's path), or with
`--single` one StartAction per node. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from scripts.bench.common import AUTH, TOKEN, load, sim_nodes, start_deploys

ROOT = Path(__file__).resolve().parents[2]



def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024


async def sample_while(pid: int, task: asyncio.Future) -> float:
    peak = 0.0
    while not task.done():
        peak = max(peak, rss_mb(pid))
        await asyncio.sleep(0.02)
    return max(peak, rss_mb(pid))


async def deploy_all(address: str, single: bool) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        environment, names = await sim_nodes(stub)
        await start_deploys(stub, names, environment, single, timeout=30)
        while True:
            reply = await stub.GetActionState(pb.GetActionStateRequest(), metadata=AUTH, timeout=10)
            if all(a.final for a in reply.actions):
                return sum(a.state == "deployed" for a in reply.actions)
            await asyncio.sleep(0.1)


async def one_run(nodes: int, node_type: str, single: bool, data: Path) -> tuple[float, float, float, int]:
    """(MB after start-up, at peak, after the deploys; how many deployed)."""
    config = data / "agent.toml"
    database = data / "agent.sqlite"
    for path in data.glob("agent.sqlite*"):
        path.unlink()
    config.write_text(
        f'name = "mem"\ntype = "{node_type}"\nlisten = "127.0.0.1:0"\ntoken = "{TOKEN}"\n'
        f'database = "{database}"\n[sim]\nnodes = {nodes}\ntime_scale = 0.01\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgebed.cli", "agent", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, text=True,
        # The file alone configures it: no EDGEBED_* override from the caller's environment.
        env={k: v for k, v in os.environ.items() if not k.startswith("EDGEBED_")},
    )
    try:
        line = proc.stdout.readline().strip()
        address = line.rsplit(" ", 1)[-1]
        time.sleep(0.5)
        started = rss_mb(proc.pid)
        deploying = asyncio.ensure_future(deploy_all(address, single))
        peak = await sample_while(proc.pid, deploying)
        deployed = deploying.result()
        after = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return started, peak, after, deployed


async def run(nodes_list: list[int], node_type: str, repeat: int, single: bool, data: Path) -> None:
    how = "one StartAction per node" if single else "StartActions, 1,000 nodes per call"
    print(f"agent process ({node_type}, time_scale 0.01, {how}), resident memory (VmRSS); {load()}")
    for nodes in nodes_list:
        runs = []
        for index in range(repeat):
            runs.append(await one_run(nodes, node_type, single, data))
            started, peak, after, deployed = runs[-1]
            print(f"  {nodes} nodes, run {index + 1}/{repeat}: {started:.1f} MB after start-up, "
                  f"{peak:.1f} MB at peak ({deployed} deployed), {after:.1f} MB after")
        started, peak, after = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"{nodes} nodes, medians: {started:.1f} MB after start-up, {peak:.1f} MB at peak while "
              f"all deploy, {after:.1f} MB after (goal <= 80 MB); {load()}")



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--type", default="raspberry", choices=("raspberry", "node", "sensor"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--single", action="store_true", help="one StartAction per node")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        asyncio.run(run(args.nodes, args.type, args.repeat, args.single, Path(data)))


if __name__ == "__main__":
    main()
