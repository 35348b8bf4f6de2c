"""The `real` node (server) driver: servers whose BMC powers them and picks their boot device
(IPMI or Redfish), network-booted through a per-MAC iPXE entry into a maintenance system that
writes their disk, then booted from it.

    power   BmcPower     bmc.py      chassis power through the node's BMC, polled until reported
    boot    ServerBoot   bmc.py,     the BMC's boot device (PXE or disk, persistent) and the
                         pxe.py      entry <tftp_root>/<mac>.ipxe (present: the maintenance system)
    image   CardImage    card.py     the raspberry driver's copy/verify/wipe jobs, on `disk_device`
    system  PiSystem     system.py   `uname -n` over SSH: netboot_hostname or the disk's system
    setup   PiSetup      system.py   the raspberry driver's partition and configure scripts

Settings: the `[real]` table of a node agent (config.py SERVER_REAL_SCHEMA). Nodes: added by an
administrator (AddNode) with the properties ip, mac, bmc_protocol, bmc_address, optional
bmc_system (Redfish) and disk_device (default /dev/sda); `check_node` refuses a node missing one
and any property that looks like a password (node properties are shown to users; BMC passwords
live in the agent's files only).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from edgebed.config import KeyProblem
from edgebed.nodetypes.base import DriverError, NodeRef
from edgebed.nodetypes.drivers import DriverOptions, DriverPlugin
from edgebed.nodetypes.interfaces import BOOT_SOURCES, NETWORK, Driver
from edgebed.nodetypes.real.bmc import BmcError, Bmcs, Credentials, parse_address
from edgebed.nodetypes.real.card import CardImage
from edgebed.nodetypes.real.config import ServerRealConfig
from edgebed.nodetypes.real.images import ImageCatalog
from edgebed.nodetypes.real.jobs import NodeJobs
from edgebed.nodetypes.real.pxe import MAC_PATTERN, PxeEntries, mac_of
from edgebed.nodetypes.real.serve import ImageServer
from edgebed.nodetypes.real.ssh import HostKeys, SshPool, load_key, load_known_hosts
from edgebed.nodetypes.real.system import PiSetup, PiSystem

log = logging.getLogger(__name__)

REQUIRED_PROPERTIES = ("ip", "mac", "bmc_protocol", "bmc_address")
DEFAULT_DISK = "/dev/sda"
# Used with fullmatch.
_DEVICE = re.compile(r"/dev/[A-Za-z0-9._/-]+")
_SYSTEM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Property names that would put a secret where users read it.
_SECRET_NAME = re.compile(r"(?i).*(password|passwd|secret|token|community|credential).*")
# Seconds a hard reboot waits for the BMC to report the server off before it gives up (the
# executor then tries again, or the state's timeouts decide).
REPORT_SECONDS = 60.0
POLL_SECONDS = 0.5


def disk_device(node: NodeRef) -> str:
    """The node's system disk: its `disk_device` property, /dev/sda by default."""
    device = node.properties.get("disk_device", "").strip() or DEFAULT_DISK
    if not _DEVICE.fullmatch(device):
        raise DriverError(f"{node.name}: property disk_device must be a /dev path, got {device!r}")
    return device


class BmcPower:
    """PowerInterface through the nodes' BMCs. A change is requested once and then read back:
    `set_power` returns once the BMC took the request, the power step polls `is_powered` until
    the BMC reports the change (seconds on some BMCs), and `hard_reboot` waits for the report
    of off, keeps the server off at least `min_off_seconds`, then requests on."""

    def __init__(self, bmcs: Bmcs, *, min_off_seconds: float = 5.0,
                 on_change: Callable[[NodeRef], Awaitable[None]] | None = None,
                 report_seconds: float = REPORT_SECONDS) -> None:
        self._bmcs = bmcs
        self._min_off = min_off_seconds
        self._on_change = on_change
        self._report_seconds = report_seconds

    async def is_powered(self, node: NodeRef) -> bool:
        return bool(await self._bmcs.call(node, "reading the power state", "power"))

    async def set_power(self, node: NodeRef, on: bool) -> None:
        if await self.is_powered(node) == on:
            return
        await self._bmcs.call(node, f"power {'on' if on else 'off'}", "set_power", on)
        log.info("%s: power %s requested from the BMC", node.name, "on" if on else "off")
        if self._on_change is not None:
            await self._on_change(node)

    async def hard_reboot(self, node: NodeRef) -> None:
        began = time.monotonic()
        await self._bmcs.call(node, "power off", "set_power", False)
        if self._on_change is not None:
            await self._on_change(node)
        while await self.is_powered(node):
            if time.monotonic() - began > self._report_seconds:
                raise BmcError(f"{node.name}: the BMC still reports power on "
                               f"{self._report_seconds:g} s after power off")
            await asyncio.sleep(POLL_SECONDS)
        # Off as the BMC says: kept off long enough for the server to notice (PSUs, capacitors).
        await asyncio.sleep(self._min_off)
        await self._bmcs.call(node, "power on", "set_power", True)
        log.info("%s: power cycled through the BMC", node.name)


class ServerBoot:
    """BootInterface: the BMC's boot device (persistent) and the node's PXE entry, the BMC first
    both ways: a BMC that refuses (a wrong password) leaves the TFTP folder as it was, and a
    BMC that forgets the disk boot device still PXE-boots into no entry, which falls back to the
    disk. Neither half matters before the next power on, which comes in a later state."""

    def __init__(self, bmcs: Bmcs, entries: PxeEntries) -> None:
        self._bmcs = bmcs
        self._entries = entries

    async def set_boot_source(self, node: NodeRef, source: str) -> None:
        if source not in BOOT_SOURCES:
            raise ValueError(f"boot source must be one of {', '.join(BOOT_SOURCES)}, got {source!r}")
        network = source == NETWORK
        await self._bmcs.call(node, f"boot device {'PXE' if network else 'disk'}", "set_boot", network)
        await self._entries.set(node, network)


def _settings(options: DriverOptions) -> ServerRealConfig:
    real = options.real
    if not isinstance(real, ServerRealConfig):
        raise KeyProblem("real", "is missing: driver = \"real\" needs a [real] table")
    return real


def read_password(path: str) -> str:
    """A BMC password file's first line. ValueError saying why it cannot be used (never quoting
    the file)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot be read: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}") from None
    lines = text.splitlines()
    password = lines[0] if lines else ""
    if not password:
        raise ValueError("is empty: its first line is the password")
    if not password.isprintable():
        raise ValueError("holds control characters on its first line")
    return password


def load_credentials(real: ServerRealConfig) -> list[Credentials]:
    """The [[real.bmc_credentials]] with their passwords. KeyProblem naming the table's key."""
    loaded = []
    for index, item in enumerate(real.bmc_credentials, start=1):
        try:
            password = read_password(item.password_file)
        except ValueError as problem:
            raise KeyProblem(f"real.bmc_credentials[{index}].password_file",
                             f"is {item.password_file!r}, which {problem}") from None
        if os.stat(item.password_file).st_mode & 0o004:
            log.warning("real.bmc_credentials[%d].password_file %s is readable by everyone", index,
                        item.password_file)
        loaded.append(Credentials(match=item.match, user=item.user, password=password))
    return loaded


async def create(options: DriverOptions) -> Driver:
    """The driver from the [real] settings. Raises KeyProblem naming the key the machine finds
    wrong: an unusable SSH key, host key file or password file, a missing folder, an address that
    cannot be served, a netboot script that is not one."""
    real = _settings(options)
    try:
        key = load_key(real.ssh_key)
    except ValueError as problem:
        raise KeyProblem("real.ssh_key", f"is {real.ssh_key!r}, which {problem}") from None
    try:
        maintenance_keys = load_known_hosts(real.netboot_known_hosts)
    except ValueError as problem:
        raise KeyProblem("real.netboot_known_hosts",
                         f"is {real.netboot_known_hosts!r}, which {problem}") from None
    for name, path in (("real.tftp_root", real.tftp_root), ("real.image_dir", real.image_dir)):
        if not Path(path).is_dir():
            raise KeyProblem(name, f"is {path!r}, which is not a folder")
    if not os.access(real.tftp_root, os.W_OK | os.X_OK):
        raise KeyProblem("real.tftp_root", f"is {real.tftp_root!r}, which the agent cannot write to")
    try:
        entries = PxeEntries(real.tftp_root, real.netboot_script)
    except ValueError as problem:
        raise KeyProblem("real.netboot_script", f"is {real.netboot_script!r}, which {problem}") from None
    if real.redfish_ca_file and not Path(real.redfish_ca_file).is_file():
        raise KeyProblem("real.redfish_ca_file", f"is {real.redfish_ca_file!r}, which is not a file")
    credentials = load_credentials(real)
    if real.serve_images:
        server = ImageServer(real.image_dir, real.serve_images)
        try:
            await server.start()
        except OSError as exc:
            raise KeyProblem(
                "real.serve_images",
                f"is {real.serve_images!r}, where the agent cannot listen ({exc.strerror or exc})",
            ) from None
        options.closing.push_async_callback(server.close)

    # Host keys pinned as for the Pis (ssh.py): the maintenance system's from the configuration,
    # a deployed disk's the one the agent set on it, kept per server under its MAC address.
    host_keys = HostKeys(maintenance_keys, load_state=options.load_state, save_state=options.save_state,
                         ident=mac_of)
    ssh = SshPool(key, host_keys, port=real.ssh_port, connect_timeout=real.ssh_timeout)
    options.closing.push_async_callback(ssh.close)
    bmcs = Bmcs(credentials, timeout=real.bmc_timeout, verify=real.redfish_ca_file or True)
    options.closing.push_async_callback(bmcs.close)
    # A node whose power changed is a new boot: its old SSH connection is worthless.
    power = BmcPower(bmcs, min_off_seconds=real.power_off_seconds, on_change=ssh.forget)
    jobs = NodeJobs(ssh, real.work_dir, real.netboot_hostname, key=mac_of)
    catalog = ImageCatalog(real.image_dir, real.image_url, load_state=options.load_state,
                           save_state=options.save_state)
    return Driver(
        power=power,
        boot=ServerBoot(bmcs, entries),
        image=CardImage(ssh, jobs, catalog, wipe_mode=real.wipe,
                        maintenance_hostname=real.netboot_hostname, device=disk_device),
        system=PiSystem(ssh, real.netboot_hostname),
        setup=PiSetup(ssh, work_dir=real.work_dir, maintenance_hostname=real.netboot_hostname,
                      device=disk_device, key=mac_of),
    )


def check_node(options: DriverOptions, properties: Mapping[str, str]) -> str | None:
    """What keeps a server with these AddNode properties from being driven, or None."""
    for name in properties:
        if _SECRET_NAME.fullmatch(name):
            return (f"property {name!r} looks like a secret, and node properties are shown to users: "
                    "BMC passwords go in the agent's [[real.bmc_credentials]] password_file")
    for name in REQUIRED_PROPERTIES:
        if not properties.get(name, "").strip():
            return (f"property {name!r} is missing: a real node (server) needs "
                    f"{', '.join(REQUIRED_PROPERTIES)}")
    mac = properties["mac"].strip()
    if not MAC_PATTERN.fullmatch(mac):
        return f"property 'mac' must be a MAC address such as 52:54:00:12:34:56, got {mac!r}"
    protocol = properties["bmc_protocol"].strip()
    try:
        parse_address(protocol, properties["bmc_address"])
    except ValueError as problem:
        return f"property {problem}"
    if protocol == "ipmi" and shutil.which("ipmitool") is None:
        return "an ipmi BMC needs ipmitool on the agent's machine (Debian package ipmitool)"
    if protocol == "redfish" and importlib.util.find_spec("sushy") is None:
        return "a redfish BMC needs the sushy library on the agent's machine: pip install 'edgebed[bmc]'"
    system = properties.get("bmc_system", "").strip()
    if system and (protocol != "redfish" or not _SYSTEM_ID.fullmatch(system)):
        return (f"property 'bmc_system' must be a Redfish system id (letters, digits, '.', '_', '-'), "
                f"for a redfish BMC only, got {system!r}")
    device = properties.get("disk_device", "")
    if device and not _DEVICE.fullmatch(device):
        return f"property 'disk_device' must be a device path such as /dev/sda, got {device!r}"
    # Which [[real.bmc_credentials]] table applies is found at the first BMC call (a pattern may
    # name the node, and AddNode's check does not get the name); none matching is an error there.
    return None


PLUGIN = DriverPlugin(node_type="node", name="real", create=create, check_node=check_node)
