"""Assembles an agent from its settings: store, driver, executor, service and gRPC server.

    agent = await start_agent(settings)      # serving on agent.port
    ...
    await agent.stop()

or `async with open_agent(settings) as agent:`. Several agents can run in one process (the demo
runs three); each has its own database, thread and server.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health

from edgebed.agent.clock import Clock, FastClock, SystemClock
from edgebed.agent.dbworker import DbWorker, GroupCommitter
from edgebed.agent.domain import NodeRecord
from edgebed.agent.errors import AlreadyExists
from edgebed.agent.executor import Executor, Timing, agent_wait
from edgebed.agent.server import build_server, server_credentials
from edgebed.agent.service import AgentService
from edgebed.agent.settings import AgentSettings, check_tls_keys
from edgebed.agent.store import DatabaseDamaged, DatabaseSpecError, DatabaseUnavailable, SaveMachine, Store
from edgebed.config import ConfigError, KeyProblem, redacted_url
from edgebed.listen import listen_problem
from edgebed.nodetypes import load_node_type
from edgebed.nodetypes.base import DriverUnavailable, NodeType
from edgebed.nodetypes.drivers import DriverOptions, DriverPlugin, driver_names, load_driver
from edgebed.nodetypes.interfaces import Driver
from edgebed.nodetypes.sim.hardware import SimOptions
from edgebed.storage import DatabaseInUse, DatabaseLock, damaged_message, sqlite_file

log = logging.getLogger(__name__)

# Timeouts of a simulated testbed run as fast as its hardware, but at most this much faster, so
# that time_scale = 0 still leaves a busy event loop time to finish a step before its timeout.
MAX_CLOCK_SPEED = 100.0


def sim_clock(time_scale: float) -> Clock:
    if time_scale == 1.0:
        return SystemClock()
    return FastClock(min(MAX_CLOCK_SPEED, 1.0 / time_scale) if time_scale > 0 else MAX_CLOCK_SPEED)


# Real seconds between two polls of a simulated node's progress, at least. The sim's clock runs up
# to MAX_CLOCK_SPEED times faster, and polls scaled with it (every 20 ms at time_scale 0.01) cost
# a thousand nodes 50,000 polls a second, a third of the agent's CPU, for a progress that the
# controller reads once a second; a boot or a copy still ends on time (the driver's hint, when
# shorter, is followed), and the shortest before_reboot of a state that reports progress (60 s,
# 0.6 s real at full speed) still sees three polls.
SIM_MIN_POLL_SECONDS = 0.2


def sim_timing(time_scale: float) -> Timing:
    poll = min(2.0, max(2.0 * time_scale, 0.005))
    return Timing(poll_seconds=max(poll, SIM_MIN_POLL_SECONDS), retry_seconds=poll)


def real_clock(timeout_scale: float) -> Clock:
    """The executor's clock for real hardware: its state timeouts ([real] timeout_scale) shrink
    or grow by running the clock faster or slower; the hardware keeps its own pace."""
    return SystemClock() if timeout_scale == 1.0 else FastClock(1.0 / timeout_scale)


def real_timing(timeout_scale: float) -> Timing:
    # Shorter timeouts need closer polls to be met; real hardware is never polled more than
    # five times a second (each poll is an SSH command or an SNMP request).
    poll = min(2.0, max(2.0 * timeout_scale, 0.2))
    return Timing(poll_seconds=poll, retry_seconds=poll)


def _clock_and_timing(settings: AgentSettings) -> tuple[Clock, Timing]:
    if settings.driver == "real" and settings.real is not None:
        scale = settings.real.timeout_scale
        return real_clock(scale), real_timing(scale)
    return sim_clock(settings.sim_time_scale), sim_timing(settings.sim_time_scale)


def _lock_database(settings: AgentSettings) -> DatabaseLock | None:
    """Refuses a second agent process on the same SQLite file: two executors would drive the
    same actions twice. None for a database server, which has no file to lock."""
    path = sqlite_file(settings.database)
    if path is None:
        return None
    try:
        return DatabaseLock(path)
    except DatabaseInUse as exc:
        raise settings.problem(
            "database", f"{redacted_url(settings.database)!r} is in use by another agent (which holds {exc.lock})"
        ) from None
    except OSError as exc:
        raise settings.problem(
            "database", f"{redacted_url(settings.database)!r} cannot be created: {exc.strerror}"
        ) from None


def _driver_plugin(settings: AgentSettings, node_type: NodeType) -> DriverPlugin:
    """The installed driver the settings name (an `edgebed.drivers` entry point)."""
    try:
        return load_driver(node_type.name, settings.driver)
    except DriverUnavailable:
        installed = " or ".join(repr(name) for name in driver_names(node_type.name)) or "none"
        raise settings.problem(
            "driver",
            f"is {settings.driver!r}, but the {settings.driver} {node_type.name} driver "
            f"({node_type.driver_note}) is not available yet; use {installed}",
        ) from None


async def _create_driver(
    settings: AgentSettings, plugin: DriverPlugin, options: DriverOptions
) -> Driver:
    """The plugin's driver; what the machine finds wrong with a setting (KeyProblem) becomes a
    ConfigError naming the key and the file."""
    try:
        created = plugin.create(options)
        if inspect.isawaitable(created):
            created = await created
    except KeyProblem as problem:
        raise settings.problem(problem.key, problem.text) from None
    return created


def _node_checker(plugin: DriverPlugin, options: DriverOptions):
    """AddNode's driver-specific check of a node's properties, or None."""
    check = plugin.check_node
    if check is None:
        return None

    def check_node(properties: Mapping[str, str]) -> str | None:
        return check(options, properties)

    return check_node


def _check_driver(settings: AgentSettings, node_type: NodeType, driver: Driver) -> None:
    """Refuses a driver lacking an interface the type's steps use: found now, not in the middle
    of the first deploy."""
    missing = driver.missing(node_type.needs)
    if missing:
        raise settings.problem(
            "driver",
            f"is {settings.driver!r}, but that {node_type.name} driver has no "
            f"{', '.join(missing)} interface, which {node_type.name} steps use",
        )


def _credentials(settings: AgentSettings) -> grpc.ServerCredentials | None:
    """The server's TLS credentials from the files the settings name (None without tls_cert);
    ConfigError naming the key of a file that is unreadable, not PEM, or does not fit."""
    check_tls_keys(settings)
    if not settings.tls:
        return None
    # Imported only for TLS: cryptography's x509 costs about 9 MB of resident memory, which a
    # plaintext agent on a Pi (a lab network, #12's 80 MB goal) need not pay.
    from edgebed.tls import TlsError, load_identity, read_ca_file

    try:
        identity = load_identity(settings.tls_cert, settings.tls_key, cert_what="file", key_what="file")
    except TlsError as exc:
        raise settings.problem("tls_key" if exc.role == "key" else "tls_cert", str(exc)) from None
    client_ca = None
    if settings.tls_client_ca:
        try:
            client_ca = read_ca_file(settings.tls_client_ca, "file")
        except TlsError as exc:
            raise settings.problem("tls_client_ca", str(exc)) from None
    return server_credentials(identity.certificate_chain, identity.private_key, client_ca)


def is_loopback(host: str) -> bool:
    """Whether a listen host reaches this machine only: 127.0.0.0/8, ::1 or localhost. An empty
    host, 0.0.0.0, [::] and every other name or address are reachable from the network."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _first_start(
    store: Store, settings: AgentSettings, node_type: NodeType, plugin: DriverPlugin
) -> None:
    """Runs on the database thread: checks the database belongs to this agent, and fills it on
    the very first start (the seeded flag keeps nodes an administrator removed from coming back)."""
    owner = store.get_meta("agent_type")
    if owner is not None and owner != settings.type:
        raise settings.problem(
            "type", f"is {settings.type!r}, but {redacted_url(settings.database)} holds a {owner!r} agent's data"
        )
    if store.get_meta("seeded") is not None:
        return
    store.set_meta("agent_type", settings.type)
    store.set_meta("agent_name", settings.name)
    store.put_environments(node_type.default_environments)
    # The made-up inventory is the driver's business (the sim's machines); a driver for real
    # hardware has none, and an administrator adds the nodes.
    if plugin.node_properties is not None and settings.sim_nodes:
        nodes = [
            NodeRecord(f"{settings.name}-{index:03d}", plugin.node_properties(index))
            for index in range(1, settings.sim_nodes + 1)
        ]
        store.add_nodes(nodes)
    store.set_meta("seeded", "1")


@dataclass
class RunningAgent:
    settings: AgentSettings
    host: str
    port: int
    service: AgentService
    executor: Executor
    store: Store
    committer: GroupCommitter
    _server: grpc.aio.Server
    _health: health.aio.HealthServicer
    _worker: DbWorker
    # Reads on their own thread and connection (None: the writer's, for an in-memory database).
    _reader: DbWorker | None
    _lock: DatabaseLock | None
    # What the driver opened (SSH connections, an image server): closed after the executor.
    _driver_resources: contextlib.AsyncExitStack
    _stopped: bool = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def db(self, function, *args):
        """Runs a Store method on the agent's database thread (tests, benchmarks)."""
        return await self._worker.call(function, *args)

    async def stop(self, grace: float = 2.0) -> None:
        """Stops accepting calls, lets running ones finish (up to `grace` s), stops every action
        at a commit point, writes what is queued, closes the database."""
        if self._stopped:
            return
        self._stopped = True
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)
        await self.executor.stop()
        await self._driver_resources.aclose()
        await self.committer.close()
        if self._reader is not None:
            await self._reader.call(self.store.close)
            self._reader.shutdown()
        await self._worker.call(self.store.close)
        self._worker.shutdown()
        if self._lock is not None:
            self._lock.release()
        log.info("agent %s stopped", self.settings.name)


async def start_agent(
    settings: AgentSettings,
    *,
    clock: Clock | None = None,
    timing: Timing | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> RunningAgent:
    """Starts an agent; `clock` and `timing` replace the ones derived from the settings, and
    `wall_clock` (epoch seconds) the one that stamps what is stored (tests: a clock that steps).
    Durations never come from `wall_clock`."""
    node_type = load_node_type(settings.type)
    plugin = _driver_plugin(settings, node_type)
    # Read before anything is opened: a bad certificate stops start-up with nothing to undo.
    credentials = _credentials(settings)
    # Checked before gRPC binds: its core would log a line of its own before our one-line refusal.
    problem = listen_problem(settings.listen)
    if problem is not None:
        raise settings.problem("listen", f"{settings.listen!r}: cannot listen there: {problem}")
    lock = _lock_database(settings)
    worker = DbWorker(settings.name, database=sqlite_file(settings.database))
    reader: DbWorker | None = None
    committer: GroupCommitter | None = None
    store: Store | None = None
    # What the driver opens; closed here when the start fails, by RunningAgent.stop otherwise.
    driver_resources = contextlib.AsyncExitStack()
    try:
        try:
            store = Store(settings.database)
            await worker.call(store.open)
        except DatabaseDamaged as exc:
            where = sqlite_file(settings.database) or redacted_url(settings.database)
            raise ConfigError(damaged_message(where, str(exc))) from None
        except DatabaseSpecError as exc:
            raise settings.problem("database", f"is not usable: {exc}") from None
        except DatabaseUnavailable as exc:
            raise settings.problem("database", f"cannot be opened: {exc}") from None
        except OSError as exc:
            raise settings.problem("database", f"cannot be created: {exc.strerror}") from None
        try:
            await worker.call(_first_start, store, settings, node_type, plugin)
        except AlreadyExists as exc:
            raise settings.problem("sim.nodes", f"cannot create the simulated nodes: {exc.message}") from None
        committer = GroupCommitter(
            worker, store.apply, open_writer=store.loop_writer, checkpoint=store.checkpoint
        )
        # A second connection sees only what is committed: an in-memory database has none.
        reader = (
            DbWorker(f"{settings.name}-read", database=sqlite_file(settings.database))
            if store.shares_connections
            else None
        )

        # Queued, not awaited: committed with or before the next state the executor records.
        def save_machine(hardware_id: str, state: dict) -> None:
            committer.queue([SaveMachine(hardware_id, state)])

        # What a step waits for in the agent's own database does not count against the node's
        # timeouts (agent_wait): with thousands of nodes a read can wait behind their commits.

        async def load_state(key: str) -> str | None:
            with agent_wait():
                return await worker.call(store.get_meta, f"driver.{key}")

        async def save_state(key: str, value: str) -> None:
            with agent_wait():
                await worker.call(store.set_meta, f"driver.{key}", value)

        options = DriverOptions(
            sim=SimOptions(
                time_scale=settings.sim_time_scale,
                failure_rate=settings.sim_failure_rate,
                seed=None if settings.sim_seed < 0 else settings.sim_seed,
                hang_commands=settings.sim_hang_commands,
                saved=await worker.call(store.sim_machines),
                save=save_machine,
                wall_clock=wall_clock,
            ),
            real=settings.real,
            agent_name=settings.name,
            load_state=load_state,
            save_state=save_state,
            closing=driver_resources,
        )
        try:
            driver = await _create_driver(settings, plugin, options)
            _check_driver(settings, node_type, driver)
        except ConfigError:
            await worker.call(store.close)
            raise
        # Started only now: nothing is written before the driver is known to fit the type.
        committer.start()
        default_clock, default_timing = _clock_and_timing(settings)
        executor = Executor(
            node_type,
            driver,
            committer.write,
            clock=clock or default_clock,
            timing=timing or default_timing,
            wall_clock=wall_clock,
        )
        service = AgentService(
            agent_name=settings.name, node_type=node_type, store=store, worker=worker,
            executor=executor, check_node=_node_checker(plugin, options), wall_clock=wall_clock,
            reader=reader,
        )
        try:
            server, port, health = await build_server(
                service, settings.token, settings.listen, credentials, log_calls=settings.log_calls
            )
        except RuntimeError as exc:
            await committer.close()
            await worker.call(store.close)
            raise settings.problem("listen", f"{settings.listen!r}: cannot listen there ({exc})") from None
        unfinished = await worker.call(store.unfinished_actions)
        nodes = {node.name: node.ref() for node in await worker.call(store.list_nodes, [])}
        executor.start_watchdog()
        executor.resume(unfinished, nodes)
        await server.start()
    except BaseException:
        # Each step whatever the one before it raised: the original error is what the caller
        # hears of; a half-done start leaves no thread, connection or lock behind.
        undo: list[Callable[[], Awaitable[object]]] = [driver_resources.aclose]
        if committer is not None:
            # Closes its loop writer's connection, if it opened one.
            undo.append(committer.close)
        if store is not None:
            if reader is not None:
                undo.append(functools.partial(reader.call, store.close))
            undo.append(functools.partial(worker.call, store.close))
        for step in undo:
            try:
                await step()
            except Exception:
                log.exception("while undoing a failed start")
        if reader is not None:
            reader.shutdown()
        worker.shutdown()
        if lock is not None:
            lock.release()
        raise
    host = settings.listen.rpartition(":")[0]
    transport = "plaintext" if not settings.tls else ("mutual TLS" if settings.tls_client_ca else "TLS")
    log.info("agent %s (%s, %s driver) serving %s on %s:%d", settings.name, settings.type,
             settings.driver, transport, host, port)
    if not settings.tls and not is_loopback(host):
        log.warning(
            "agent %s listens on %s without TLS: its token and the nodes' passwords cross the network "
            "in clear text; set tls_cert and tls_key (edgebed tls issue)", settings.name, settings.listen,
        )
    return RunningAgent(
        settings=settings, host=host, port=port, service=service, executor=executor,
        store=store, committer=committer, _server=server, _health=health, _worker=worker,
        _reader=reader, _lock=lock, _driver_resources=driver_resources,
    )


@contextlib.asynccontextmanager
async def open_agent(settings: AgentSettings, **kwargs) -> AsyncIterator[RunningAgent]:
    agent = await start_agent(settings, **kwargs)
    try:
        yield agent
    finally:
        await agent.stop()

