"""How far from start_date 20 nodes reach `deployed`, with `[reservations] prestage` on (and,
for comparison, off): a controller and a simulated raspberry agent in one process, durations
scaled down.

    .venv/bin/python -m scripts.bench.prestage [--nodes 20] [--time-scale 0.05] [--margin 3]

With prestage on, a first round of deploys (reserved now, destroyed once deployed) records the
deploy durations the lead is computed from; then every node is reserved for a window starting
`--ahead` seconds later. For each node: start_date minus the time the agent entered `deployed`
(its transition log, wall clock): positive = ready before start_date (lead), negative = late
(lag). Prints the median and the extremes; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import statistics
import tempfile
import time
from pathlib import Path

from edgebed.agent.app import open_agent
from edgebed.agent.settings import AgentSettings
from edgebed.controller.app import open_controller
from edgebed.controller.settings import Settings

TOKEN = "bench-token"
ENVIRONMENT = "raspios-lite-arm64"


async def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:g} s")
        await asyncio.sleep(0.1)


async def _entered_at(agent, nodes: list[str], after: float, state: str = "deployed") -> dict[str, float]:
    """{node: wall time its action entered `state` (the first time)}, for entries after `after`."""
    entries = await agent.db(agent.store.transitions)
    found: dict[str, float] = {}
    for entry in entries:
        if entry.node_name in nodes and entry.state == state and entry.event == "enter" and entry.at > after:
            found.setdefault(entry.node_name, entry.at)
    return found


async def one_round(nodes: int, time_scale: float, margin: int, ahead: int, prestage: bool, data: Path) -> dict:
    agent_settings = AgentSettings(
        name="rpi", type="raspberry", listen="127.0.0.1:0", token=TOKEN,
        database=str(data / f"agent-{prestage}.sqlite"), sim_nodes=nodes, sim_time_scale=time_scale,
    )
    settings = Settings(
        listen="127.0.0.1:0", database=str(data / f"controller-{prestage}.sqlite"),
        secret_key_file=str(data / "secret.key"), poll_seconds=0.2, turnaround_seconds=0,
        prestage=prestage, prestage_margin_seconds=margin,
    )
    async with open_agent(agent_settings) as agent, open_controller(settings) as ctl:
        admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
        user = await ctl.accounts.create_user("user@example.org", "user-password", authorized=True)
        await ctl.agents.add_agent(admin, "rpi", "raspberry", agent.host, agent.port, TOKEN)
        await ctl.inventory.refresh(catalogs=True)
        names = sorted(node.name for node in await ctl.inventory.list_nodes())[:nodes]

        async def reserve(start: int) -> list[str]:
            chosen = await ctl.reservations.reserve(user, nodes=names, start_date=start, duration_hours=1)
            for name in chosen:
                await ctl.reservations.configure(user, name, properties={"environment": ENVIRONMENT})
            return chosen

        async def states() -> set[str]:
            return {r.action_state for r in await ctl.reservations.list_reservations(user)}

        recorded = []
        if prestage:
            # Warm-up: deploy every node once (the durations prestage learns from), then free them.
            began = time.time()
            await reserve(int(began))
            async def warmed() -> bool:
                return await states() == {"deployed"}

            await _wait(warmed, 600, "the warm-up deploys")
            for name in names:
                await ctl.reservations.act(user, name, "destroy")

            async def freed() -> bool:
                return not await ctl.reservations.list_reservations(user)

            await _wait(freed, 600, "the warm-up destroys")
            recorded = [o.duration_seconds for name in names for o in await ctl.store.health.outcomes(name)
                        if o.process == "deploy" and o.final_state == "deployed"]

        start = math.ceil(time.time()) + ahead
        requested = time.time()
        await reserve(start)

        async def all_deployed() -> bool:
            return len(await _entered_at(agent, names, requested)) == len(names) and time.time() > start + 1

        await _wait(all_deployed, 600 + ahead, "the measured deploys")
        reached = await _entered_at(agent, names, requested)
        began = await _entered_at(agent, names, requested, "netboot_on")
    return {
        "early": [start - reached[name] for name in names],
        "started": [start - began[name] for name in names],
        "took": [reached[name] - began[name] for name in names],
        "recorded": recorded,
    }


def _describe(label: str, figures: dict) -> None:
    early = figures["early"]
    print(f"{label}: start_date - deployed, over {len(early)} nodes (positive: ready before start_date)")
    print(f"  median {statistics.median(early):+.2f} s, min {min(early):+.2f} s, max {max(early):+.2f} s")
    late = [-value for value in early if value < 0]
    print(f"  nodes deployed after start_date: {len(late)}" + (f" (max lag {max(late):.2f} s)" if late else ""))
    print(f"  deploy started {statistics.median(figures['started']):+.2f} s from start_date (median), "
          f"took {statistics.median(figures['took']):.2f} s (median)")


async def run(nodes: int, time_scale: float, margin: int, ahead: int, data: Path) -> None:
    on = await one_round(nodes, time_scale, margin, ahead, True, data)
    off = await one_round(nodes, time_scale, margin, ahead, False, data)
    deploys = on["recorded"]
    print(f"{nodes} raspberry nodes, sim time_scale {time_scale}, prestage margin {margin} s, "
          f"window reserved {ahead} s ahead")
    print(f"recorded deploy durations (warm-up): median {statistics.median(deploys):.2f} s, "
          f"max {max(deploys):.2f} s -> lead {math.ceil(statistics.median(deploys) + margin)} s")
    _describe("prestage on ", on)
    _describe("prestage off", off)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--time-scale", type=float, default=0.05)
    parser.add_argument(
        "--margin", type=int, default=None,
        help="[reservations] prestage_margin_seconds (default: the default 60 s times the time scale)",
    )
    parser.add_argument("--ahead", type=int, default=30, help="seconds between the reservation and its start")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    margin = args.margin if args.margin is not None else max(1, round(60 * args.time_scale))
    with tempfile.TemporaryDirectory() as data:
        asyncio.run(run(args.nodes, args.time_scale, margin, args.ahead, Path(data)))


if __name__ == "__main__":
    main()
