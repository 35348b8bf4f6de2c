"""Node health and expected deploy durations, from the outcomes of finished actions.

The scheduler records an outcome (`NodeOutcome`: final state, duration, power cycles) each time an
agent reports, for a reservation it follows, an action in a final state; the store keeps the
last OUTCOMES_PER_NODE of each node (table `node_outcome`). From them:

- a node's health (`NodeHealth`): success rate, power cycles per action and a score in 0..1,
  shown to administrators (the nodes page), exported at /metrics, and preferred by reservations
  by filter and count (`lifecycle.choose_nodes` takes the scores);
- the expected deploy duration of a node type and environment: the median of its recent
  deploys, or DEFAULT_DEPLOY_SECONDS of the type when none is recorded; `[reservations]
  prestage` starts a deploy that long (plus a margin) before its start_date.

The functions here are pure; `NodeHealthService` is the administrators' read of it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from edgebed.controller.authz import Authz
from edgebed.controller.domain import FINAL_STATES, ActionState, NodeHealth, NodeOutcome, User
from edgebed.controller.store import Store

# Outcomes kept per node, over which its health is computed: recent enough that a repaired node
# recovers within a day or two of use, long enough that one bad deploy is not the whole story.
OUTCOMES_PER_NODE = 20
# Recent deploys per (node type, environment) whose median is the expected duration.
DEPLOYS_PER_KIND = 50
# Expected deploy seconds of a type with no recorded deploy: a Pi's SD card copy over the
# network takes about 10 minutes, a server's POST, PXE and disk write about 20, a sensor's flash
# a few minutes.
DEFAULT_DEPLOY_SECONDS = {"raspberry": 600.0, "node": 1200.0, "sensor": 300.0}
# ... and of a type not listed above.
FALLBACK_DEPLOY_SECONDS = 900.0

# Column sizes of node_outcome: what an agent reports is cut to them where it enters.
_TYPE_LENGTH, _PROCESS_LENGTH, _NAME_LENGTH = 32, 32, 64


def outcome_of(action: ActionState, node_type: str) -> NodeOutcome | None:
    """The outcome to record for an agent's report `action` of a node of type `node_type`; None
    when the action is not in a final state or has no action id (an agent too old to tell one
    action from the next). The agent's values are bounded here: text cut to the column sizes, a
    duration that is not a finite non-negative number taken as 0 (not measured), a negative
    reboot count as 0."""
    if not action.final or action.state not in FINAL_STATES or action.action_id <= 0:
        return None
    duration = float(action.duration_seconds)
    if not math.isfinite(duration) or duration < 0:
        duration = 0.0
    return NodeOutcome(
        node_name=action.node_name[:_NAME_LENGTH],
        type=node_type[:_TYPE_LENGTH],
        process=action.process[:_PROCESS_LENGTH],
        environment=action.environment[:_NAME_LENGTH],
        final_state=action.state,
        action_id=int(action.action_id),
        duration_seconds=duration,
        reboots=max(0, int(action.reboots)),
        finished_at=int(action.updated_at),
    )


def expected_deploy_seconds(durations: Sequence[float], node_type: str) -> float:
    """The median of `durations` (seconds of recent successful deploys of one node type and
    environment), or the type's default when there are none."""
    if durations:
        return float(statistics.median(durations))
    return DEFAULT_DEPLOY_SECONDS.get(node_type, FALLBACK_DEPLOY_SECONDS)


def prestage_lead(durations: Sequence[float], node_type: str, margin_seconds: int) -> int:
    """Seconds before start_date at which a prestaged deploy starts: the expected deploy
    duration plus `margin_seconds`, rounded up."""
    return math.ceil(expected_deploy_seconds(durations, node_type) + margin_seconds)


def longest_lead(durations: dict[tuple[str, str], list[float]], margin_seconds: int) -> int:
    """The largest lead any reservation can get with these recorded `durations` (by node type
    and environment) and the defaults: how far ahead the scheduler must look."""
    expected = [expected_deploy_seconds(found, node_type) for (node_type, _), found in durations.items()]
    expected += [*DEFAULT_DEPLOY_SECONDS.values(), FALLBACK_DEPLOY_SECONDS]
    return math.ceil(max(expected) + margin_seconds)


def health_scores(health: dict[str, NodeHealth], nodes: Sequence[str]) -> dict[str, float]:
    """{node: score} for `nodes`; 1.0 for a node without a record."""
    return {node: health[node].score if node in health else 1.0 for node in nodes}


class NodeHealthService:
    """What administrators read of the nodes' health."""

    def __init__(self, store: Store, authz: Authz) -> None:
        self._store = store
        self._authz = authz

    async def node_health(self, actor: User) -> dict[str, NodeHealth]:
        """{node: NodeHealth} of every node with a recorded outcome. Forbidden unless `actor`
        is an administrator."""
        await self._authz.require_admin(actor)
        return await self._store.health.health()

    async def outcomes(self, actor: User, node: str) -> list[NodeOutcome]:
        """The node's recorded outcomes, newest first. Forbidden unless `actor` is an
        administrator."""
        await self._authz.require_admin(actor)
        return await self._store.health.outcomes(node)
