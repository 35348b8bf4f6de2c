"""A lab Pi's "firmware": what a Raspberry Pi 4 does with the power its PoE port gives it.

The lab polls the switch (one SNMP GET for every port, `poll_interval` apart) and hands each Pi
the state of its port:

- port off (power cut): every process in the Pi's network namespace is killed with SIGKILL, which
  also drops the Pi's mount namespace and so unmounts its card (as unclean as a real power cut).
  A cut shorter than one poll interval may go unseen, as a real Pi may ride through a blip.
- port on: after `boot_delay` seconds the Pi boots, in the order of a Pi 4 whose boot order puts
  the network first: `<tftp_root>/<serial>/start4.elf` present (a folder or a symlink to the
  netboot folder) → the maintenance system; otherwise the card's system; when the card holds
  nothing bootable, nothing answers and the Pi tries again every `retry_seconds` (a Pi 4's boot
  loader loops over its boot order), so a netboot folder made later is still picked up.

Inside a Pi, `reboot` and `poweroff` (`halt`, `shutdown`) are stand-ins first on PATH that ask the
firmware for a reset (boot again, power stays on) or a halt (nothing until the next power cycle).

Each Pi writes `<pi dir>/state.json` on every change:
`{"power": "on"|"off", "system": STATE, "detail": str, "since": epoch seconds}` with STATE one of
off, booting, maintenance, card, dark (on, nothing bootable), halted.
Its console (boot messages, sshd's log) goes to `<pi dir>/console.log`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import edgebed
from edgebed.lab.boot import NOT_BOOTABLE, BootSpec
from edgebed.lab.proc import child_env, kill_netns

log = logging.getLogger("edgebed.lab")

# Each booted Pi binds its run folder at RUN_ROOT/<netns> inside its own mount namespace (the
# folder on the host stays empty); see edgebed.lab.boot.
RUN_ROOT = Path("/run/edgebed-lab")

MAINTENANCE, CARD, OFF, BOOTING, DARK, HALTED = "maintenance", "card", "off", "booting", "dark", "halted"


@dataclass(frozen=True)
class PiHardware:
    """One lab Pi: `index` 1..N, its namespace, address, serial (8 hex digits), PoE port, card
    file and loop device, and its folder in the lab directory."""

    index: int
    name: str
    netns: str
    ip: str
    serial: str
    switch_port: int
    card_file: str
    sd_device: str
    folder: str


@dataclass(frozen=True)
class FirmwareSettings:
    lab_dir: Path
    tftp_root: Path
    netboot_hostname: str
    authorized_keys: str  # the agent's public key, the one key root of the maintenance system accepts
    maintenance_host_key: Path
    boot_delay: float = 1.0
    retry_seconds: float = 5.0


# A shell script, not Python: the Pis bind their own /root over the host's, which may hide the
# interpreter the lab runs with (pyenv keeps it under /root). The request path is ours alone
# (/run/edgebed-lab/ebl<slot>-pi<N>/power-request), checked against _SAFE_PATH before use.
_STUB = """#!/bin/sh
# edgebed lab: `{name}` on a lab Pi asks the lab's firmware, instead of the host, to {what}.
echo {action} > {request}
echo "{name}: the lab Pi will {what}"
"""
_SAFE_PATH = re.compile(r"[A-Za-z0-9/._-]+")


class Firmware:
    """The power/boot state machine of one Pi. `observe(on)` is called on each poll of its port;
    `tick()` between polls handles reboot/poweroff requests from inside the Pi."""

    def __init__(self, pi: PiHardware, settings: FirmwareSettings) -> None:
        self.pi = pi
        self.settings = settings
        self.folder = Path(pi.folder)
        self.power = False
        self.system = OFF
        self._boot: asyncio.Task[None] | None = None
        # Written by the stand-ins inside the Pi, as <mount_dir>/power-request = <run>/power-request.
        self._request = self.folder / "run" / "power-request"
        self._set(OFF, "")

    # -- what the lab calls --------------------------------------------------------------------

    async def observe(self, on: bool) -> None:
        if on and not self.power:
            self.power = True
            self._console("power on")
            self._start_boot()
        elif not on and self.power:
            self.power = False
            self._console("power off")
            await self._cut()
            self._set(OFF, "")

    async def tick(self) -> None:
        if not self._request.exists():
            return
        action = self._request.read_text().strip()
        self._request.unlink()
        if not self.power:
            return
        self._console(f"{action} requested from inside the Pi")
        await self._cut()
        if action == "reboot":
            self._start_boot()
        else:
            self._set(HALTED, f"{action} from inside; power-cycle the port to boot again")

    async def shutdown(self) -> None:
        """Power cut without a state change in the switch: the lab is going down."""
        await self._cut()
        self.power = False
        self._set(OFF, "lab stopped")

    # -- inside --------------------------------------------------------------------------------

    def _start_boot(self) -> None:
        self._set(BOOTING, f"boot in {self.settings.boot_delay:g} s")
        self._boot = asyncio.create_task(self._boot_loop(), name=f"boot {self.pi.name}")

    async def _cut(self) -> None:
        if self._boot is not None:
            self._boot.cancel()
            try:
                await self._boot
            except asyncio.CancelledError:
                pass
            self._boot = None
        killed = await asyncio.to_thread(kill_netns, self.pi.netns)
        if killed:
            self._console(f"power cut: {killed} process(es) stopped")

    def _netboot_files(self) -> Path:
        return self.settings.tftp_root / self.pi.serial

    def _boot_mode(self) -> str:
        """What this power-on boots: MAINTENANCE (the network) or CARD (its own storage)."""
        return MAINTENANCE if (self._netboot_files() / "start4.elf").is_file() else CARD

    async def _boot_loop(self) -> None:
        await asyncio.sleep(self.settings.boot_delay)
        while True:
            mode = self._boot_mode()
            started = time.monotonic()
            proc = await self._spawn(mode)
            code = await proc.wait()
            # The system process ended by itself (a power cut cancels this task before that).
            await asyncio.to_thread(kill_netns, self.pi.netns)
            if code == NOT_BOOTABLE:
                self._set(DARK, "nothing bootable on the card and no netboot folder; retrying")
            else:
                self._set(DARK, f"{mode} system stopped (exit {code}) after "
                                f"{time.monotonic() - started:.1f} s; see console.log")
            await asyncio.sleep(self.settings.retry_seconds)

    async def _spawn(self, mode: str) -> asyncio.subprocess.Process:
        run_dir = self.folder / "run"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(mode=0o755)
        mount_dir = RUN_ROOT / self.pi.netns
        self._write_stubs(run_dir / "bin", mount_dir / "power-request")
        spec = BootSpec(
            mode=mode, run_dir=str(run_dir), mount_dir=str(mount_dir), card=self.pi.sd_device,
            hostname=self.settings.netboot_hostname, authorized_keys=self.settings.authorized_keys,
            host_key=str(self.settings.maintenance_host_key))
        spec_file = self.folder / "boot.json"
        spec_file.write_text(json.dumps(asdict(spec), indent=2) + "\n")
        self._console(f"booting the {mode} system")
        source_root = str(Path(edgebed.__file__).resolve().parent.parent)
        console = (self.folder / "console.log").open("ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                "ip", "netns", "exec", self.pi.netns,
                "unshare", "--mount", "--uts", "--propagation", "private", "--",
                sys.executable, "-m", "edgebed.lab.boot", str(spec_file),
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, cwd=run_dir,
                env=child_env(self.settings.lab_dir, {"PYTHONPATH": source_root}),
                start_new_session=True)
        finally:
            console.close()
        self._set(mode, f"pid {proc.pid}")
        return proc

    def _write_stubs(self, stubs: Path, request: Path) -> None:
        if not _SAFE_PATH.fullmatch(str(request)):
            raise ValueError(f"unexpected characters in {request}")
        stubs.mkdir(parents=True, exist_ok=True)
        for name, action, what in (("reboot", "reboot", "reboot"),
                                   ("poweroff", "poweroff", "power off"),
                                   ("halt", "poweroff", "halt"),
                                   ("shutdown", "poweroff", "shut down")):
            stub = stubs / name
            stub.write_text(_STUB.format(name=name, what=what,
                                         request=str(request), action=action))
            stub.chmod(0o755)

    def _console(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with (self.folder / "console.log").open("a") as handle:
            handle.write(f"[{stamp} firmware] {line}\n")
        log.info("%s: %s", self.pi.name, line)

    def _set(self, system: str, detail: str) -> None:
        self.system = system
        state = {"power": "on" if self.power else "off", "system": system, "detail": detail,
                 "since": time.time()}
        tmp = self.folder / "state.json.tmp"
        tmp.write_text(json.dumps(state) + "\n")
        os.replace(tmp, self.folder / "state.json")
