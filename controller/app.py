"""Assembles the controller: the store, the agent client, the services and the scheduler."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from argon2 import PasswordHasher

from edgebed.controller.accounts import Accounts
from edgebed.controller.agent_client import AgentClient
from edgebed.controller.agents import AgentCallRecorder, Agents
from edgebed.controller.authz import Authz
from edgebed.controller.clock import ClockGuard, Clocks, boot_clock
from edgebed.controller.health import NodeHealthService
from edgebed.controller.inventory import Inventory
from edgebed.controller.leases import AgentLeases, new_instance_id
from edgebed.controller.login_limits import LoginLimits
from edgebed.controller.maintenance import Maintenance
from edgebed.controller.metrics import Metrics
from edgebed.controller.reservations import Reservations
from edgebed.controller.scheduler import Scheduler
from edgebed.controller.settings import Settings
from edgebed.controller.store import Store, StoreInUse, StoreUnavailable
from edgebed.storage import DatabaseInUse, DatabaseLock, sqlite_file

log = logging.getLogger(__name__)


@dataclass
class Controller:
    settings: Settings
    store: Store
    metrics: Metrics
    client: AgentClient
    accounts: Accounts
    agents: Agents
    inventory: Inventory
    reservations: Reservations
    maintenance: Maintenance
    scheduler: Scheduler
    health: NodeHealthService
    leases: AgentLeases
    login_limits: LoginLimits
    clock: Clocks


@asynccontextmanager
async def open_controller(
    settings: Settings,
    run_scheduler: bool = True,
    *,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = boot_clock,
    password_hasher: PasswordHasher | None = None,
    db_workers: int = 8,
    check_integrity: bool = False,
    role: str | None = None,
) -> AsyncIterator[Controller]:
    """Opens the database (creating or migrating its schema), the agent channels and, with
    run_scheduler, the heartbeat and leases (controller/leases.py) and the scheduler task; closes
    them all on exit, releasing this controller's leases so that another takes its agents.

    `clock` is the wall clock (epoch seconds) and `monotonic` the clock the scheduler checks it
    against (controller.clock); tests inject both. `check_integrity` runs SQLite's quick_check
    first (start-up). `role` is what this controller says it does in its heartbeat (the overview,
    /metrics): with run_scheduler "all" (the default) or "scheduler"; without, "web" starts a
    heartbeat that drives no agent, and None (admin commands; tests that poll by hand, as "all")
    none at all.

    With run_scheduler, a SQLite file is locked for the life of the controller (`<file>.lock`):
    two schedulers would drive the same reservations. StoreInUse when another process holds it,
    StoreDamaged when the file is damaged, StoreUnavailable when the database cannot be opened."""
    # Read first: a bad key file or TLS file stops the controller (one line) before anything is
    # opened.
    secret_key = settings.secret_key()
    identity = settings.client_identity()
    lock = _lock(settings) if run_scheduler else None
    try:
        # A transaction left idle (this controller paused or cut off mid-write) is ended by
        # PostgreSQL after a lease: its locks hold up the controller taking its agents over that
        # long at most (and a controller merely slow is not cut short).
        store = Store(
            settings.database,
            secret_key=secret_key,
            workers=db_workers,
            idle_transaction_seconds=settings.lease_seconds,
        )
        await store.open(check_integrity=check_integrity)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    metrics = Metrics(store, lease_seconds=settings.lease_seconds)
    instance = new_instance_id()
    recorder = AgentCallRecorder(store.agents, metrics)
    client = AgentClient(
        recorder,
        timeout=settings.call_timeout_seconds,
        identity=identity,
        caller=instance,
        max_calls=settings.max_calls,
        max_calls_per_agent=settings.max_calls_per_agent,
    )
    try:
        authz = Authz(store.users)
        inventory = Inventory(store, client, authz, clock=clock)
        agents = Agents(store, client, inventory, authz)
        guard = ClockGuard(
            wall=clock, monotonic=monotonic, max_jump_seconds=settings.max_clock_jump_seconds, metrics=metrics
        )
        # The scheduler is woken when this controller takes an agent over (bound late: the
        # leases come first, the scheduler asks them which agents it drives).
        # Holding the SQLite file's lock, this controller is the only one that can drive its
        # agents: its leases never run out on their own (see AgentLeases).
        leases = AgentLeases(
            store, lease_seconds=settings.lease_seconds, on_gain=lambda: scheduler.wake(), instance=instance,
            exclusive=lock is not None, role=role or "all",
        )
        scheduler = Scheduler(
            store, client, inventory, settings, metrics, clock=clock, guard=guard, leases=leases
        )
        reservations = Reservations(
            store, inventory, authz, settings, clock=clock, wake_scheduler=scheduler.wake
        )
        maintenance = Maintenance(
            store, inventory, agents, reservations, authz, clock=clock, wake_scheduler=scheduler.wake
        )
        accounts = Accounts(
            store,
            authz,
            secret_key,
            end_reservations=reservations.end_all,
            clock=clock,
            hasher=password_hasher,
            require_confirmed_email=settings.require_confirmed_email,
        )
        controller = Controller(
            settings=settings,
            store=store,
            metrics=metrics,
            client=client,
            accounts=accounts,
            agents=agents,
            inventory=inventory,
            reservations=reservations,
            maintenance=maintenance,
            scheduler=scheduler,
            health=NodeHealthService(store, authz),
            leases=leases,
            login_limits=LoginLimits(store, secret_key),
            clock=Clocks(guard, authz),
        )
        if run_scheduler:
            # Only the holder of an agent's lease flags it disconnected (AgentCallRecorder).
            recorder.drives = lambda name: leases.valid_for(name, 0)
            leases.start()
            scheduler.start()
        elif role == "web":
            # Only the heartbeat: the controller shows among the controllers, and drives nothing
            # (AgentLeases.tick takes no lease for a role that does not drive).
            leases.start()
        try:
            yield controller
        finally:
            await scheduler.stop()
            await leases.stop()
    finally:
        await client.close()
        await store.close()
        if lock is not None:
            lock.release()


def _lock(settings: Settings) -> DatabaseLock | None:
    """The lock of the SQLite file (None for PostgreSQL, where several controllers share the
    database and take turns on the agents through leases: controller/leases.py)."""
    path = sqlite_file(settings.database)
    if path is None:
        return None
    try:
        return DatabaseLock(path)
    except DatabaseInUse as exc:
        raise StoreInUse(
            f"database {path} is in use by another controller (which holds {exc.lock}); one SQLite "
            f"file serves one controller"
        ) from None
    except OSError as exc:
        raise StoreUnavailable(f"cannot create {path}.lock: {exc.strerror}") from None
