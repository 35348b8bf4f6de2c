#!/usr/bin/env python3
"""Benchmark: the manage and reserve pages and the JSON API's reservation list at testbed scale
(issues #11 and #12).

Two scenarios (--nodes):
  - 1000: three real agents (sim driver) with 1000 nodes; one user holds 200 reserved and
    deployed nodes (the manage page); 5000 reservations over the coming week in all (the
    reserve page's week view, the #11 figure);
  - 5000: 5000 nodes; the user holds 1000 deployed nodes; 6000 reservations in the week.

A server process runs the agents, the real controller on a SQLite file and the web application
on a loopback port; others' reservations are written straight into the schedule table
(reserving them one by one through the service would take minutes). This process then logs in
like a browser and measures:

  - server-side time per page (a timing middleware around the handlers: database, service
    calls and template rendering) over --repeat sequential requests, run --runs times: the
    median over runs of each run's p50 and p95, and the page's size;
  - the server process's CPU time per request (all its threads; median), less sensitive to
    the machine's load than the wall-clock figures;
  - once with the scheduler's poll running (every second, as in production) and once with the
    scheduler stopped (what a controller whose scheduler runs in another process serves); or,
    with --split, with the pages served by `edgebed controller --role web` (this scenario's
    server process) while `edgebed controller --role scheduler` polls every second in a process
    of its own, on the same SQLite file, as the README's split deployment runs them;
  - optionally (--requests N) requests per second and latency under concurrent load.

Goal: p95 ≤ 100 ms server-side per page. Prints the figures with the load average before and
after (the machine is shared: a loaded one shows it); exit code 1 when the goal is missed.

Usage: .venv/bin/python -m scripts.bench.web_pages [--nodes 1000|5000] [--repeat 30] [--runs 3]
       [--requests 0] [--concurrency 8] [--split]
  e.g. --repeat 5 --runs 1 for a quick look.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import multiprocessing
import os
import pstats
import queue
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

GOAL_MS = 100.0
PASSWORD = "bench-password-1"
USER = "bench@example.org"
# Per scenario: the agents (name, type, nodes), how many nodes the user holds (deployed, by
# type prefix: rpi, srv, sens in the proportions of the agents) and the reservations in view.
SCENARIOS = {
    1000: {"agents": (("rpi", "raspberry", 600), ("srv", "node", 250), ("sens", "sensor", 150)),
           "managed": (120, 50, 30), "in_view": 5000},
    5000: {"agents": (("rpi", "raspberry", 3000), ("srv", "node", 1250), ("sens", "sensor", 750)),
           "managed": (600, 250, 150), "in_view": 6000},
}


def pages(nodes: int, managed: int, in_view: int) -> dict[str, str]:
    return {
        f"manage ({managed} of the user's)": "/manage",
        f"reserve ({nodes} n, {in_view} r)": "/reserve",
        "reserve, day view": "/reserve?days=1",
        "manage/live JSON": "/manage/live",
        "GET /api/v1/reservations": "/api/v1/reservations",
    }


# ---------------------------------------------------------------------------------------------
# the server process


def serve(directory: str, scenario: int, ready, stop, split: bool = False) -> None:
    import logging
    import traceback

    from edgebed.collector import tune_collector

    logging.basicConfig(level=logging.WARNING)
    # As `edgebed controller` and `edgebed agent` do.
    tune_collector()
    try:
        asyncio.run(_serve(Path(directory), SCENARIOS[scenario], ready, stop, split))
    except BaseException:
        # Tell the waiting parent rather than leave it waiting.
        ready.put(("failed", traceback.format_exc()))
        raise


async def _serve(directory: Path, scenario: dict, ready, stop, split: bool) -> None:
    from edgebed.agent.app import start_agent
    from edgebed.agent.settings import AgentSettings

    agents = await asyncio.gather(*(
        start_agent(AgentSettings(
            name=name, type=agent_type, listen="127.0.0.1:0", token=f"token-{name}",
            database=str(directory / f"{name}.sqlite"), driver="sim", sim_nodes=nodes,
            sim_time_scale=0.0,
        ))
        for name, agent_type, nodes in scenario["agents"]
    ))
    try:
        await _serve_with(directory, scenario, agents, ready, stop, split)
    finally:
        await asyncio.gather(*(agent.stop() for agent in agents))


async def _serve_with(directory: Path, scenario: dict, agents, ready, stop, split: bool) -> None:
    from aiohttp import web
    from argon2 import PasswordHasher

    from edgebed.controller.app import open_controller
    from edgebed.controller.settings import Settings
    from edgebed.web.app import create_app
    settings = Settings(
        listen="127.0.0.1:0", database=str(directory / "controller.sqlite"),
        secret_key_file=str(directory / "secret.key"), poll_seconds=1.0, turnaround_seconds=0,
    )
    timings: dict[str, list[float]] = {}
    # CPU seconds of the whole server process per request (every thread: the handler, the
    # database pool, and a poll running meanwhile): less sensitive to the machine's load than
    # the wall-clock time.
    cpu: dict[str, list[float]] = {}

    # BENCH_PROFILE=PATH: the server's profile of the requests to PATH, printed at the end
    # (where the time of one page goes).
    profiled = os.environ.get("BENCH_PROFILE")
    profile = cProfile.Profile() if profiled else None

    @web.middleware
    async def timing(request, handler):
        started = time.perf_counter()
        started_cpu = time.process_time()
        watched = profile is not None and request.path_qs == profiled
        if watched:
            profile.enable()
        try:
            return await handler(request)
        finally:
            if watched:
                profile.disable()
            timings.setdefault(request.path_qs, []).append(time.perf_counter() - started)
            cpu.setdefault(request.path_qs, []).append(time.process_time() - started_cpu)

    async def report(request):
        return web.json_response({"wall": timings, "cpu": cpu})

    async def reset(request):
        timings.clear()
        cpu.clear()
        return web.json_response({})

    async def stop_poll(request):
        # What a controller whose scheduler runs in another process (--role) serves.
        await ctl.scheduler.stop()
        return web.json_response({})

    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    # split: the pages of `edgebed controller --role web`, the scheduler being the parent's child
    # process (`--role scheduler`, started once this process has made the database).
    opened = (open_controller(settings, run_scheduler=False, role="web", password_hasher=hasher)
              if split else open_controller(settings, password_hasher=hasher))
    async with opened as ctl:
        if split:
            ready.put(("database", settings.database, settings.secret_key_file))
        app = create_app(settings, controller=ctl)
        app.middlewares.insert(0, timing)
        app.router.add_get("/bench/timings", report)
        app.router.add_get("/bench/reset", reset)
        app.router.add_get("/bench/stop-poll", stop_poll)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]

        admin = await ctl.accounts.create_user("admin@example.org", PASSWORD, admin=True, authorized=True)
        user = await ctl.accounts.create_user(USER, PASSWORD, authorized=True)
        token = await ctl.accounts.create_api_token(USER, "bench")
        for (name, agent_type, _), agent in zip(scenario["agents"], agents, strict=True):
            info = await ctl.agents.add_agent(admin, name, agent_type, "127.0.0.1", agent.port, f"token-{name}")
            assert info.status == "connected", info
        nodes = await ctl.inventory.list_nodes(refresh=True)
        assert len(nodes) == sum(n for _, _, n in scenario["agents"]), len(nodes)

        # The user's nodes, deployed, in 4 bins.
        now = int(time.time())
        mine = [
            f"{prefix}-{i:03d}"
            for (prefix, _, _), count in zip(scenario["agents"], scenario["managed"], strict=True)
            for i in range(1, count + 1)
        ]
        await ctl.reservations.reserve(user, nodes=mine, start_date=now, duration_hours=48)
        environments = await ctl.inventory.environments()
        node_types = await ctl.inventory.node_types()
        type_of = {prefix: agent_type for prefix, agent_type, _ in scenario["agents"]}
        for index, node in enumerate(mine):
            node_type = type_of[node.split("-")[0]]
            properties = {"environment": environments[node_type][0].name}
            if node_types[node_type].property("os_password") is not None:
                properties["os_password"] = "bench-os-password"
            await ctl.reservations.configure(user, node, bin=f"experiment-{index % 4}", properties=properties)
        # Others' reservations over the week, for the timeline: through the service for a few,
        # then straight into the table for the rest (the page reads them the same way).
        others = [await ctl.accounts.create_user(f"other{number}@example.org", PASSWORD, authorized=True)
                  for number in range(10)]
        taken = set(mine)
        free = [n.name for n in nodes if n.name not in taken]
        await ctl.reservations.reserve(others[0], nodes=free[:60], start_date=now + 6 * 3600,
                                       duration_hours=8)
        await _seed_schedule(ctl, free, [o.email for o in others], now,
                             scenario["in_view"] - len(mine) - 60)
        # Wait for the deploys to finish, so the page shows what a user mostly sees (on a loaded
        # machine a few end lost: the sim agent runs in this process; at most 10 minutes).
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            states = await ctl.reservations.live_states(user)
            if all(r.action_state in ("deployed", "lost") for r in states):
                break
            await asyncio.sleep(2)
        deployed = sum(r.action_state == "deployed" for r in await ctl.reservations.live_states(user))
        ready.put((port, deployed, token))
        try:
            while not stop.is_set():
                await asyncio.sleep(0.2)
        finally:
            await runner.cleanup()
            if profile is not None:
                pstats.Stats(profile).sort_stats("cumulative").print_stats(40)


async def _seed_schedule(ctl, free: list[str], owners: list[str], now: int, count: int) -> None:
    """`count` more reservations in the coming week on the nodes not the user's: a few per
    node, each a few hours, spread so that none overlaps another on its node."""
    rows = []
    per_node = -(-count // len(free))
    assert per_node < len(owners), "more reservations per node than owners"
    slot = 6 * 86400 // per_node
    for index in range(count):
        node = free[index % len(free)]
        k = index // len(free)
        start = now + 16 * 3600 + k * slot + (index * 37 % 7) * 600
        # One reservation per (node, owner): the k-th on a node is owner k+1's (owner 0 already
        # holds a reservation on the first nodes).
        rows.append({"node_name": node, "owner": owners[(k + 1) % len(owners)], "bin": "",
                     "start_date": start, "end_date": start + slot - 1800, "status": "configuring"})
    # The repository's engine and models (a benchmark may reach in; the product never does).
    repository = ctl.store.schedule
    engine = repository._engine

    def work() -> None:
        with engine.write():
            for first in range(0, len(rows), 200):
                repository.m.Schedule.insert_many(rows[first:first + 200]).execute()

    await engine.run(work)


# ---------------------------------------------------------------------------------------------
# the load generator (this process)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * share) - 1)]


async def measure(port: int, token: str | None, paths: dict[str, str], repeat: int, runs: int,
                  requests: int, concurrency: int) -> dict[str, dict[str, float]]:
    """Per page: its size, the median over `runs` runs of `repeat` sequential requests of each
    run's server-side p50 and p95 (ms), and with `requests` > 0 the throughput under load."""
    import aiohttp

    base = f"http://127.0.0.1:{port}"
    figures: dict[str, dict[str, float]] = {}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        async with session.get(f"{base}/login") as response:
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', await response.text()).group(1)
        async with session.post(f"{base}/login", data={"email": USER, "password": PASSWORD,
                                                       "csrf_token": csrf}, allow_redirects=False) as response:
            assert response.status == 303, response.status
        for label, path in paths.items():
            # The API with the user's token, the pages with the session.
            headers = {"Authorization": f"Bearer {token}"} if path.startswith("/api/") and token else {}
            async with session.get(f"{base}{path}", headers=headers) as response:  # warm-up, and a check
                body = await response.read()
                assert response.status == 200, (path, response.status, body[:300])
            p50s, p95s, cpus = [], [], []
            for _ in range(runs):
                await (await session.get(f"{base}/bench/reset")).read()
                for _ in range(repeat):
                    async with session.get(f"{base}{path}", headers=headers) as response:
                        await response.read()
                async with session.get(f"{base}/bench/timings") as response:
                    measured = await response.json()
                server = measured["wall"][path]
                p50s.append(statistics.median(server) * 1000)
                p95s.append(_percentile(server, 0.95) * 1000)
                cpus.append(statistics.median(measured["cpu"][path]) * 1000)
            figures[label] = {"bytes": len(body), "p50_ms": statistics.median(p50s),
                              "p95_ms": statistics.median(p95s), "cpu_ms": statistics.median(cpus)}
            if requests <= 0:
                continue
            latencies: list[float] = []
            remaining = requests

            # The path and the list are parameters: binding them says which iteration's values
            # the closure uses.
            async def worker(path: str, latencies: list[float], headers: dict[str, str]) -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    started = time.perf_counter()
                    async with session.get(f"{base}{path}", headers=headers) as response:
                        await response.read()
                        assert response.status == 200
                    latencies.append(time.perf_counter() - started)

            started = time.perf_counter()
            await asyncio.gather(*(worker(path, latencies, headers) for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            figures[label] |= {
                "rps": len(latencies) / elapsed,
                "load_p50_ms": statistics.median(latencies) * 1000,
                "load_p95_ms": _percentile(latencies, 0.95) * 1000,
            }
    return figures


async def stop_poll(port: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{port}/bench/stop-poll"
    ) as response:
        assert response.status == 200


def _start_scheduler(directory: Path, database: str, key_file: str) -> subprocess.Popen:
    """`edgebed controller --role scheduler` on the server's database, polling every second; its
    log in directory/scheduler.log. Returns once it says it runs (RuntimeError, the process
    stopped, when it does not within 120 s)."""
    config = directory / "scheduler.toml"
    config.write_text(
        f"listen = {json.dumps('127.0.0.1:0')}\ndatabase = {json.dumps(database)}\n"
        f"secret_key_file = {json.dumps(key_file)}\n"
        "[scheduler]\npoll_seconds = 1.0\n[reservations]\nturnaround_seconds = 0\n"
    )
    with (directory / "scheduler.log").open("w") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("edgebed")), "controller", "--role", "scheduler",
             "--config", str(config)],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def read(stdout) -> None:
        # Reads to the end, so that the process never blocks on a full pipe.
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, args=(process.stdout,), daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line.startswith("edgebed controller scheduler running"):
                return process
        raise RuntimeError("the scheduler process did not start: "
                           f"{(directory / 'scheduler.log').read_text()[-2000:]}")
    except BaseException:
        _stop(process)
        raise


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def _print(title: str, figures: dict[str, dict[str, float]], load_before: str) -> bool:
    print(f"\n{title}   (load average before {load_before}, after {_load()})")
    print(f"{'page':34} {'size':>8} {'p50':>9} {'p95':>9} {'CPU p50':>9}", end="")
    under_load = any("rps" in f for f in figures.values())
    print(f" {'req/s':>7} {'load p50':>9} {'p95':>9}" if under_load else "")
    missed = False
    for label, f in figures.items():
        print(f"{label:34} {f['bytes'] / 1024:7.0f}K {f['p50_ms']:7.1f}ms {f['p95_ms']:7.1f}ms "
              f"{f['cpu_ms']:7.1f}ms", end="")
        print(f" {f['rps']:7.1f} {f['load_p50_ms']:7.1f}ms {f['load_p95_ms']:7.1f}ms" if "rps" in f else "")
        missed |= f["p95_ms"] > GOAL_MS
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, choices=sorted(SCENARIOS), default=1000,
                        help="the scenario: 1000 nodes (5000 reservations) or 5000 nodes")
    parser.add_argument("--repeat", type=int, default=30, help="sequential requests per page and run")
    parser.add_argument("--runs", type=int, default=3, help="runs per page (the median is printed)")
    parser.add_argument("--requests", type=int, default=0, help="requests per page under load (0: none)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients under load")
    parser.add_argument("--no-poll-phase", action="store_true",
                        help="skip the second measurement with the scheduler stopped")
    parser.add_argument("--split", action="store_true",
                        help="serve the pages as `edgebed controller --role web` with the scheduler in "
                             "a process of its own (`--role scheduler`, polling every second) instead "
                             "of one process that polls, then stops polling")
    args = parser.parse_args()
    if not 1 <= args.repeat <= 1000 or not 1 <= args.runs <= 20:
        parser.error("--repeat must be 1..1000 and --runs 1..20")
    if not 0 <= args.requests <= 5000 or not 1 <= args.concurrency <= 64:
        parser.error("--requests must be 0..5000 and --concurrency 1..64")
    scenario = SCENARIOS[args.nodes]
    managed = sum(scenario["managed"])
    paths = pages(args.nodes, managed, scenario["in_view"])

    context = multiprocessing.get_context("spawn")
    missed = False
    with tempfile.TemporaryDirectory() as directory:
        ready, stop = context.Queue(), context.Event()
        server = context.Process(target=serve, args=(directory, args.nodes, ready, stop, args.split),
                                 daemon=True)
        started = time.perf_counter()
        server.start()
        scheduler = None
        try:
            if args.split:
                message = ready.get(timeout=1800)
                if message[0] == "failed":
                    print(f"the server process failed:\n{message[1]}", file=sys.stderr)
                    return 2
                _, database, key_file = message
                scheduler = _start_scheduler(Path(directory), database, key_file)
            message = ready.get(timeout=1800)
            if message[0] == "failed":
                print(f"the server process failed:\n{message[1]}", file=sys.stderr)
                return 2
            port, deployed, token = message
            print(f"seeded in {time.perf_counter() - started:.1f} s: {args.nodes} nodes on 3 agents, "
                  f"{deployed}/{managed} of the user's nodes deployed, {scenario['in_view']} "
                  f"reservations in view; {args.runs} run(s) of {args.repeat} requests per page, "
                  f"server-side medians")
            load = _load()
            figures = asyncio.run(measure(port, token, paths, args.repeat, args.runs, args.requests,
                                          args.concurrency))
            where = "in its own process (--role scheduler)" if args.split else "in the same process"
            missed |= _print(f"with the scheduler polling every second, {where}", figures, load)
            if scheduler is not None and scheduler.poll() is not None:
                print(f"the scheduler process ended ({scheduler.returncode}) during the measurement",
                      file=sys.stderr)
                return 2
            if not args.no_poll_phase and not args.split:
                asyncio.run(stop_poll(port))
                load = _load()
                figures = asyncio.run(measure(port, token, paths, args.repeat, args.runs, 0, 1))
                missed |= _print("with the scheduler stopped (its own process)", figures, load)
        finally:
            if scheduler is not None:
                _stop(scheduler)
            stop.set()
            server.join(60)
            if server.is_alive():
                server.terminate()
    print(f"\ngoal: server-side p95 ≤ {GOAL_MS:.0f} ms per page: {'MISSED' if missed else 'met'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
