"""Real protocol clients for the lab's tests, as the real driver will use them: pysnmp's asyncio
API for the PoE ports and asyncssh for the Pis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncssh
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    Integer,
    ObjectIdentity,
    ObjectType,
    OctetString,
    SnmpEngine,
    UdpTransportTarget,
    get_cmd,
    set_cmd,
)

from edgebed.lab import LabDescription, PiHardware


class SnmpError(Exception):
    """The switch did not answer (timeout) or answered with an error; the message says which."""


class Switch:
    """SNMP v2c client of the lab's switch (one engine, reused: the first request costs ~1 s)."""

    def __init__(self, description: LabDescription, community: str | None = None) -> None:
        self.switch = description.switch
        self.community = community if community is not None else description.switch.community
        self.engine = SnmpEngine()

    def _oid(self, port: int) -> str:
        return f"{self.switch.poe_oid}.{port + self.switch.port_offset}"

    async def _target(self, timeout: float) -> UdpTransportTarget:
        host, _, port = self.switch.address.rpartition(":")
        return await UdpTransportTarget.create((host, int(port)), timeout=timeout, retries=0)

    async def get(self, port: int, timeout: float = 2.0) -> int:
        error, status, _index, binds = await get_cmd(
            self.engine, CommunityData(self.community, mpModel=1), await self._target(timeout),
            ContextData(), ObjectType(ObjectIdentity(self._oid(port))))
        if error or status:
            raise SnmpError(str(error or status.prettyPrint()))
        return int(binds[0][1])

    async def set_raw(self, port: int, value: Integer | OctetString, timeout: float = 2.0) -> object:
        """One SET; returns the value the switch echoes (noSuchInstance when it refused it)."""
        error, status, _index, binds = await set_cmd(
            self.engine, CommunityData(self.community, mpModel=1), await self._target(timeout),
            ContextData(), ObjectType(ObjectIdentity(self._oid(port)), value))
        if error or status:
            raise SnmpError(str(error or status.prettyPrint()))
        return binds[0][1]

    async def power(self, port: int, on: bool) -> int:
        """Sets the port on (1) or off (2) and returns the value read back."""
        await self.set_raw(port, Integer(1 if on else 2))
        return await self.get(port)

    async def power_cycle(self, port: int, off_seconds: float = 2.0) -> None:
        assert await self.power(port, False) == 2
        await asyncio.sleep(off_seconds)
        assert await self.power(port, True) == 1

    def close(self) -> None:
        self.engine.close_dispatcher()


async def ssh(host: str, username: str = "root", key: Path | None = None, password: str | None = None,
              timeout: float = 2.0) -> asyncssh.SSHClientConnection:
    """One SSH connection attempt; raises OSError/asyncssh.Error/TimeoutError when none answers."""
    return await asyncio.wait_for(asyncssh.connect(
        host, username=username, client_keys=[str(key)] if key else None, password=password,
        known_hosts=None, agent_path=None, connect_timeout=timeout,
        preferred_auth="publickey" if key else "password"), timeout + 1)


async def ssh_when_up(host: str, within: float, **kwargs) -> tuple[asyncssh.SSHClientConnection, float]:
    """Retries `ssh` until it connects (returned with the seconds it took) or `within` seconds
    pass (raises TimeoutError with the last failure)."""
    began = time.monotonic()
    last: BaseException | None = None
    while time.monotonic() - began < within:
        try:
            return await ssh(host, **kwargs), time.monotonic() - began
        except (TimeoutError, OSError, asyncssh.Error) as failure:
            last = failure
            await asyncio.sleep(0.2)
    raise TimeoutError(f"no SSH on {host} within {within} s: {last!r}")


async def ssh_answers(host: str, **kwargs) -> bool:
    try:
        conn = await ssh(host, **kwargs)
    except (TimeoutError, OSError, asyncssh.Error):
        return False
    conn.close()
    return True


async def run(conn: asyncssh.SSHClientConnection, command: str, timeout: float = 60) -> str:
    """Runs `command` (bash on the Pi) and returns stdout; raises AssertionError on a non-zero exit."""
    result = await asyncio.wait_for(conn.run(command), timeout)
    assert result.exit_status == 0, f"{command!r} exited {result.exit_status}: {result.stderr}"
    return str(result.stdout)


def netboot(description: LabDescription, pi: PiHardware, on: bool) -> None:
    """Network boot on: <tftp_root>/<serial> links to the netboot folder; off: it is absent."""
    folder = Path(description.tftp_root) / pi.serial
    if on and not folder.exists():
        folder.symlink_to(description.netboot_dir)
    elif not on and (folder.is_symlink() or folder.exists()):
        folder.unlink()
