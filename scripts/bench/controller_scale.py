#!/usr/bin/env python3
"""Benchmark: one controller and 200 fake agents of 100 nodes each (issue #12).

The fake agents (tests/controller/fake_agent.py: real gRPC servers on loopback; every action
advances one state per GetActionState) run in child processes of their own, so their work
does not count as the controller's. The controller (SQLite file, real scheduler task, 6 s call
deadline, poll every 2 s) registers them all; 20,000 reservations, configured and ready, are
written straight into the schedule table (reserving and configuring them one by one through
the service would take minutes), all starting at the same second.

Scenarios (each on a fresh controller and fresh agents):

  start   every StartAction accepted within 15 s of the start date (goal), no agent flagged
          disconnected (goal); then, once all 20,000 are deployed, the scheduler's CPU per
          poll (process time, all threads) for an ordinary poll and for a full one
          (goal: ordinary <= 0.2 s).
  hung    5 of the agents hang (accept calls, never answer) just before the start date: the
          healthy agents' 19,500 starts are accepted as fast as in `start` (compare the two
          figures: a hung agent's deadline would add its 6 s), within 15 s (goal), and only the
          hung agents are flagged.

Prints medians over --repeat runs, the controller's CPU time while the starts went out (what an
idle machine would need at least), and the load average before and after (the machine is
shared: a loaded one shows it). Exit code 1 when a goal is missed. --agents/--nodes make it smaller.

Usage: .venv/bin/python -m scripts.bench.controller_scale [--scenario all|start|hung]
         [--agents 200] [--nodes 100] [--hung 5] [--repeat 1] [--polls 5]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_GOAL = 15.0
POLL_CPU_GOAL = 0.2
AGENT_PROCESSES = 4
USER = "bench@example.org"


# -- the fake agents' processes ------------------------------------------------------------------


def serve_agents(first: int, count: int, nodes: int) -> int:
    """Child: serves fake agents a{first}..a{first+count-1}; prints "agent NAME PORT" each, then
    "ready"; reads "hang NAME" lines from stdin; stops at EOF."""
    sys.path.insert(0, str(REPO))
    from tests.controller.fake_agent import FakeAgent, ServedAgent

    served = {}
    for index in range(first, first + count):
        name = f"a{index:03d}"
        served[name] = ServedAgent(FakeAgent(name, nodes=nodes), workers=4)
        print(f"agent {name} {served[name].port}", flush=True)
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, name = line.strip().partition(" ")
        if command == "hang" and name in served:
            served[name].fake.hang.set()
    for agent in served.values():
        agent.stop()
    return 0


class AgentHosts:
    """The child processes serving the fake agents."""

    def __init__(self, agents: int, nodes: int) -> None:
        self.ports: dict[str, int] = {}
        self._children: list[subprocess.Popen] = []
        self._by_agent: dict[str, subprocess.Popen] = {}
        per = -(-agents // AGENT_PROCESSES)
        for first in range(0, agents, per):
            count = min(per, agents - first)
            child = subprocess.Popen(
                [sys.executable, "-m", "scripts.bench.controller_scale", "--serve-agents", str(first), str(count),
                 str(nodes)],
                cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            self._children.append(child)
        for child in self._children:
            assert child.stdout is not None
            for line in child.stdout:
                if line.strip() == "ready":
                    break
                _, name, port = line.split()
                self.ports[name] = int(port)
                self._by_agent[name] = child

    def hang(self, name: str) -> None:
        child = self._by_agent[name]
        assert child.stdin is not None
        child.stdin.write(f"hang {name}\n")
        child.stdin.flush()

    def close(self) -> None:
        for child in self._children:
            if child.stdin is not None:
                child.stdin.close()
        for child in self._children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()


# -- the controller ------------------------------------------------------------------------------


def _settings(directory: Path):
    from edgebed.controller.settings import Settings

    values = dict(
        listen="127.0.0.1:0",
        database=str(directory / "controller.sqlite"),
        secret_key_file=str(directory / "secret.key"),
        call_timeout_seconds=6.0,
        poll_seconds=2.0,
        turnaround_seconds=0,
    )
    known = {f.name for f in dataclasses.fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if k in known})


async def _register(ctl, admin, hosts: AgentHosts) -> None:
    async def one(name: str, port: int) -> None:
        info = await ctl.agents.add_agent(admin, name, "raspberry", "127.0.0.1", port, "secret-token")
        assert info.status == "connected", info

    names = sorted(hosts.ports)
    for first in range(0, len(names), 20):
        await asyncio.gather(*(one(name, hosts.ports[name]) for name in names[first : first + 20]))


async def _seed(ctl, start: int, end: int) -> int:
    """Every cached node reserved by USER for [start, end), configured: the rows written
    directly. The number of reservations."""
    nodes = [node.name for node in await ctl.inventory.list_nodes()]
    m = ctl.store.schedule.m

    def work() -> None:
        with ctl.store._engine.write():
            for first in range(0, len(nodes), 90):
                chunk = nodes[first : first + 90]
                m.Schedule.insert_many(
                    [dict(node_name=n, owner=USER, bin="", start_date=start, end_date=end, status="ready",
                          action_state="") for n in chunk]
                ).execute()
                m.ActionProp.insert_many(
                    [dict(node_name=n, prop_name="environment", prop_value="raspios-lite", owner=USER) for n in chunk]
                ).execute()

    await ctl.store._engine.run(work)
    return len(nodes)


async def _count(ctl, condition: str) -> int:
    def work() -> int:
        cursor = ctl.store._engine.db.execute_sql(f"SELECT COUNT(*) FROM schedule WHERE {condition}")
        return int(cursor.fetchone()[0])

    return await ctl.store._engine.run(work)


async def _poll_cpu(ctl, polls: int, full: bool | None) -> list[float]:
    takes_full = "full" in inspect.signature(ctl.scheduler.poll).parameters
    seconds = []
    for _ in range(polls):
        before = time.process_time()
        if takes_full:
            await ctl.scheduler.poll(full=bool(full))
        else:
            await ctl.scheduler.poll()
        seconds.append(time.process_time() - before)
    return seconds


async def run_once(scenario: str, agents: int, nodes: int, hung: int, polls: int) -> dict[str, float]:
    from argon2 import PasswordHasher

    from edgebed.controller.app import open_controller

    hosts = AgentHosts(agents, nodes)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
            async with open_controller(_settings(Path(tmp)), run_scheduler=True, password_hasher=hasher) as ctl:
                admin = await ctl.accounts.create_user(
                    "admin@example.org", "admin-password", admin=True, authorized=True
                )
                await ctl.accounts.create_user(USER, "bench-password", authorized=True)
                started = time.monotonic()
                await _register(ctl, admin, hosts)
                setup = time.monotonic() - started
                start = int(time.time()) + 4
                total = await _seed(ctl, start, start + 3 * 3600)
                hung_names = sorted(hosts.ports)[:hung] if scenario == "hung" else []
                expected = total - len(hung_names) * nodes
                while time.time() < start - 0.5:
                    await asyncio.sleep(0.1)
                for name in hung_names:
                    hosts.hang(name)
                cpu_before = time.process_time()
                # Accepted: the row mirrors the agent's action (process set, nothing pending).
                while True:
                    accepted = await _count(ctl, "process != '' AND pending = ''")
                    now = time.time()
                    if accepted >= expected or now - start > 120:
                        break
                    await asyncio.sleep(0.2)
                figures = {"accepted_after": now - start, "accepted": accepted, "expected": expected,
                           "setup": setup, "start_cpu": time.process_time() - cpu_before}
                if scenario == "hung":
                    await asyncio.sleep(7)  # let the hung agents' deadline pass
                statuses = [a.status for a in await ctl.agents.list_agents(admin)]
                figures["flagged"] = statuses.count("disconnected")
                if scenario == "start":
                    while await _count(ctl, "action_state = 'deployed'") < total:
                        if time.time() - start > 300:
                            break
                        await asyncio.sleep(0.5)
                    figures["deployed"] = await _count(ctl, "action_state = 'deployed'")
                    await ctl.scheduler.stop()
                    ordinary = await _poll_cpu(ctl, polls, full=False)
                    full = await _poll_cpu(ctl, max(1, polls // 2), full=True)
                    figures["poll_cpu"] = statistics.median(ordinary)
                    figures["full_poll_cpu"] = statistics.median(full)
    finally:
        hosts.close()
    return figures


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve-agents":
        return serve_agents(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("all", "start", "hung"), default="all")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=100, help="nodes per agent")
    parser.add_argument("--hung", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each scenario (medians are printed)")
    parser.add_argument("--polls", type=int, default=5, help="polls measured for the CPU figure")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    sys.path.insert(0, str(REPO))
    # As `edgebed controller` does.
    from edgebed.collector import tune_collector
    tune_collector()
    scenarios = ("start", "hung") if args.scenario == "all" else (args.scenario,)
    load_before = os.getloadavg()
    print(f"agents: {args.agents} x {args.nodes} nodes = {args.agents * args.nodes} reservations; "
          f"{args.hung} hung in `hung`; deadline 6 s; repeat {args.repeat}")
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} "
          f"({os.cpu_count()} CPUs)")
    ok = True
    for scenario in scenarios:
        runs = [asyncio.run(run_once(scenario, args.agents, args.nodes, args.hung, args.polls))
                for _ in range(args.repeat)]

        def median(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(run[key] for run in runs)

        print(f"[{scenario}] setup (register {args.agents} agents): {median('setup'):.1f} s")
        print(f"[{scenario}] accepted {median('accepted'):.0f}/{median('expected'):.0f} starts, "
              f"the last {median('accepted_after'):.2f} s after the start date (median of {len(runs)}); "
              f"controller CPU meanwhile (all its threads): {median('start_cpu'):.2f} s")
        if scenario == "start":
            print(f"[start] agents flagged disconnected: {median('flagged'):.0f} (goal 0)")
            print(f"[start] deployed: {median('deployed'):.0f}")
            print(f"[start] CPU per ordinary poll with {median('deployed'):.0f} deployed: "
                  f"{median('poll_cpu'):.3f} s (goal <= {POLL_CPU_GOAL} s); full poll: {median('full_poll_cpu'):.3f} s")
            ok &= median("flagged") == 0 and median("accepted") >= median("expected")
            ok &= median("accepted_after") <= START_GOAL and median("poll_cpu") <= POLL_CPU_GOAL
        else:
            print(f"[hung] agents flagged disconnected: {median('flagged'):.0f} (goal {args.hung}: the hung ones)")
            ok &= median("flagged") == args.hung and median("accepted") >= median("expected")
            ok &= median("accepted_after") <= START_GOAL
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print("result: " + ("OK" if ok else "GOAL MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
