"""The lab's PoE switch: snmpsim answering SNMP v1/v2c on 127.0.0.1:<port>.

Its data file (`<lab>/switch/data/<community>.snmprec`; snmpsim takes the community from the file
name) holds sysDescr/sysName and, for every port, RFC 3621 pethPsePortAdminEnable
(1.3.6.1.2.1.105.1.1.1.3.1.<port>: 1 = on, 2 = off) as a writable `writecache` value, starting at
2 (off). A wrong community gets no answer at all (a timeout), as snmpsim does; a SET of the wrong
type answers noSuchInstance and changes nothing, so a client must read the value back.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    get_cmd,
)

from edgebed.lab.proc import LabError, child_env

POE_OID = "1.3.6.1.2.1.105.1.1.1.3.1"  # pethPsePortAdminEnable.<group 1>.<port>
POE_ON, POE_OFF = 1, 2
SWITCH_NAME = "ebl-switch"


def responder_binary() -> str | None:
    """snmpsim's command responder: beside our interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).parent / "snmpsim-command-responder"
    return str(beside) if beside.exists() else shutil.which("snmpsim-command-responder")


def write_data(folder: Path, community: str, ports: int) -> Path:
    """Writes `<folder>/data/<community>.snmprec` (records in OID order, as snmpsim needs)."""
    if not community or not all(c.isalnum() or c in "-_." for c in community):
        raise LabError(f"community {community!r}: use letters, digits and -_. (it names a file)")
    data = folder / "data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    lines = [
        "1.3.6.1.2.1.1.1.0|4|edgebed lab PoE switch (snmpsim)",
        f"1.3.6.1.2.1.1.5.0|4|{SWITCH_NAME}",
    ]
    lines += [f"{POE_OID}.{port}|2:writecache|value={POE_OFF}" for port in range(1, ports + 1)]
    path = data / f"{community}.snmprec"
    path.write_text("\n".join(lines) + "\n")
    return path


async def start(folder: Path, lab_dir: Path, community: str, ports: int, port: int) -> asyncio.subprocess.Process:
    """Starts snmpsim on 127.0.0.1:`port` with every PoE port off; returns once it answers.

    Raises LabError when snmpsim is not installed or does not answer within 30 s.
    """
    binary = responder_binary()
    if binary is None:
        raise LabError("snmpsim is not installed (pip install snmpsim pysmi)")
    write_data(folder, community, ports)
    cache = folder / "cache"
    if cache.exists():
        shutil.rmtree(cache)
    cache.mkdir()
    # Power state starts off at every `up`: drop what the last run wrote.
    for old in folder.glob("writecache.db*"):
        old.unlink()
    log = (folder / "snmpsim.log").open("ab")
    proc = await asyncio.create_subprocess_exec(
        binary, f"--data-dir={folder / 'data'}", f"--cache-dir={cache}",
        f"--agent-udpv4-endpoint=127.0.0.1:{port}",
        f"--variation-module-options=writecache:file:{folder / 'writecache.db'}",
        f"--logging-method=file:{folder / 'snmpsim.log'}", "--log-level=error",
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        # As root snmpsim otherwise drops to a user that cannot read our interpreter.
        env=child_env(lab_dir, {"SNMPSIM_ALLOW_ROOT": "true"}), start_new_session=True)
    log.close()
    reader = PoeReader(f"127.0.0.1:{port}", community, [1])
    deadline = time.monotonic() + 30
    try:
        while True:
            if proc.returncode is not None:
                raise LabError(f"snmpsim exited {proc.returncode}: see {folder / 'snmpsim.log'}")
            if await reader.read(timeout=0.5) is not None:
                return proc
            if time.monotonic() > deadline:
                proc.kill()
                raise LabError(f"snmpsim did not answer within 30 s: see {folder / 'snmpsim.log'}")
            await asyncio.sleep(0.2)
    finally:
        reader.close()


class PoeReader:
    """Reads pethPsePortAdminEnable of several ports in one SNMP GET (the firmware's eyes)."""

    def __init__(self, address: str, community: str, ports: list[int], oid: str = POE_OID) -> None:
        host, _, port = address.rpartition(":")
        self._target = (host, int(port))
        self._community = community
        self._ports = ports
        self._oid = oid
        self._engine = SnmpEngine()

    async def read(self, timeout: float = 1.0) -> dict[int, int] | None:
        """{port: value} (1 on, 2 off, 0 when the port has no such value); None without an answer."""
        target = await UdpTransportTarget.create(self._target, timeout=timeout, retries=0)
        objects = [ObjectType(ObjectIdentity(f"{self._oid}.{port}")) for port in self._ports]
        error, status, _index, binds = await get_cmd(
            self._engine, CommunityData(self._community, mpModel=1), target, ContextData(), *objects)
        if error or status:
            return None
        values: dict[int, int] = {}
        for port, (_name, value) in zip(self._ports, binds, strict=True):
            try:
                values[port] = int(value)
            except (TypeError, ValueError):
                values[port] = 0  # noSuchInstance and friends
        return values

    def close(self) -> None:
        self._engine.close_dispatcher()


def stop(proc: asyncio.subprocess.Process | None) -> None:
    if proc is not None and proc.returncode is None:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
