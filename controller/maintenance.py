"""Keeping dirty nodes out of users' hands (administrators only): nodes in maintenance, and
removing an agent or node that still has reservations.

A node in maintenance is never given to a new reservation (lifecycle.choose_nodes), its
reservations not started yet are not deployed, and their owners see why. The controller puts a
node there itself when a destroy ends `lost` (the wipe never completed), when a reservation
ends without a destroy (its node left the inventory, or the agent refused the destroy), and
when `[maintenance] lost_in_a_row` of its actions in a row end `lost`; an administrator may put
one there by hand. Only an administrator takes it out (`release`).

Removing an agent or node that has reservations is refused (Conflict, saying which) unless
forced. A forced removal never skips the wipe: it ends the reservations with a destroy
(`Reservations.end_on_nodes`), records the removal as pending (the agent or node is
*retiring*: it takes no new reservation), and the scheduler carries it out once the last
reservation's rows are gone, i.e. once every destroy ended (destroyed, or lost: the node is then
in maintenance, which outlives the agent's removal).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from edgebed.controller.agents import Agents
from edgebed.controller.authz import Authz
from edgebed.controller.domain import NodeMaintenance, Removal, Retirement, User
from edgebed.controller.errors import InvalidInput, NotFound
from edgebed.controller.inventory import Inventory, refuse_reserved
from edgebed.controller.lifecycle import EndReason
from edgebed.controller.reservations import Reservations
from edgebed.controller.store import Store
from edgebed.controller.store.maintenance import AGENT, NODE

log = logging.getLogger(__name__)

MAX_REASON = 500


def _reason(value: object) -> str:
    """The administrator's reason: one line of printable text, 1..MAX_REASON characters."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("give the reason the node is in maintenance")
    value = " ".join(value.split())
    if len(value) > MAX_REASON:
        raise InvalidInput(f"the reason is too long (at most {MAX_REASON} characters)")
    if not value.isprintable():
        raise InvalidInput("the reason must be printable text")
    return value


class Maintenance:
    def __init__(
        self,
        store: Store,
        inventory: Inventory,
        agents: Agents,
        reservations: Reservations,
        authz: Authz,
        *,
        clock: Callable[[], float],
        wake_scheduler: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._inventory = inventory
        self._agents = agents
        self._reservations = reservations
        self._authz = authz
        self._clock = clock
        self._wake_scheduler = wake_scheduler

    def _now(self) -> int:
        return int(self._clock())

    # -- maintenance -----------------------------------------------------------------------

    async def list_maintenance(self, actor: User) -> list[NodeMaintenance]:
        """Every node in maintenance, by name, listed by an agent or not."""
        await self._authz.require_admin(actor)
        return await self._store.maintenance.list_maintenance()

    async def enter(self, actor: User, node_name: str, reason: str) -> NodeMaintenance:
        """Puts a node of the inventory in maintenance for `reason` (one already there gets the
        new reason). Its reservations stay: those not started wait, flagged to their owners,
        until it is released or an administrator moves them. NotFound for an unknown node."""
        admin = await self._authz.require_admin(actor)
        reason = _reason(reason)
        node_name = await self._known(node_name)
        entry = await self._store.maintenance.enter(node_name, reason, admin.email, self._now())
        log.info("%s put node %s in maintenance: %s", admin.email, node_name, reason)
        return entry

    async def release(self, actor: User, node_name: str) -> None:
        """Takes a node out of maintenance (its lost count starts again): it may be reserved
        again, and its reservations not started yet are deployed in their window. NotFound
        when it is not in maintenance."""
        admin = await self._authz.require_admin(actor)
        if not isinstance(node_name, str) or not await self._store.maintenance.release(node_name):
            raise NotFound(f"node {str(node_name)[:64]} is not in maintenance")
        log.info("%s released node %s from maintenance", admin.email, node_name)
        self._wake_scheduler()

    async def _known(self, node_name: object) -> str:
        if isinstance(node_name, str) and (await self._inventory.cached_nodes([node_name])).get(node_name):
            return node_name
        raise NotFound(f"no node named {str(node_name)[:64]}")

    # -- removing what still has reservations ----------------------------------------------

    async def list_retirements(self, actor: User) -> list[Retirement]:
        await self._authz.require_admin(actor)
        return await self._store.maintenance.list_retirements()

    async def delete_agent(self, actor: User, name: str, *, force: bool = False) -> Removal:
        """Removes an agent. Without reservations on its nodes: at once. With: Conflict saying
        which, unless `force`; then the reservations end with a destroy, the agent is retiring
        (its nodes take no new reservation), and the scheduler removes it once they are gone:
        Removal(removed=False, waiting_for=...). NotFound for an unknown agent."""
        admin = await self._authz.require_admin(actor)
        if await self._store.agents.get_agent(name) is None:
            raise NotFound(f"no agent named {name}")
        nodes = [node.name for node in (await self._inventory.cached_nodes()).values() if node.agent == name]
        return await self._remove(
            admin, AGENT, name, nodes, force, EndReason.AGENT_REMOVED,
            lambda: self._agents.delete_agent(admin, name),
        )

    async def remove_node(self, actor: User, name: str, *, force: bool = False) -> Removal:
        """Removes a node on its agent, as `delete_agent` does an agent: at once when it has
        no reservation, else Conflict saying which unless `force` (destroy, then removal by the
        scheduler). NotFound for an unknown node."""
        admin = await self._authz.require_admin(actor)
        name = await self._known(name)
        return await self._remove(
            admin, NODE, name, [name], force, EndReason.NODE_REMOVED,
            lambda: self._inventory.remove_node(admin, name),
        )

    async def _remove(
        self,
        admin: User,
        kind: str,
        name: str,
        nodes: list[str],
        force: bool,
        reason: EndReason,
        remove_now: Callable[[], Awaitable[object]],
    ) -> Removal:
        reserved = await self._store.schedule.list_schedule(nodes=nodes)
        if not reserved:
            # The agent (node) removal refuses, in its own transaction, a reservation made
            # since this read.
            await remove_now()
            return Removal(kind, name, removed=True)
        if not force:
            refuse_reserved(f"{kind} {name}", reserved)
        # Recorded before the reservations end, so that none is made on its nodes meanwhile.
        await self._store.maintenance.request_retirement(kind, name, admin.email, self._now())
        remaining = await self._reservations.end_on_nodes(nodes, reason, admin.email)
        if not remaining:
            # Nothing had started: every reservation was cancelled, nothing to destroy.
            await remove_now()
            await self._store.maintenance.end_retirement(kind, name)
            log.info("%s removed %s %s; its reservations were cancelled", admin.email, kind, name)
            return Removal(kind, name, removed=True)
        log.warning(
            "%s removes %s %s once %d reservations are destroyed", admin.email, kind, name, len(remaining)
        )
        self._wake_scheduler()
        return Removal(kind, name, removed=False, waiting_for=[(r.node_name, r.owner) for r in remaining])
