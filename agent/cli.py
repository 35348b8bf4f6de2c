"""`edgebed agent --config FILE`: runs one agent until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import sys

from edgebed.agent.app import start_agent
from edgebed.agent.settings import AgentSettings, load_settings
from edgebed.collector import tune_collector
from edgebed.stopsignals import stop_on_signals


def run_agent(args) -> int:
    settings = load_settings(args.config)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    tune_collector()
    return asyncio.run(serve(settings))


async def serve(settings: AgentSettings) -> int:
    agent = await start_agent(settings)
    stop = asyncio.Event()
    stop_on_signals(stop)
    # Scripts, tests and the demo read this line to learn the port (listen may say port 0).
    print(f"edgebed agent {settings.name} listening on {agent.address}", flush=True)
    try:
        await stop.wait()
    finally:
        await agent.stop()
    return 0
