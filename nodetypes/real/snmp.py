"""Power through the PoE ports of managed switches, over SNMP v2c (pysnmp's asyncio API).

A node's port is the INTEGER at `<switch.poe_oid>.<switch_port + port_offset>`: by default RFC
3621 pethPsePortAdminEnable, 1 (true) = on, 2 (false) = off; any vendor OID and values by
configuration (`[[real.switches]]`). The node names its switch and port in its properties
`switch` and `switch_port`.

Every SET is read back: some switches (and snmpsim) answer a SET they did not apply without an
error (noSuchInstance in the varbind, or the old value), so only the value read afterwards counts.
A switch that does not answer, or a wrong community (SNMP gives it no answer at all), is a
DriverError naming the switch and its address, never the community.

A Pi must see its port off for a while, or it rides through the cut: a port switched off is kept
off at least `min_off_seconds` before it is switched on again (by set_power or hard_reboot).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    get_cmd,
    set_cmd,
)
from pysnmp.proto.rfc1902 import Integer32

from edgebed.nodetypes.base import DriverError, NodeRef
from edgebed.nodetypes.real.config import SwitchConfig

log = logging.getLogger(__name__)

# Seconds per SNMP request and tries after the first: a switch on the testbed network answers
# in milliseconds; a lost UDP datagram gets one more chance. (pysnmp's first request in a process
# spends about a second loading before it sends: that is not counted.)
REQUEST_TIMEOUT = 1.0
RETRIES = 1

# Called when a node's power changes (the SSH pool drops its connection: whatever answers next is
# a new boot).
PowerChanged = Callable[[NodeRef], Awaitable[None]]


class NoAnswer(DriverError):
    """The switch did not answer: down, unreachable, or a wrong community (SNMP v2c answers
    nothing to a community it does not know)."""


class SnmpRefused(DriverError):
    """The switch answered with an error status, or a varbind that is no INTEGER; `reason` is
    that answer."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.reason = reason


class PoePower:
    """PowerInterface over the PoE ports of `switches` (by name)."""

    def __init__(
        self,
        switches: Mapping[str, SwitchConfig],
        *,
        min_off_seconds: float = 2.0,
        on_change: PowerChanged | None = None,
        timeout: float = REQUEST_TIMEOUT,
        retries: int = RETRIES,
    ) -> None:
        self._switches = dict(switches)
        self._min_off = min_off_seconds
        self._on_change = on_change
        self._timeout = timeout
        self._retries = retries
        self._engine: SnmpEngine | None = None
        self._targets: dict[str, UdpTransportTarget] = {}
        # hardware id -> time.monotonic() when its port was last switched off by this process.
        self._off_since: dict[str, float] = {}

    def _port(self, node: NodeRef) -> tuple[SwitchConfig, str]:
        name = node.properties.get("switch", "")
        switch = self._switches.get(name)
        if switch is None:
            known = ", ".join(sorted(self._switches)) or "none"
            raise DriverError(f"{node.name}: switch {name!r} is not configured (known: {known})")
        port = node.properties.get("switch_port", "")
        if not port.isdigit():
            raise DriverError(f"{node.name}: property switch_port must be a port number, got {port!r}")
        return switch, switch.oid(int(port))

    def _where(self, node: NodeRef, switch: SwitchConfig) -> str:
        return (f"{node.name}: switch {switch.name} ({switch.address}) "
                f"port {node.properties.get('switch_port', '?')}")

    async def _target(self, switch: SwitchConfig) -> UdpTransportTarget:
        target = self._targets.get(switch.name)
        if target is None:
            target = await UdpTransportTarget.create(
                (switch.host, switch.port), timeout=self._timeout, retries=self._retries
            )
            self._targets[switch.name] = target
        return target

    async def _request(
        self, node: NodeRef, switch: SwitchConfig, oid: str, value: int | None
    ) -> int:
        """GET (value None) or SET `oid`; returns the INTEGER the switch answered. DriverError
        when it does not answer, reports an error, or answers no INTEGER."""
        if self._engine is None:
            self._engine = SnmpEngine()
        target = await self._target(switch)
        # mpModel=1: SNMP v2c. The community is handed to pysnmp only, never to a message.
        auth = CommunityData(switch.community, mpModel=1)
        if value is None:
            binding = ObjectType(ObjectIdentity(oid))
            indication, status, index, binds = await get_cmd(
                self._engine, auth, target, ContextData(), binding, lookupMib=False
            )
        else:
            binding = ObjectType(ObjectIdentity(oid), Integer32(value))
            indication, status, index, binds = await set_cmd(
                self._engine, auth, target, ContextData(), binding, lookupMib=False
            )
        where = self._where(node, switch)
        if indication:
            raise NoAnswer(
                f"{where}: no answer ({indication}); check the switch's address and community"
            )
        if status:
            raise SnmpRefused(
                where, f"{'GET' if value is None else 'SET'} of {oid} refused: {status.prettyPrint()}"
            )
        if not binds:
            raise SnmpRefused(where, f"{oid}: the answer holds no value")
        answered = binds[0][1]
        try:
            return int(answered)
        except (TypeError, ValueError):
            # noSuchInstance / noSuchObject: the switch has no such port or OID.
            raise SnmpRefused(where, f"{oid} answered {answered.prettyPrint()!r}, not an INTEGER") from None

    async def _read(self, node: NodeRef) -> tuple[SwitchConfig, str, int]:
        switch, oid = self._port(node)
        return switch, oid, await self._request(node, switch, oid, None)

    async def _write(self, node: NodeRef, on: bool) -> None:
        switch, oid = self._port(node)
        wanted = switch.on_value if on else switch.off_value
        if on:
            await self._keep_off(node)
        refusal = ""
        try:
            await self._request(node, switch, oid, wanted)
        except SnmpRefused as refused:
            # What counts is the value read back; this says why it did not change.
            refusal = refused.reason
        if self._on_change is not None:
            await self._on_change(node)
        value = await self._request(node, switch, oid, None)
        if value != wanted:
            why = refusal or "no error reported; a read-only community or OID?"
            raise DriverError(
                f"{self._where(node, switch)}: SET {oid} = {wanted} was not applied "
                f"(it reads {value}): {why}"
            )
        if on:
            self._off_since.pop(node.hardware_id, None)
        else:
            # From now: the port may have been on since this process last switched it off.
            self._off_since[node.hardware_id] = time.monotonic()

    async def _keep_off(self, node: NodeRef) -> None:
        """Waits until the port has been off `min_off_seconds`. A port this process did not
        switch off (an agent restarted meanwhile) is given the whole time, from now."""
        since = self._off_since.get(node.hardware_id)
        if since is None:
            _, _, value = await self._read(node)
            switch, _ = self._port(node)
            if value == switch.on_value:
                return
            since = self._off_since.setdefault(node.hardware_id, time.monotonic())
        left = self._min_off - (time.monotonic() - since)
        if left > 0:
            await asyncio.sleep(left)

    # PowerInterface.

    async def set_power(self, node: NodeRef, on: bool) -> None:
        switch, _, value = await self._read(node)
        if value == (switch.on_value if on else switch.off_value):
            return
        await self._write(node, on)
        log.info("%s: PoE port %s", node.name, "on" if on else "off")

    async def is_powered(self, node: NodeRef) -> bool:
        switch, _, value = await self._read(node)
        return value == switch.on_value

    async def hard_reboot(self, node: NodeRef) -> None:
        await self._write(node, False)
        await self._write(node, True)
        log.info("%s: PoE port power cycled", node.name)

    async def warm_up(self) -> None:
        """Loads pysnmp's engine and the MIB modules its first request pulls in, at start-up.

        Why: that first request spends about 1 s of CPU (5 s on a busy 2-core machine) on the
        event loop, during which the agent answers no call and the controller's 6 s deadline can
        expire. Run before the agent serves, the cost is paid once where nobody waits. The request
        goes to 127.0.0.1's discard port (9) with a community of its own, so no switch sees it;
        its lack of an answer is expected and ignored.
        """
        if self._engine is None:
            self._engine = SnmpEngine()
        target = await UdpTransportTarget.create(("127.0.0.1", 9), timeout=0.05, retries=0)
        await get_cmd(self._engine, CommunityData("edgebed-warm-up", mpModel=1), target, ContextData(),
                      ObjectType(ObjectIdentity("1.3.6.1.2.1.1.3.0")), lookupMib=False)
        # The counters an answer updates (snmpInPkts, ...) live in a module the unanswered
        # request above never needed.
        self._engine.get_mib_builder().load_modules("__SNMPv2-MIB")

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close_dispatcher()
            self._engine = None
            self._targets.clear()
