"""Reservations: reserving nodes for a window, configuring them, and the user's actions on them.

A user only ever sees and acts on their own reservations; any other node name answers NotFound,
so whether someone else holds it does not leak. The service never calls StartAction itself: it
records the intention (`pending`) and wakes the scheduler, the one place that drives agents.

It decides nothing about a reservation's life either: which nodes a request gets, the
turnaround gap, READY or CONFIGURING, and what reboot, deploy, destroy, extend, an
administrator's end and move do are pure functions of controller/lifecycle.py. The service
checks the request, hands those functions to the store where they must run inside its write
transaction (reserve, extend, configure, move), and writes the others' decisions as
compare-and-sets.

Administrators see and act on every reservation (`admin_*`): list them with filters, end one
(with destroy) or move one to another node; the owner sees what was done in the reservation's
`notice`. Ended reservations are kept as history: each user reads theirs, administrators all.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edgebed.controller import health, lifecycle, validation
from edgebed.controller.authz import Authz
from edgebed.controller.domain import (
    AgentCatalog,
    HistoryEntry,
    NodeInfo,
    Reservation,
    ScheduleRecord,
    User,
    overall_progress,
)
from edgebed.controller.errors import AgentUnavailable, Conflict, InvalidInput, InvalidProperties, NotFound
from edgebed.controller.inventory import Inventory
from edgebed.controller.lifecycle import EndReason, Status, UserAction, Window
from edgebed.controller.settings import Settings
from edgebed.controller.store import CachedNode, Store

log = logging.getLogger(__name__)

# A start date this many seconds in the past is still accepted (a form filled in a minute ago
# says "now"); anything older is refused as being in the past.
START_SLACK_SECONDS = validation.START_SLACK_SECONDS
MAX_NODES_PER_REQUEST = 1000
USER_ACTIONS = tuple(action.value for action in UserAction)


# How often ending a reservation re-reads a row the scheduler moved meanwhile before giving up;
# the scheduler changes a row at most a couple of times per poll, so a few tries always do.
_END_ATTEMPTS = 5

# What an administrator's filter on the current reservations may ask for: a status, or those
# ending (being destroyed).
ENDING = "ending"
ADMIN_STATUSES = (*(status.value for status in Status), ENDING)
HISTORY_LIMIT = 1000
# Reservations per page of a paged list (pages and API): at most, and when not said.
PAGE_LIMIT = 1000
PAGE_DEFAULT = 100
# The orders a paged list of reservations comes in (ScheduleRepository.page_schedule), with
# the type of each part of the key a cursor holds.
PAGE_ORDERS: dict[str, tuple[type, ...]] = {
    "node": (str, str),
    "bin": (int, str, str, str),
    "start": (int, str, str),
}


@dataclasses.dataclass(frozen=True)
class ReservationPage:
    """One page of a paged list: its reservations, and the key of the last one when more
    follow (None on the last page); a cursor carries `next_key` to ask for the next page."""

    reservations: list[Reservation]
    next_key: tuple[Any, ...] | None


def check_page_key(order: str, key: Any) -> tuple[Any, ...]:
    """`key` as a tuple of the order's key types; InvalidInput when it does not fit `order`
    (a cursor from another list, or made up)."""
    types = PAGE_ORDERS.get(order)
    if types is None:
        raise InvalidInput(f"unknown order; choose one of {', '.join(PAGE_ORDERS)}")
    if (
        not isinstance(key, (list, tuple))
        or len(key) != len(types)
        or not all(type(part) is kind for part, kind in zip(key, types, strict=False))
        or any(isinstance(part, str) and len(part) > 254 for part in key)
        or any(isinstance(part, int) and not 0 <= part < 2**62 for part in key)
    ):
        raise InvalidInput("the cursor does not belong to this list")
    return tuple(key)


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= PAGE_LIMIT:
        raise InvalidInput(f"the limit must be a whole number between 1 and {PAGE_LIMIT}")
    return limit


def node_matches(node: CachedNode | NodeInfo, wanted: Mapping[str, str]) -> bool:
    """A property filter: node properties, plus `type`, `agent` and `name` of the node itself."""
    for key, value in wanted.items():
        have: str | None
        if key == "type":
            have = node.type
        elif key == "agent":
            have = node.agent
        elif key == "name":
            have = node.name
        else:
            have = node.properties.get(key)
        if have != value:
            return False
    return True


class Reservations:
    def __init__(
        self,
        store: Store,
        inventory: Inventory,
        authz: Authz,
        settings: Settings,
        *,
        clock: Callable[[], float],
        wake_scheduler: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._inventory = inventory
        self._authz = authz
        self._settings = settings
        self._clock = clock
        self.wake_scheduler = wake_scheduler

    def _now(self) -> int:
        return int(self._clock())

    # -- reserving -----------------------------------------------------------------------

    async def reserve(
        self,
        user: User,
        *,
        nodes: list[str] | None = None,
        filter: dict[str, str] | None = None,
        count: int | None = None,
        start_date: int,
        duration_hours: float,
    ) -> list[str]:
        owner = await self._authz.require_authorized(user)
        now = self._now()
        start = validation.start_date(start_date)
        hours = validation.duration_hours(
            duration_hours, self._settings.min_duration_hours, self._settings.max_duration_hours
        )
        if start < now - START_SLACK_SECONDS:
            raise InvalidInput("the start date is in the past")
        end = start + max(1, math.floor(hours * 3600))

        if nodes is not None and (filter is not None or count is not None):
            raise InvalidInput("give either a list of nodes, or a filter with a count, not both")
        if nodes is not None:
            candidates, cached = await self._named_candidates(nodes)
            count = len(candidates)
            all_or_nothing = True
        else:
            candidates, cached, count = await self._filtered_candidates(filter, count)
            all_or_nothing = False

        status_for, props_for = await self._initial_configuration(owner, candidates, cached)
        turnaround = self._settings.turnaround_seconds
        # Nodes chosen by filter and count: the healthiest first (read outside the transaction:
        # a preference, not a rule that must hold at the write).
        scores = None
        if not all_or_nothing:
            scores = health.health_scores(await self._store.health.health(candidates), candidates)

        def choose(windows: Mapping[str, Sequence[Window]], unavailable: Mapping[str, str]) -> list[str]:
            # Run by the store on the windows and the nodes in maintenance (or being removed)
            # it reads inside its write transaction.
            return lifecycle.choose_nodes(
                candidates, windows, owner=owner.email, count=count, start=start, end=end,
                turnaround=turnaround, all_or_nothing=all_or_nothing, unavailable=unavailable,
                health=scores,
            )

        chosen = await self._store.schedule.reserve(
            owner.email,
            candidates=candidates,
            start=start,
            end=end,
            choose=choose,
            status_for=status_for,
            props_for=props_for,
            request_filter="" if nodes is not None else json.dumps(dict(sorted((filter or {}).items()))),
        )
        log.info("%s reserved %s from %d to %d", owner.email, ", ".join(chosen), start, end)
        if start <= now:
            self.wake_scheduler()
        return chosen

    async def _named_candidates(self, nodes: Any) -> tuple[list[str], dict[str, CachedNode]]:
        if not isinstance(nodes, list) or not nodes:
            raise InvalidInput("name at least one node")
        if len(nodes) > MAX_NODES_PER_REQUEST:
            raise InvalidInput(f"at most {MAX_NODES_PER_REQUEST} nodes per request")
        if not all(isinstance(n, str) for n in nodes):
            raise InvalidInput("node names must be text")
        if len(set(nodes)) != len(nodes):
            raise InvalidInput("a node is named twice")
        cached = await self._inventory.cached_nodes(nodes)
        unknown = [n for n in nodes if n not in cached]
        if unknown:
            shown = ", ".join(repr(n[:64]) for n in unknown[:5])
            raise InvalidInput(f"unknown node{'s' if len(unknown) > 1 else ''}: {shown}")
        for name in nodes:
            if not cached[name].connected:
                raise AgentUnavailable(
                    f"node {name} belongs to agent {cached[name].agent}, which is disconnected"
                )
        return list(nodes), cached

    async def _filtered_candidates(self, filter: Any, count: Any) -> tuple[list[str], dict[str, CachedNode], int]:
        if filter is None:
            filter = {}
        if not isinstance(filter, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in filter.items()
        ):
            raise InvalidInput("the filter must map property names to text values")
        if isinstance(count, bool) or not isinstance(count, int):
            raise InvalidInput("the count must be a whole number of nodes")
        if not 1 <= count <= MAX_NODES_PER_REQUEST:
            raise InvalidInput(f"the count must be between 1 and {MAX_NODES_PER_REQUEST}")
        cached = await self._inventory.cached_nodes()
        matching = [node for node in cached.values() if node_matches(node, filter)]
        connected = sorted(node.name for node in matching if node.connected)
        if len(connected) < count:
            raise Conflict(
                f"only {len(connected)} nodes of connected agents match the filter; {count} requested"
            )
        return connected, cached, count

    async def _initial_configuration(
        self, owner: User, candidates: list[str], cached: dict[str, CachedNode]
    ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        """Status and prefilled properties (the account's SSH key) of each candidate's row."""
        status_for: dict[str, str] = {}
        props_for: dict[str, dict[str, str]] = {}
        types: dict[str, Any] = {}
        for name in candidates:
            agent = cached[name].agent
            if agent not in types:
                types[agent] = await self._inventory.node_type_of_agent(agent)
            node_type = types[agent]
            props: dict[str, str] = {}
            if node_type is None:
                status_for[name] = Status.CONFIGURING
            else:
                if owner.ssh_key and node_type.property("ssh_key") is not None:
                    props["ssh_key"] = owner.ssh_key
                required = {spec.name for spec in node_type.properties if spec.required}
                status_for[name] = lifecycle.configured_status(required, props)
            props_for[name] = props
        return status_for, props_for

    # -- reading -------------------------------------------------------------------------

    async def _to_domain(
        self,
        records: list[ScheduleRecord],
        props: dict[tuple[str, str], dict[str, str]],
    ) -> list[Reservation]:
        nodes = await self._inventory.cached_nodes({r.node_name for r in records})
        catalogs: dict[str, AgentCatalog] = await self._inventory.catalogs() if records else {}
        maintained = {
            m.node_name: m.reason
            for m in await self._store.maintenance.list_maintenance({r.node_name for r in records})
        }
        result = []
        for record in records:
            node = nodes.get(record.node_name)
            properties = dict(props.get((record.node_name, record.owner), {}))
            default_user = ""
            missing: list[str] = []
            catalog = catalogs.get(node.agent) if node else None
            if catalog is not None:
                for env in catalog.environments:
                    if env.name == properties.get("environment"):
                        default_user = env.default_user
                if catalog.node_type is not None:
                    missing = [
                        spec.name for spec in catalog.node_type.properties
                        if spec.required and spec.name not in properties
                    ]
            result.append(
                Reservation(
                    node_name=record.node_name,
                    owner=record.owner,
                    bin=record.bin,
                    start_date=record.start_date,
                    end_date=record.end_date,
                    status=record.status,
                    action_state=record.action_state,
                    progress=overall_progress(
                        record.state_idx, record.state_count, record.progress, lifecycle.action_finished(record)
                    ),
                    process=lifecycle.shown_process(record),
                    state_idx=record.state_idx,
                    state_count=record.state_count,
                    properties=properties,
                    node_ip=record.node_ip or (node.properties.get("ip", "") if node else ""),
                    default_user=default_user,
                    agent=node.agent if node else "",
                    type=node.type if node else "",
                    pending=record.pending,
                    last_error=record.last_error,
                    missing=missing,
                    ending=record.ending,
                    notice=record.notice,
                    node_maintenance=maintained.get(record.node_name, ""),
                    end_reason=record.end_reason,
                    action_error=record.action_error,
                )
            )
        return result

    async def list_reservations(self, user: User) -> list[Reservation]:
        owner = await self._authz.require_authorized(user)
        records = await self._store.schedule.list_schedule(owner=owner.email)
        return await self._to_domain(records, await self._store.schedule.action_props(owner=owner.email))

    async def live_states(self, user: User) -> list[Reservation]:
        """What the manage page polls: from the database only, never from an agent."""
        return await self.list_reservations(user)

    async def list_page(
        self, user: User, *, order: str = "node", after: Any = None, limit: Any = PAGE_DEFAULT
    ) -> ReservationPage:
        """One page of the caller's reservations in `order` ("node": by node name, the API's;
        "bin": by bin, those without one last, then node name: the manage page's), at most
        `limit` (1..PAGE_LIMIT), after the key `after` (a page's next_key; None: the first
        page). Only the page's rows are read and converted. InvalidInput for a bad limit, order
        or key."""
        owner = await self._authz.require_authorized(user)
        return await self._page(order, after, limit, owner=owner.email)

    async def count(self, user: User) -> int:
        """How many reservations the caller holds."""
        owner = await self._authz.require_authorized(user)
        return await self._store.schedule.count_schedule(owner=owner.email)

    async def admin_page(
        self,
        actor: User,
        *,
        owner: str | None = None,
        node: str | None = None,
        agent: str | None = None,
        status: str | None = None,
        after: Any = None,
        limit: Any = PAGE_DEFAULT,
    ) -> ReservationPage:
        """One page of every current reservation, by start date then node name and owner (as
        `admin_list`), filtered the same way; paged as `list_page`."""
        await self._authz.require_admin(actor)
        if status and status not in ADMIN_STATUSES:
            raise InvalidInput(f"the status must be one of {', '.join(ADMIN_STATUSES)}")
        return await self._page(
            "start", after, limit, owner=owner or None, node=node or None, agent=agent or None,
            status=(status if status and status != ENDING else None),
            ending=(True if status == ENDING else False if status else None),
        )

    async def _page(self, order: str, after: Any, limit: Any, **filters: Any) -> ReservationPage:
        limit = _check_limit(limit)
        key = None if after is None else check_page_key(order, after)
        if order not in PAGE_ORDERS:
            raise InvalidInput(f"unknown order; choose one of {', '.join(PAGE_ORDERS)}")
        schedule = self._store.schedule
        records, more = await schedule.page_schedule(order=order, limit=limit, after=key, **filters)
        props = await schedule.action_props_for((r.node_name, r.owner) for r in records)
        reservations = await self._to_domain(records, props)
        return ReservationPage(reservations, schedule.order_key(records[-1], order) if more and records else None)

    async def _record(self, owner: str, node_name: Any) -> ScheduleRecord:
        record = None
        if isinstance(node_name, str) and len(node_name) <= 64:
            record = await self._store.schedule.get_schedule(node_name, owner)
        if record is None:
            raise NotFound(f"you have no reservation on node {str(node_name)[:64]}")
        return record

    async def _one(self, record: ScheduleRecord) -> Reservation:
        props = await self._store.schedule.action_props(owner=record.owner, node=record.node_name)
        return (await self._to_domain([record], props))[0]

    async def get_reservation(self, user: User, node_name: str) -> Reservation:
        owner = await self._authz.require_authorized(user)
        return await self._one(await self._record(owner.email, node_name))

    # -- configuring -----------------------------------------------------------------------

    async def configure(
        self, user: User, node_name: str, *, bin: str | None = None, properties: dict[str, str]
    ) -> Reservation:
        """Sets the bin and action properties of the caller's reservation on `node_name` ("" unsets
        a property); READY once every required property is set (`missing` names the others).

        Each value is checked against the constraints its agent declared (allowed values, length,
        pattern; SSH keys parsed), so a bad one is refused now rather than by the agent when the
        deploy starts: InvalidProperties naming every wrong property, and nothing is written.
        NotFound when the caller holds no reservation on the node; AgentUnavailable when the
        node type is unknown while its agent is disconnected.
        """
        owner = await self._authz.require_authorized(user)
        record = await self._record(owner.email, node_name)
        if bin is not None:
            bin = validation.bin_name(bin)
        if properties is None:
            properties = {}
        if not isinstance(properties, dict) or not all(isinstance(k, str) for k in properties):
            raise InvalidInput("properties must map names to values")
        node = (await self._inventory.cached_nodes([record.node_name])).get(record.node_name)
        if node is None:
            raise Conflict(f"node {record.node_name} is no longer in the inventory")
        node_type = await self._inventory.node_type_of_agent(node.agent)
        if node_type is None:
            raise AgentUnavailable(
                f"the properties of node {record.node_name} are unknown while agent {node.agent} is disconnected"
            )
        catalog = (await self._inventory.catalogs()).get(node.agent)
        environment_names = [env.name for env in catalog.environments] if catalog else []

        set_props: dict[str, str] = {}
        unset: list[str] = []
        # Every wrong property is named at once, not the first only.
        problems: dict[str, str] = {}
        for prop, raw in properties.items():
            spec = node_type.property(prop)
            if spec is None:
                known = ", ".join(p.name for p in node_type.properties)
                problems[prop[:64]] = f"{node.type} nodes have no such property (known: {known})"
                continue
            try:
                value = validation.property_value(raw, secret=spec.secret)
                if value == "":
                    unset.append(prop)
                    continue
                allowed = environment_names if prop == "environment" and environment_names else None
                problem = validation.property_problem(spec, value, allowed)
                if problem:
                    raise InvalidInput(problem)
                if prop == "ssh_key":
                    value = validation.ssh_keys(value)
            except InvalidInput as error:
                problems[prop] = error.message
                continue
            set_props[prop] = value
        if problems:
            raise InvalidProperties.of(problems)
        required = {spec.name for spec in node_type.properties if spec.required}
        updated = await self._store.schedule.configure(
            record.node_name,
            owner.email,
            bin=bin,
            set_props=set_props,
            unset_props=unset,
            status_after=lambda row, have: lifecycle.status_after_configure(row, have, required),
        )
        if updated is None:
            raise NotFound(f"you have no reservation on node {record.node_name}")
        # Names only: values may be secrets (os_password) and are never logged.
        log.info(
            "%s configured %s: set %s, unset %s -> %s",
            owner.email, record.node_name, sorted(set_props), sorted(unset), updated.status,
        )
        if lifecycle.due_to_start(updated, self._now()):
            self.wake_scheduler()
        return await self._one(updated)

    # -- acting ----------------------------------------------------------------------------

    async def act(
        self, user: User, node_name: str, action: str, *, hours: float | None = None
    ) -> Reservation:
        """Reboot, deploy, destroy or extend the caller's reservation on `node_name`; the
        reservation afterwards (a cancelled one as it was, ending now). `hours` (extend only):
        how much later the reservation ends; None doubles its duration. InvalidInput for another
        action or hours that are not a positive number, NotFound when the caller holds no
        reservation on the node, Conflict when the reservation's state does not allow it
        (lifecycle says why)."""
        owner = await self._authz.require_authorized(user)
        if action not in USER_ACTIONS:
            raise InvalidInput(f"unknown action; expected one of {', '.join(USER_ACTIONS)}")
        if hours is not None and action != UserAction.EXTEND:
            raise InvalidInput("hours go with extend only")
        by_seconds = None
        if hours is not None:
            by_seconds = max(1, math.floor(
                validation.positive_hours(hours, self._settings.extend_cap_hours) * 3600
            ))
        record = await self._record(owner.email, node_name)
        if action == UserAction.EXTEND:
            return await self._one(await self._extend(record, by_seconds))
        if action == UserAction.DESTROY:
            remaining = await self._end(record, EndReason.OWNER, owner.email)
            if remaining is None:
                # Never started: the reservation is simply cancelled.
                return await self._cancelled(record)
            return await self._one(remaining)
        return await self._one(await self._start(record, UserAction(action)))

    async def _cancelled(self, record: ScheduleRecord) -> Reservation:
        """The reservation as it was, ending now: its rows are gone, it is no longer listed."""
        reservation = (await self._to_domain([record], {}))[0]
        return dataclasses.replace(reservation, end_date=min(record.end_date, self._now()))

    async def _start(self, record: ScheduleRecord, action: UserAction) -> ScheduleRecord:
        in_maintenance = bool(await self._store.maintenance.list_maintenance([record.node_name]))
        decision = lifecycle.on_user_action(record, action, self._now(), in_maintenance=in_maintenance)
        # None only for a destroy of an ending row; destroy goes through _end.
        assert decision is not None, f"{action} always decides"
        [applied] = await self._store.schedule.update_schedule([decision])
        if not applied:
            raise Conflict(f"node {record.node_name} changed meanwhile; try again")
        log.info("%s asked for %s on %s", record.owner, action, record.node_name)
        self.wake_scheduler()
        return await self._record(record.owner, record.node_name)

    async def _end(
        self, record: ScheduleRecord, reason: EndReason, by: str, notice: str = ""
    ) -> ScheduleRecord | None:
        """Ends a reservation now (lifecycle.on_end): cancels it if nothing ever ran, else
        destroys the node (the scheduler removes the rows once destroyed). What remains; None
        when the rows are gone."""
        for _ in range(_END_ATTEMPTS):
            decision = lifecycle.on_end(record, self._now(), reason=reason, by=by, notice=notice)
            if decision is None:
                return record  # already ending
            [applied] = await self._store.schedule.update_schedule([decision], now=self._now())
            if applied and decision.delete:
                log.info("%s cancelled the reservation of %s by %s (%s)", by or "edgebed", record.node_name,
                         record.owner, reason)
                return None
            if applied:
                log.info("%s ended the reservation of %s by %s (%s)", by or "edgebed", record.node_name,
                         record.owner, reason)
                self.wake_scheduler()
            # Applied: what remains. Missed: the scheduler moved the row between the read and
            # the write (it sent an action or recorded an answer); ending is the last word, so
            # decide again on what is there now.
            fresh = await self._store.schedule.get_schedule(record.node_name, record.owner)
            if fresh is None or applied:
                return fresh
            record = fresh
        raise Conflict(f"node {record.node_name} keeps changing; try again")

    async def _extend(self, record: ScheduleRecord, by_seconds: int | None = None) -> ScheduleRecord:
        now = self._now()
        cap = math.floor(self._settings.extend_cap_hours * 3600)
        turnaround = self._settings.turnaround_seconds

        def decide(row: ScheduleRecord, windows: Sequence[Window]) -> Mapping[str, Any]:
            # Run by the store on the row and windows it reads inside its write transaction.
            return lifecycle.on_extend(
                row, now, windows, cap_seconds=cap, turnaround=turnaround, by_seconds=by_seconds
            ).changes

        updated = await self._store.schedule.extend(record.node_name, record.owner, decide=decide)
        if updated is None:
            raise NotFound(f"you have no reservation on node {record.node_name}")
        log.info("%s extended %s to %d", record.owner, record.node_name, updated.end_date)
        return updated

    async def end_all(self, owner: str) -> None:
        """Ends every reservation of an account being deleted."""
        for record in await self._store.schedule.list_schedule(owner=owner):
            await self._end(record, EndReason.ACCOUNT_DELETED, "")

    async def end_on_nodes(self, nodes: Sequence[str], reason: EndReason, by: str) -> list[ScheduleRecord]:
        """Ends every reservation on `nodes` (an administrator `by` removes them or their
        agent): those never started are cancelled, the others destroyed. The reservations that
        remain until their destroy is over."""
        remaining = []
        for record in await self._store.schedule.list_schedule(nodes=nodes):
            left = await self._end(record, reason, by, notice=f"ended: an administrator removes {record.node_name}")
            if left is not None:
                remaining.append(left)
        return remaining

    # -- history ---------------------------------------------------------------------------

    async def history(
        self, user: User, *, before: Any = None, limit: Any = 100
    ) -> list[HistoryEntry]:
        """The caller's ended reservations, newest first (see `_history_page`)."""
        owner = await self._authz.require_authorized(user)
        return await self._history_page(owner=owner.email, node=None, before=before, limit=limit)

    async def admin_history(
        self, actor: User, *, owner: str | None = None, node: str | None = None, before: Any = None, limit: Any = 100
    ) -> list[HistoryEntry]:
        """Everyone's ended reservations, newest first, filtered by owner and node."""
        await self._authz.require_admin(actor)
        return await self._history_page(owner=owner or None, node=node or None, before=before, limit=limit)

    async def _history_page(
        self, *, owner: str | None, node: str | None, before: Any, limit: Any
    ) -> list[HistoryEntry]:
        """At most `limit` (1..HISTORY_LIMIT) entries older than the entry id `before` (None:
        from the newest). InvalidInput for a limit or id that is not a positive whole number."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= HISTORY_LIMIT:
            raise InvalidInput(f"the limit must be a whole number between 1 and {HISTORY_LIMIT}")
        if before is not None and (isinstance(before, bool) or not isinstance(before, int) or before < 1):
            raise InvalidInput("before must be the id of a history entry (a positive whole number)")
        return await self._store.schedule.list_history(owner=owner, node=node, before=before, limit=limit)

    # -- administrators --------------------------------------------------------------------

    async def admin_list(
        self,
        actor: User,
        *,
        owner: str | None = None,
        node: str | None = None,
        agent: str | None = None,
        status: str | None = None,
    ) -> list[Reservation]:
        """Every current reservation, filtered by owner, node, agent and status (a Status, or
        ENDING for those being destroyed); InvalidInput for another status."""
        await self._authz.require_admin(actor)
        if status and status not in ADMIN_STATUSES:
            raise InvalidInput(f"the status must be one of {', '.join(ADMIN_STATUSES)}")
        records = await self._store.schedule.list_schedule(owner=owner or None, node=node or None)
        if status == ENDING:
            records = [r for r in records if r.ending]
        elif status:
            records = [r for r in records if r.status == status and not r.ending]
        reservations = await self._to_domain(records, await self._store.schedule.action_props())
        if agent:
            reservations = [r for r in reservations if r.agent == agent]
        return sorted(reservations, key=lambda r: (r.start_date, r.node_name, r.owner))

    async def _any_record(self, node_name: Any, owner: Any) -> ScheduleRecord:
        record = None
        if isinstance(node_name, str) and isinstance(owner, str) and len(node_name) <= 64 and len(owner) <= 254:
            record = await self._store.schedule.get_schedule(node_name, owner)
        if record is None:
            raise NotFound(f"{str(owner)[:254]} has no reservation on node {str(node_name)[:64]}")
        return record

    async def admin_end(self, actor: User, node_name: str, owner: str) -> Reservation:
        """Ends anyone's reservation now, with destroy (cancelled when nothing ran); the owner
        sees it ended by an administrator. The reservation afterwards (a cancelled one as it
        was, ending now). NotFound when there is no such reservation."""
        admin = await self._authz.require_admin(actor)
        record = await self._any_record(node_name, owner)
        remaining = await self._end(record, EndReason.ADMIN, admin.email, notice="ended by an administrator")
        if remaining is None:
            return await self._cancelled(record)
        return await self._one(remaining)

    async def admin_move(self, actor: User, node_name: str, owner: str, to: str | None = None) -> Reservation:
        """Moves anyone's reservation to node `to`, or to the first free node of the same type
        matching the filter it was reserved with (any node of its type when it named its
        node). Not started yet: the reservation itself moves, with its window and properties.
        Started: this node is destroyed, and the reservation continues on the other node with
        the rest of its window (deployed there at once, if configured). The owner is told in
        the reservation's notice. The reservation on its new node.

        NotFound when there is no such reservation; InvalidInput for an unknown node, the same
        node, or a node of another type; Conflict when the reservation is ending, or the node
        (or every candidate) is taken, in maintenance or being removed.
        """
        admin = await self._authz.require_admin(actor)
        record = await self._any_record(node_name, owner)
        cached = await self._inventory.cached_nodes()
        current = cached.get(record.node_name)
        if current is None:
            raise Conflict(f"node {record.node_name} left the inventory; end the reservation instead")
        if to is not None:
            to = validation.name(to, "node")
            target = cached.get(to)
            if target is None:
                raise InvalidInput(f"unknown node: {to!r}")
            if target.name == record.node_name:
                raise InvalidInput(f"the reservation is on node {to} already")
            if target.type != current.type:
                raise InvalidInput(f"node {to} is a {target.type} node; the reservation is for a {current.type} node")
            if not target.connected:
                raise AgentUnavailable(f"node {to} belongs to agent {target.agent}, which is disconnected")
            candidates = [to]
        else:
            wanted = json.loads(record.request_filter) if record.request_filter else {}
            candidates = sorted(
                node.name
                for node in cached.values()
                if node.type == current.type and node.name != record.node_name and node.connected
                and node_matches(node, wanted)
            )
            if not candidates:
                raise Conflict(f"no other connected {current.type} node matches the reservation's filter")
        now = self._now()
        turnaround = self._settings.turnaround_seconds
        maintenance = await self._store.maintenance.list_maintenance([record.node_name])
        why = f": {record.node_name} is in maintenance ({maintenance[0].reason})" if maintenance else ""
        notice = f"moved here from node {record.node_name} by an administrator{why}"

        def decide(row: ScheduleRecord) -> lifecycle.Decision:
            return lifecycle.on_move(row, now, by=admin.email, notice=notice)

        def choose(
            row: ScheduleRecord, windows: Mapping[str, Sequence[Window]], unavailable: Mapping[str, str]
        ) -> list[str]:
            return lifecycle.choose_nodes(
                candidates, windows, owner=row.owner, count=1, start=max(row.start_date, now), end=row.end_date,
                turnaround=turnaround, all_or_nothing=to is not None, unavailable=unavailable,
            )

        moved = await self._store.schedule.move(
            record.node_name, record.owner, candidates=candidates, decide=decide, choose=choose,
            status_after=lifecycle.moved_status, notice=notice, now=now,
        )
        if moved is None:
            raise NotFound(f"{owner} has no reservation on node {node_name}")
        target_name, updated = moved
        log.info("%s moved the reservation of %s by %s to %s", admin.email, record.node_name, record.owner, target_name)
        self.wake_scheduler()
        return await self._one(updated)
