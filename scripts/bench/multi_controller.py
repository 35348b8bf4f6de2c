"""Several controllers on one PostgreSQL (issue #14): takeover time, polling load per agent, and
page latency behind a round-robin while a controller is killed.

    .venv/bin/python -m scripts.bench.multi_controller [--agents 10] [--nodes 10] [--lease 6]
        [--poll 0.5] [--window 20] [--kills 3]

Starts a throw-away PostgreSQL (initdb/pg_ctl, as the tests do), `--agents` agent processes
(sim driver, `log_calls = true`) with `--nodes` nodes each, and `edgebed controller` processes on
the one database; every node is reserved and deploys slowly (time_scale 0.2), so the scheduler
follows every row throughout. Then:

1. GetActionState calls per agent per poll period, with 1 controller, then with 3 (counted at
   the agents, from their call log, over `--window` seconds): the goal is the same figure, about
   one, and one caller per agent in the window.
2. Time from a controller's SIGKILL to its successor's first GetActionState to each agent it
   drove (the agents' log, wall clock) and to the lease takeover (the database), `--kills` times
   (the victim restarted in between, each time the busiest controller): goal ≤ 2 × lease.
3. Latency of GET /manage (a logged-in user's 100 reservations; the session cookie works on
   every replica) sent round-robin to the 3 controllers, before and after one is killed; requests
   to the dead one fail at once (a balancer without health checks), counted apart.

Prints medians (and p95) with the load average before and after; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from edgebed.controller.app import open_controller
from edgebed.controller.leases import owner_of
from edgebed.controller.settings import Settings
from edgebed.controller.store import LEADER, Store
from tests.conftest import free_port
from tests.controller.conftest import FAST_HASHER, PG_BIN, _as_postgres
from tests.processes import AgentProcess, ControllerProcess, start_all, stop_all, write_controller_config
from tests.web.harness import Client

PASSWORD = "bench-password-1"
# Processes starting side by side on a shared machine get this long.
STARTUP = 120.0
CALL = "call /edgebed.v1.Agent/GetActionState from edgebed-controller/"


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextlib.contextmanager
def postgres(root: Path):
    """A PostgreSQL server for the run: yields its URL to a fresh database."""
    run = _as_postgres()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    subprocess.run([*run, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync"],
                   check=True, capture_output=True)
    options = f"-h 127.0.0.1 -p {port} -k {root} -F -c max_connections=200"
    subprocess.run([*run, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o", options,
                    "start"], check=True, capture_output=True)
    try:
        subprocess.run([*run, str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                        "bench"], check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/bench"
    finally:
        subprocess.run([*run, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True)


def calls_since(agent: AgentProcess, offset: int) -> list[tuple[float, str]]:
    """(wall time, controller instance) of the agent's GetActionState calls logged after byte
    `offset` of its log."""
    with open(agent.log_path, "rb") as log:
        log.seek(offset)
        text = log.read().decode("utf-8", "replace")
    found = []
    for line in text.splitlines():
        if CALL in line:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            found.append((stamp, line.split(CALL, 1)[1].strip()))
    return found


def log_size(agent: AgentProcess) -> int:
    return agent.log_path.stat().st_size


async def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await predicate()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise TimeoutError(what)


class RoundRobin(threading.Thread):
    """GET `path` on each URL in turn, as fast as answers come; records (time, latency or None)."""

    def __init__(self, urls: list[str], cookies: dict[str, str], path: str) -> None:
        super().__init__(daemon=True)
        self.urls, self.cookies, self.path = urls, cookies, path
        self.samples: list[tuple[float, float | None]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        for url in itertools.cycle(self.urls):
            if self.stopping.is_set():
                return
            client = Client(url, cookies=dict(self.cookies))
            began = time.monotonic()
            try:
                ok = client.get(self.path).status == 200
            except OSError:
                ok = False
            self.samples.append((began, time.monotonic() - began if ok else None))


def summary(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"median {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms ({len(values)} requests)"


async def main(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="edgebed-bench-multi-"))
    print(f"start: {load()}")
    agents = [
        AgentProcess(root / "agents", f"rack{i}", nodes=args.nodes, time_scale=0.2, log_calls=True)
        for i in range(args.agents)
    ]
    controllers: list[ControllerProcess] = []
    # A folder of its own, outside `root` (mode 0700): the server runs as the postgres user.
    pg_root = Path(tempfile.mkdtemp(prefix="edgebed-bench-pg-"))
    with postgres(pg_root) as url:
        store: Store | None = None
        try:
            start_all(agents, timeout=STARTUP)
            settings = Settings(listen="127.0.0.1:0", database=url, secret_key_file=str(root / "secret.key"),
                                poll_seconds=args.poll, turnaround_seconds=0, lease_seconds=args.lease,
                                call_timeout_seconds=args.lease / 2)
            store = Store(url, secret_key=settings.secret_key(), workers=2)
            async with open_controller(settings, run_scheduler=False, password_hasher=FAST_HASHER) as ctl:
                admin = await ctl.accounts.create_user("admin@example.org", PASSWORD, admin=True, authorized=True)
                for agent in agents:
                    await ctl.agents.add_agent(admin, agent.name, "raspberry", agent.host, agent.port, agent.token)
                user = await ctl.accounts.create_user("user@example.org", PASSWORD, authorized=True)
                environment = (await ctl.inventory.environments())["raspberry"][0].name
                nodes = await ctl.reservations.reserve(
                    user, filter={}, count=args.agents * args.nodes, start_date=int(time.time()), duration_hours=4
                )
                for node in nodes:
                    await ctl.reservations.configure(user, node, properties={"environment": environment})
            await store.open()
            for i in range(3):
                config = write_controller_config(
                    root / f"ctl{i}", listen=f"127.0.0.1:{free_port()}", database=url,
                    secret_key_file=str(root / "secret.key"),
                    scheduler={"poll_seconds": args.poll, "lease_seconds": args.lease},
                    reservations={"turnaround_seconds": 0}, agents={"call_timeout_seconds": args.lease / 2},
                )
                controllers.append(ControllerProcess(config, name=f"ctl{i}"))
            names = {agent.name for agent in agents} | {LEADER}

            async def settled():
                live = {i.pid: i.id for i in await store.leases.instances(args.lease) if i.alive}
                running = [live.get(c.pid) for c in controllers if c.running]
                if None in running:
                    return None
                leases = {lease.agent: lease for lease in await store.leases.leases() if lease.held}
                if set(leases) >= names and all(leases[n].holder == owner_of(n, running) for n in names):
                    return {n: leases[n].holder for n in names}
                return None

            async def all_started():
                rows = await store.schedule.list_schedule()
                return all(r.action_state for r in rows)

            async def per_poll(label: str) -> None:
                offsets = {agent.name: log_size(agent) for agent in agents}
                await asyncio.sleep(args.window)
                per_agent, callers = [], []
                for agent in agents:
                    seen = calls_since(agent, offsets[agent.name])
                    per_agent.append(len(seen) / (args.window / args.poll))
                    callers.append(len({caller for _, caller in seen}))
                print(f"{label}: GetActionState calls per agent per poll period: median "
                      f"{statistics.median(per_agent):.2f} (min {min(per_agent):.2f}, max {max(per_agent):.2f}); "
                      f"callers per agent in the window: max {max(callers)}; {load()}")

            # 1. One controller, then three.
            controllers[0].start(timeout=STARTUP)
            await wait(all_started, 120, "every deploy to start")
            await wait(settled, 60, "one controller to hold every agent")
            await per_poll("1 controller")
            start_all(controllers[1:], timeout=STARTUP)
            holders = await wait(settled, 60, "three controllers to share the agents")
            await per_poll("3 controllers")

            # 3 (set up first, runs through 2): pages round-robin over the three.
            client = Client(controllers[0].url)
            client.login("user@example.org", PASSWORD)
            pages = RoundRobin([c.url for c in controllers], client.cookies, "/manage")
            pages.start()
            await asyncio.sleep(args.window)
            first_kill_at = None

            # 2. Kills.
            to_successor, to_lease = [], []
            for _ in range(args.kills):
                ids = {i.pid: i.id for i in await store.leases.instances(args.lease)}
                driven = Counter(h for n, h in holders.items() if n != LEADER)
                victim = max(controllers, key=lambda c: driven.get(ids.get(c.pid, ""), 0))
                instance = ids[victim.pid]
                theirs = [a for a in agents if holders.get(a.name) == instance]
                offsets = {a.name: log_size(a) for a in theirs}
                killed_wall, killed = time.time(), time.monotonic()
                victim.kill()
                first_kill_at = first_kill_at or killed

                async def taken(instance=instance, theirs=theirs):
                    leases = {lease.agent: lease for lease in await store.leases.leases()}
                    return all(leases[a.name].held and leases[a.name].holder != instance for a in theirs)

                await wait(taken, 10 * args.lease, "the takeover")
                lease_done = time.monotonic() - killed
                await asyncio.sleep(args.poll * 4)
                for agent in theirs:
                    later = [t for t, caller in calls_since(agent, offsets[agent.name]) if caller != instance]
                    if later:
                        to_successor.append(min(later) - killed_wall)
                to_lease.append(lease_done)
                print(f"killed {victim.name} ({len(theirs)} agents): all its leases taken after {lease_done:.1f} s; "
                      f"{load()}")
                victim.start(timeout=STARTUP)
                holders = await wait(settled, 60, "the restarted controller to get its share")
            print(f"death to the successor's first GetActionState, per agent: median "
                  f"{statistics.median(to_successor):.1f} s (max {max(to_successor):.1f} s, {len(to_successor)} "
                  f"agents over {args.kills} kills); goal <= {2 * args.lease:g} s (2 x lease {args.lease:g} s)")
            print(f"death to the last of its leases taken: median {statistics.median(to_lease):.1f} s")
            pages.stopping.set()
            pages.join(30)
            before = [lat for t, lat in pages.samples if t < first_kill_at and lat is not None]
            after = [lat for t, lat in pages.samples
                     if first_kill_at <= t < first_kill_at + args.window and lat is not None]
            failed = sum(1 for t, lat in pages.samples if lat is None and t >= first_kill_at)
            print(f"GET /manage round-robin over 3 controllers, before the first kill: {summary(before)}")
            print(f"... during the {args.window:g} s after it: {summary(after)}; {failed} requests to a dead "
                  f"controller failed at once (no health check); {load()}")
        finally:
            stop_all(controllers)
            if store is not None:
                await store.close()
            stop_all(agents)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(pg_root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--lease", type=float, default=6.0)
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--kills", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
