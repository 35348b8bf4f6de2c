"""Resident memory of a real agent process (`edgebed agent --config ...`) with 100 simulated
nodes: after start-up, at its peak while all 100 deploy at once, and after (goal <= 80 MB).

    .venv/bin/python -m scripts.bench.agent_memory [--nodes 100] [--type raspberry]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]

TOKEN = "bench-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024


async def sample_while(pid: int, task: asyncio.Future) -> float:
    peak = 0.0
    while not task.done():
        peak = max(peak, rss_mb(pid))
        await asyncio.sleep(0.02)
    return max(peak, rss_mb(pid))


async def deploy_all(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        environment = (await stub.ListEnvironments(
            pb.ListEnvironmentsRequest(), metadata=AUTH, timeout=10)).environments[0].name
        names = [n.name for n in (await stub.GetNodes(pb.GetNodesRequest(), metadata=AUTH, timeout=10)).nodes]
        await asyncio.gather(*[
            stub.StartAction(
                pb.StartActionRequest(node_name=name, process="deploy", environment=environment),
                metadata=AUTH, timeout=30,
            )
            for name in names
        ])
        while True:
            reply = await stub.GetActionState(pb.GetActionStateRequest(), metadata=AUTH, timeout=10)
            if all(a.final for a in reply.actions):
                return sum(a.state == "deployed" for a in reply.actions)
            await asyncio.sleep(0.1)


async def run(nodes: int, node_type: str, data: Path) -> None:
    config = data / "agent.toml"
    config.write_text(
        f'name = "mem"\ntype = "{node_type}"\nlisten = "127.0.0.1:0"\ntoken = "{TOKEN}"\n'
        f'database = "{data / "agent.sqlite"}"\n[sim]\nnodes = {nodes}\ntime_scale = 0.01\n'
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
        deploying = asyncio.ensure_future(deploy_all(address))
        peak = await sample_while(proc.pid, deploying)
        deployed = deploying.result()
        after = rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    print(f"agent process ({node_type}, {nodes} simulated nodes), resident memory (VmRSS):")
    print(f"  after start-up: {started:.1f} MB")
    print(f"  peak while {nodes} nodes deploy at once: {peak:.1f} MB ({deployed} deployed)")
    print(f"  after the deploys: {after:.1f} MB (goal <= 80 MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--type", default="raspberry", choices=("raspberry", "node", "sensor"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        asyncio.run(run(args.nodes, args.type, Path(data)))


if __name__ == "__main__":
    main()
