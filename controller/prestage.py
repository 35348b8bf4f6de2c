"""Ready at start (`[reservations] prestage`): gathers, for the scheduler, what the lifecycle's
PRESTAGE decision needs about each reservation waiting for its start_date — the lead (expected
deploy duration of its node type and environment plus the margin, controller/health.py) and the
other windows on its node. The decision itself is `lifecycle.on_time`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from edgebed.controller import health, lifecycle
from edgebed.controller.domain import ScheduleRecord
from edgebed.controller.lifecycle import Status
from edgebed.controller.settings import Settings
from edgebed.controller.store import CachedNode, Store

# Seconds the recorded deploy durations are reused before they are read again (they change
# only when a deploy finishes, and `forget` drops them then).
DURATIONS_MAX_AGE = 60.0


class Prestager:
    def __init__(self, store: Store, settings: Settings, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._settings = settings
        self._monotonic = monotonic
        self._durations: dict[tuple[str, str], list[float]] | None = None
        self._read_at = 0.0

    @property
    def enabled(self) -> bool:
        return self._settings.prestage

    def forget(self) -> None:
        """Drops the cached deploy durations (new outcomes were recorded)."""
        self._durations = None

    async def _recorded(self) -> dict[tuple[str, str], list[float]]:
        if self._durations is None or self._monotonic() - self._read_at > DURATIONS_MAX_AGE:
            self._durations = await self._store.health.deploy_durations(health.DEPLOYS_PER_KIND)
            self._read_at = self._monotonic()
        return self._durations

    async def horizon(self) -> int:
        """Seconds ahead of now the scheduler must look at reservations: the longest lead any
        of them can get; 0 when prestage is off."""
        if not self.enabled:
            return 0
        return health.longest_lead(await self._recorded(), self._settings.prestage_margin_seconds)

    async def plans(
        self, rows: Sequence[ScheduleRecord], nodes: Mapping[str, CachedNode], now: int
    ) -> dict[tuple[str, str], lifecycle.Prestage]:
        """{(node_name, owner): Prestage} for the rows that may be prestaged (ready, nothing
        started, start_date still ahead, node in the cache); {} when prestage is off. The other
        windows on their nodes, which may be in the way, are read from the store."""
        if not self.enabled:
            return {}
        waiting = [
            row
            for row in rows
            if row.status == Status.READY and not row.started and not row.pending and not row.ending
            and now < row.start_date and row.node_name in nodes
        ]
        if not waiting:
            return {}
        props = await self._store.schedule.action_props_for([(row.node_name, row.owner) for row in waiting])
        recorded = await self._recorded()
        windows = await self._store.schedule.windows({row.node_name for row in waiting})
        plans = {}
        for row in waiting:
            node_type = nodes[row.node_name].type
            environment = props.get((row.node_name, row.owner), {}).get("environment", "")
            lead = health.prestage_lead(
                recorded.get((node_type, environment), []), node_type, self._settings.prestage_margin_seconds
            )
            others = tuple(w for w in windows.get(row.node_name, []) if w.owner != row.owner)
            plans[(row.node_name, row.owner)] = lifecycle.Prestage(lead, others, self._settings.turnaround_seconds)
        return plans
