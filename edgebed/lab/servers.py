"""The lab's servers: network namespaces with a loop-device disk, each behind a BMC of its own kind.

    IPMI server     ipmi_sim (Debian openipmi) on 127.0.0.1:<udp port>, IPMI 2.0 lanplus; its
                    chassis_control script (chassis.sh below) keeps the chassis power and the boot
                    device in files of the server's folder: bmc/power (0, 1), bmc/boot (pxe,
                    default, ...)
    Redfish server  one sushy-tools emulator for all of them (fake driver), on
                    http://127.0.0.1:<tcp port>, a system per server (its name is the server's);
                    HTTP basic authentication. The fake driver applies a power change after a
                    delay: 1-11 s in sushy-tools, `redfish_delay` seconds here (its random draw is
                    narrowed by the lab's launcher, _EMULATOR below), so that the driver's polling
                    is exercised without 11 s waits

Both BMCs accept the user `admin` with the password in `<lab>/keys/bmc-password`.

The lab reads each server's BMC every poll (the files; a Redfish GET) and hands its firmware the
power and the boot device. Power on, after `boot_delay`: boot device PXE and an entry
`<tftp_root>/<mac>.ipxe` (an iPXE script) → the maintenance system (host name `maint`); any other
case → the disk's system, booted as a lab Pi boots its card (the lab's test image), or nothing
when the disk holds none (the firmware retries, as a server's boot order loops).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from edgebed.lab.firmware import CARD, MAINTENANCE, Firmware, FirmwareSettings, PiHardware
from edgebed.lab.proc import LabError, child_env

log = logging.getLogger("edgebed.lab")

BMC_USER = "admin"
IPMI = "ipmi"
REDFISH = "redfish"
SERVER_HOSTNAME = "maint"
IPMI_SIM = "/usr/bin/ipmi_sim"


@dataclass(frozen=True)
class ServerHardware:
    """One lab server: `index` 1..N, its namespace, address and MAC, its disk (file and loop
    device), its folder, and its BMC: `bmc_protocol` (ipmi, redfish), `bmc_address` as the node
    property spells it, `bmc_system` (Redfish: the system's id)."""

    index: int
    name: str
    netns: str
    ip: str
    mac: str
    disk_file: str
    disk_device: str
    folder: str
    bmc_protocol: str
    bmc_address: str
    bmc_system: str = ""

    @property
    def pxe_entry_name(self) -> str:
        """Its entry's file name in the TFTP root, as iPXE's ${mac:hexhyp} spells the MAC."""
        return self.mac.lower().replace(":", "-") + ".ipxe"


def missing_server_prerequisites(protocols: list[str]) -> list[str]:
    missing = []
    if IPMI in protocols:
        if not Path(IPMI_SIM).exists():
            missing.append(f"{IPMI_SIM} (openipmi)")
        if shutil.which("ipmitool") is None:
            missing.append("the ipmitool command")
    if REDFISH in protocols:
        try:
            import sushy_tools  # noqa: F401
        except ImportError:
            missing.append("sushy-tools (pip install sushy-tools)")
    return missing


# chassis_control: `chassis.sh <mc> get <item>...` prints item:value lines; `chassis.sh <mc> set
# <item> <value> ...` stores them. ipmi_sim runs it for "Chassis Control" and boot options.
_CHASSIS = """#!/bin/sh
# edgebed lab: the chassis of a lab server (ipmi_sim's chassis_control).
dir={folder}
mkdir -p "$dir"
op=$2
shift 2
case $op in
get)
  for item in "$@"; do
    case $item in
    power) echo "power:$(cat "$dir/power" 2>/dev/null || echo 0)" ;;
    boot) echo "boot:$(cat "$dir/boot" 2>/dev/null || echo default)" ;;
    esac
  done ;;
set)
  while [ $# -gt 1 ]; do
    case $1 in
    power) echo "$2" > "$dir/power.tmp" && mv "$dir/power.tmp" "$dir/power" ;;
    boot) echo "$2" > "$dir/boot.tmp" && mv "$dir/boot.tmp" "$dir/boot" ;;
    esac
    shift 2
  done ;;
esac
exit 0
"""

_LAN_CONF = """name "{name}"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid {guid}
  endlan
  chassis_control "{chassis} 0x20"
  user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
"""

_EMU = """mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""


async def start_ipmi_sim(
    folder: Path, lab_dir: Path, name: str, port: int, password: str
) -> asyncio.subprocess.Process:
    """ipmi_sim for one server, its files in `folder` (lan.conf, sim.emu, chassis.sh, state/,
    ipmi_sim.log; power and boot). Returns once it answers a Get Device ID."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "state").mkdir(parents=True)
    if any(char in str(folder) for char in "\"' \n\\"):
        raise LabError(f"{folder}: no quotes, spaces or backslashes in a lab directory with servers")
    if not password.isalnum():
        raise LabError("the lab's BMC password must be letters and digits (it goes into lan.conf)")
    chassis = folder / "chassis.sh"
    chassis.write_text(_CHASSIS.format(folder=shlex.quote(str(folder))))
    chassis.chmod(0o755)
    (folder / "power").write_text("0\n")
    (folder / "boot").write_text("default\n")
    (folder / "lan.conf").write_text(_LAN_CONF.format(
        name=name, port=port, guid=f"{port:08x}".ljust(32, "0"), chassis=chassis, user=BMC_USER,
        password=password))
    (folder / "sim.emu").write_text(_EMU)
    (folder / "lan.conf").chmod(0o600)
    output = (folder / "ipmi_sim.log").open("ab")
    try:
        process = await asyncio.create_subprocess_exec(
            IPMI_SIM, "-c", str(folder / "lan.conf"), "-f", str(folder / "sim.emu"),
            "-s", str(folder / "state"), "-n",
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            env=child_env(lab_dir), start_new_session=True)
    finally:
        output.close()
    deadline = time.monotonic() + 15
    password_env = {**child_env(lab_dir), "IPMI_PASSWORD": password}
    while True:
        probe = await asyncio.create_subprocess_exec(
            "ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(port), "-U", BMC_USER,
            "-E", "-N", "1", "-R", "1", "mc", "info", stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=password_env)
        if await probe.wait() == 0:
            return process
        if process.returncode is not None or time.monotonic() > deadline:
            raise LabError(f"ipmi_sim for {name} did not start: see {folder / 'ipmi_sim.log'}")
        await asyncio.sleep(0.2)


# The emulator, started through this launcher: sushy-tools' fake driver draws its delay with
# random.randint(1, 11); the lab narrows the draw to its own bounds (argv[1], argv[2]).
_EMULATOR = """
import random, sys
from sushy_tools.emulator import main
from sushy_tools.emulator.resources.systems import fakedriver

low, high = int(sys.argv[1]), int(sys.argv[2])

class _Delay(random.Random):
    def randint(self, a, b):
        return super().randint(low, high)

fakedriver.random = _Delay()
sys.argv[1:] = sys.argv[3:]
sys.exit(main.main())
"""


def _bcrypt_entry(user: str, password: str) -> str:
    import bcrypt  # sushy-tools' own dependency

    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}\n"


async def start_redfish(folder: Path, lab_dir: Path, servers: list[ServerHardware], port: int,
                        password: str, delay: tuple[int, int]) -> asyncio.subprocess.Process:
    """The sushy-tools emulator for `servers` (each a fake system named after it, powered off,
    its NIC the server's MAC), files in `folder`. Returns once it answers."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "state").mkdir(parents=True)
    auth = folder / "htpasswd"
    auth.write_text(_bcrypt_entry(BMC_USER, password))
    auth.chmod(0o600)
    systems = [{"uuid": server.bmc_system, "name": server.name, "power_state": "Off",
                "external_notifier": False, "nics": [{"mac": server.mac, "ip": server.ip}]}
               for server in servers]
    config = folder / "emulator.conf"
    config.write_text(
        "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
        f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}\n"
        f"SUSHY_EMULATOR_AUTH_FILE = {json.dumps(str(auth))}\n"
        f"SUSHY_EMULATOR_STATE_DIR = {json.dumps(str(folder / 'state'))}\n"
        "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
        f"SUSHY_EMULATOR_LISTEN_PORT = {port}\n"
        "SUSHY_EMULATOR_BOOT_LOADER_MAP = {}\n")
    output = (folder / "emulator.log").open("ab")
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _EMULATOR, str(delay[0]), str(delay[1]), "--config", str(config),
            "--fake", "--interface", "127.0.0.1", "--port", str(port),
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            env=child_env(lab_dir), start_new_session=True)
    finally:
        output.close()
    deadline = time.monotonic() + 30
    reader = RedfishReader(f"http://127.0.0.1:{port}", password)
    while True:
        try:
            await asyncio.to_thread(reader.read, servers[0].bmc_system)
            return process
        except (OSError, ValueError):
            if process.returncode is not None or time.monotonic() > deadline:
                raise LabError(f"the Redfish emulator did not start: see {folder / 'emulator.log'}") from None
            await asyncio.sleep(0.2)


class RedfishReader:
    """What the lab's firmware reads of a Redfish system: (powered, boot target)."""

    def __init__(self, url: str, password: str) -> None:
        self._url = url.rstrip("/")
        token = base64.b64encode(f"{BMC_USER}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}"}

    def read(self, system: str) -> tuple[bool, str]:
        request = urllib.request.Request(f"{self._url}/redfish/v1/Systems/{system}", headers=self._headers)
        with urllib.request.urlopen(request, timeout=2) as response:
            data = json.loads(response.read())
        boot = data.get("Boot", {}).get("BootSourceOverrideTarget", "")
        return data.get("PowerState") == "On", str(boot)


def ipmi_state(folder: Path) -> tuple[bool, str]:
    """(powered, boot device) as the server's chassis script keeps them."""
    def read(name: str, default: str) -> str:
        try:
            return (folder / name).read_text().strip() or default
        except OSError:
            return default
    return read("power", "0") == "1", read("boot", "default")


class ServerFirmware(Firmware):
    """A lab server's power and boot: a Pi's firmware whose boot decision is the BMC's boot
    device and the server's PXE entry, and whose "card" is its disk."""

    def __init__(self, server: ServerHardware, settings: FirmwareSettings) -> None:
        self.server = server
        self.boot_device = "default"
        super().__init__(
            PiHardware(index=server.index, name=server.name, netns=server.netns, ip=server.ip,
                       serial="", switch_port=0, card_file=server.disk_file,
                       sd_device=server.disk_device, folder=server.folder),
            settings)

    async def observe_bmc(self, on: bool, boot_device: str) -> None:
        self.boot_device = boot_device
        await self.observe(on)

    def _boot_mode(self) -> str:
        pxe = self.boot_device.lower() in ("pxe", "network")
        entry = self.settings.tftp_root / self.server.pxe_entry_name
        try:
            ipxe = entry.read_text(errors="replace").startswith("#!ipxe")
        except OSError:
            ipxe = False
        return MAINTENANCE if pxe and ipxe else CARD


def redfish_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def read_bmc(server: ServerHardware, redfish: RedfishReader | None) -> tuple[bool, str] | None:
    """The server's (power, boot device) from its BMC; None when the BMC did not answer."""
    if server.bmc_protocol == IPMI:
        return ipmi_state(Path(server.folder) / "bmc")
    if redfish is None:
        return None
    try:
        return redfish.read(server.bmc_system)
    except (OSError, ValueError, urllib.error.URLError):
        return None
