"""Counters and histograms of the controller, rendered in Prometheus text format for /metrics.

Call metrics are kept in memory (they restart with the process, as Prometheus expects);
reservation and action counts, each node's health (controller/health.py), and which controller
drives which agent (controller/leases.py) are read from the database when rendered, so every
controller sharing the database shows the same.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import TYPE_CHECKING

from edgebed.controller.domain import NodeHealth
from edgebed.controller.lifecycle import Status
from edgebed.controller.store.leases import LEADER

if TYPE_CHECKING:
    from edgebed.controller.store import Store

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    def __init__(self, store: Store | None = None, *, lease_seconds: float = 15.0) -> None:
        self._store = store
        self._lease_seconds = lease_seconds
        self._lock = threading.Lock()
        self._calls: dict[tuple[str, str, str], int] = defaultdict(int)
        self._bucket_counts: dict[tuple[str, str], list[int]] = {}
        self._sums: dict[tuple[str, str], float] = defaultdict(float)
        self._counts: dict[tuple[str, str], int] = defaultdict(int)
        self._polls = 0
        self._clock_paused = False
        self._clock_offset = 0.0

    def record_call(self, agent: str, method: str, outcome: str, seconds: float) -> None:
        with self._lock:
            self._calls[(agent, method, outcome)] += 1
            key = (agent, method)
            buckets = self._bucket_counts.setdefault(key, [0] * len(LATENCY_BUCKETS))
            for i, bound in enumerate(LATENCY_BUCKETS):
                if seconds <= bound:
                    buckets[i] += 1
            self._sums[key] += seconds
            self._counts[key] += 1

    def record_poll(self) -> None:
        with self._lock:
            self._polls += 1

    def record_clock(self, *, paused: bool, offset_seconds: float) -> None:
        """The clock guard's state (controller.clock): paused, and the wall clock's offset."""
        with self._lock:
            self._clock_paused = paused
            self._clock_offset = offset_seconds

    def calls(self, agent: str | None = None, method: str | None = None, outcome: str | None = None) -> int:
        """How many calls match; for tests and the admin page."""
        with self._lock:
            return sum(
                n
                for (a, m, o), n in self._calls.items()
                if (agent is None or a == agent)
                and (method is None or m == method)
                and (outcome is None or o == outcome)
            )

    def _render_calls(self) -> list[str]:
        lines = [
            "# HELP edgebed_agent_calls_total gRPC calls from the controller to agents.",
            "# TYPE edgebed_agent_calls_total counter",
        ]
        with self._lock:
            for (agent, method, outcome), n in sorted(self._calls.items()):
                lines.append(
                    f'edgebed_agent_calls_total{{agent="{_label(agent)}",method="{method}",'
                    f'outcome="{outcome}"}} {n}'
                )
            lines += [
                "# HELP edgebed_agent_call_seconds Latency of gRPC calls to agents.",
                "# TYPE edgebed_agent_call_seconds histogram",
            ]
            for (agent, method), buckets in sorted(self._bucket_counts.items()):
                labels = f'agent="{_label(agent)}",method="{method}"'
                for bound, n in zip(LATENCY_BUCKETS, buckets, strict=True):
                    lines.append(f'edgebed_agent_call_seconds_bucket{{{labels},le="{bound:g}"}} {n}')
                total = self._counts[(agent, method)]
                lines.append(f'edgebed_agent_call_seconds_bucket{{{labels},le="+Inf"}} {total}')
                lines.append(f"edgebed_agent_call_seconds_sum{{{labels}}} {self._sums[(agent, method)]:.6f}")
                lines.append(f"edgebed_agent_call_seconds_count{{{labels}}} {total}")
            lines += [
                "# HELP edgebed_scheduler_polls_total Scheduler polls since start.",
                "# TYPE edgebed_scheduler_polls_total counter",
                f"edgebed_scheduler_polls_total {self._polls}",
                "# HELP edgebed_clock_paused 1 while a wall clock jump pauses starting and ending reservations.",
                "# TYPE edgebed_clock_paused gauge",
                f"edgebed_clock_paused {int(self._clock_paused)}",
                "# HELP edgebed_clock_offset_seconds How far the wall clock jumped against the monotonic clock.",
                "# TYPE edgebed_clock_offset_seconds gauge",
                f"edgebed_clock_offset_seconds {self._clock_offset:.3f}",
            ]
        return lines

    async def render(self) -> str:
        lines: list[str] = []
        if self._store is not None:
            statuses = await self._store.schedule.count_schedule_by("status")
            states = await self._store.schedule.count_schedule_by("action_state")
            lines += [
                "# HELP edgebed_reservations Reservations by status.",
                "# TYPE edgebed_reservations gauge",
            ]
            # Every status is listed, at 0 when no reservation has it, so the series never vanish.
            for status in sorted(set(statuses) | {status.value for status in Status}):
                lines.append(f'edgebed_reservations{{status="{_label(status)}"}} {statuses.get(status, 0)}')
            lines += [
                "# HELP edgebed_actions Reserved nodes by the state of their current action.",
                "# TYPE edgebed_actions gauge",
            ]
            for state, n in sorted(states.items()):
                if state:
                    lines.append(f'edgebed_actions{{state="{_label(state)}"}} {n}')
            # An alert on this is the operator's cue that a node waits for them.
            held = await self._store.maintenance.active()
            lines += [
                "# HELP edgebed_nodes_in_maintenance Nodes never handed out until an administrator releases them.",
                "# TYPE edgebed_nodes_in_maintenance gauge",
                f"edgebed_nodes_in_maintenance {len(held)}",
            ]
            lines += _render_health(await self._store.health.health())
            lines += await _render_leases(self._store, self._lease_seconds)
        lines += self._render_calls()
        return "\n".join(lines) + "\n"


async def _render_leases(store: Store, lease_seconds: float) -> list[str]:
    """Which controller drives which agent, since when, and the controllers' heartbeats."""
    instances = await store.leases.instances(lease_seconds)
    agents = {agent.name for agent in await store.agents.list_agents()} | {LEADER}
    leases = [lease for lease in await store.leases.leases() if lease.agent in agents]
    lines = [
        "# HELP edgebed_controller_up Controllers sharing the database: 1 while its heartbeat is younger than a lease.",
        "# TYPE edgebed_controller_up gauge",
    ]
    for instance in instances:
        labels = f'controller="{_label(instance.id)}",host="{_label(instance.host)}",role="{_label(instance.role)}"'
        lines.append(f"edgebed_controller_up{{{labels}}} {int(instance.alive)}")
    lines += [
        "# HELP edgebed_agent_driven_by The controller holding the agent's lease (1); agent '*': the work of no agent.",
        "# TYPE edgebed_agent_driven_by gauge",
    ]
    for lease in leases:
        if lease.held:
            labels = f'agent="{_label(lease.agent)}",controller="{_label(lease.holder)}"'
            lines.append(f"edgebed_agent_driven_by{{{labels}}} 1")
    lines += [
        "# HELP edgebed_agent_lease_age_seconds Seconds since the agent's lease holder took it (database clock).",
        "# TYPE edgebed_agent_lease_age_seconds gauge",
    ]
    for lease in leases:
        if lease.held:
            lines.append(f'edgebed_agent_lease_age_seconds{{agent="{_label(lease.agent)}"}} {lease.age:.3f}')
    lines += [
        "# HELP edgebed_agent_lease_renewed_seconds_ago Seconds since the agent's lease was last renewed.",
        "# TYPE edgebed_agent_lease_renewed_seconds_ago gauge",
    ]
    for lease in leases:
        if lease.held:
            agent = _label(lease.agent)
            lines.append(f'edgebed_agent_lease_renewed_seconds_ago{{agent="{agent}"}} {lease.renewed_ago:.3f}')
    lines += [
        "# HELP edgebed_agent_lease_token The fencing token of the agent's lease: one more at each change of holder.",
        "# TYPE edgebed_agent_lease_token counter",
    ]
    for lease in leases:
        lines.append(f'edgebed_agent_lease_token{{agent="{_label(lease.agent)}"}} {lease.token}')
    return lines


def _render_health(health: dict[str, NodeHealth]) -> list[str]:
    """Per node, over its recorded outcomes: how many, the share that succeeded, power cycles
    per action and the score reservations prefer."""
    families = [
        ("edgebed_node_actions_recorded", "Finished actions recorded for the node (its most recent ones).",
         lambda h: str(h.actions)),
        ("edgebed_node_success_ratio", "Share of the node's recorded actions that did not end lost (0..1).",
         lambda h: f"{h.success_rate:.4g}"),
        ("edgebed_node_reboots_per_action", "Power cycles (hard reboots, power cuts) per recorded action.",
         lambda h: f"{h.reboots_per_action:.4g}"),
        ("edgebed_node_health_score", "Health score (0..1) by which reservations by filter prefer nodes.",
         lambda h: f"{h.score:.4g}"),
    ]
    lines: list[str] = []
    for name, text, value in families:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
        for node, node_health in sorted(health.items()):
            lines.append(f'{name}{{node="{_label(node)}"}} {value(node_health)}')
    return lines
