"""The `real` raspberry driver: Raspberry Pi 4s powered by PoE switch ports, network-booted into a
maintenance system to have their SD card written, then booted from it.

    power   PoePower       snmp.py     the node's switch port, over SNMP v2c
    boot    NetbootFolders netboot.py  <tftp_root>/<serial> -> netboot_dir, or nothing
    image   CardImage      card.py     copy/verify/wipe jobs on the maintenance system
    system  PiSystem       system.py   `uname -n` over SSH: netboot_hostname or the card's
    setup   PiSetup        system.py   partition and configure scripts, over SSH

SSH host keys are pinned (ssh.py): the maintenance system's from `netboot_known_hosts`, each
card's as the agent generated it on the card at its deploy (configure's host part).

Settings: the `[real]` table (config.py). Nodes: added by an administrator (AddNode) with the
properties ip, serial, switch, switch_port, optional sd_device and model; `check_node` refuses
one missing a property or naming an unknown switch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from edgebed.config import KeyProblem
from edgebed.nodetypes.drivers import DriverOptions, DriverPlugin
from edgebed.nodetypes.interfaces import Driver
from edgebed.nodetypes.real.card import CardImage
from edgebed.nodetypes.real.config import RealConfig
from edgebed.nodetypes.real.images import ImageCatalog
from edgebed.nodetypes.real.jobs import NodeJobs
from edgebed.nodetypes.real.netboot import NetbootFolders
from edgebed.nodetypes.real.serve import ImageServer
from edgebed.nodetypes.real.snmp import PoePower
from edgebed.nodetypes.real.ssh import HostKeys, SshPool, load_key, load_known_hosts
from edgebed.nodetypes.real.system import PiSetup, PiSystem

REQUIRED_PROPERTIES = ("ip", "serial", "switch", "switch_port")
# Used with fullmatch: `$` also matches before a final newline.
_SERIAL = re.compile(r"[0-9a-fA-F]{8}")
_DEVICE = re.compile(r"/dev/[A-Za-z0-9._/-]+")


def _settings(options: DriverOptions) -> RealConfig:
    if not isinstance(options.real, RealConfig):
        raise KeyProblem("real", "is missing: driver = \"real\" needs a [real] table")
    return options.real


def _check_folder(key: str, path: str, *, writable: bool = False) -> None:
    folder = Path(path)
    if not folder.is_dir():
        raise KeyProblem(key, f"is {path!r}, which is not a folder")
    if writable and not os.access(folder, os.W_OK | os.X_OK):
        raise KeyProblem(key, f"is {path!r}, which the agent cannot write to")


def _check_paths(real: RealConfig) -> None:
    _check_folder("real.tftp_root", real.tftp_root, writable=True)
    _check_folder("real.netboot_dir", real.netboot_dir)
    if not any(Path(real.netboot_dir).iterdir()):
        raise KeyProblem("real.netboot_dir", f"is {real.netboot_dir!r}, which holds no boot files")
    _check_folder("real.image_dir", real.image_dir)


async def create(options: DriverOptions) -> Driver:
    """The driver from the [real] settings. Raises KeyProblem naming the key the machine finds
    wrong: an unusable SSH key, a missing folder, an address that cannot be served."""
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
    _check_paths(real)
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

    host_keys = HostKeys(maintenance_keys, load_state=options.load_state,
                         save_state=options.save_state)
    ssh = SshPool(key, host_keys, port=real.ssh_port, connect_timeout=real.ssh_timeout)
    options.closing.push_async_callback(ssh.close)
    power = PoePower(
        {switch.name: switch for switch in real.switches},
        min_off_seconds=real.poe_off_seconds,
        # A node whose power changed is a new boot: its old SSH connection is worthless.
        on_change=ssh.forget,
    )
    options.closing.callback(power.close)
    if real.switches:
        await power.warm_up()
    jobs = NodeJobs(ssh, real.work_dir, real.netboot_hostname)
    catalog = ImageCatalog(real.image_dir, real.image_url, load_state=options.load_state,
                           save_state=options.save_state)
    return Driver(
        power=power,
        boot=NetbootFolders(real.tftp_root, real.netboot_dir),
        image=CardImage(ssh, jobs, catalog, wipe_mode=real.wipe,
                        maintenance_hostname=real.netboot_hostname),
        system=PiSystem(ssh, real.netboot_hostname),
        setup=PiSetup(ssh, work_dir=real.work_dir, maintenance_hostname=real.netboot_hostname),
    )


def check_node(options: DriverOptions, properties: Mapping[str, str]) -> str | None:
    """What keeps a node with these AddNode properties from being driven, or None."""
    for name in REQUIRED_PROPERTIES:
        if not properties.get(name, "").strip():
            return (f"property {name!r} is missing: a real raspberry node needs "
                    f"{', '.join(REQUIRED_PROPERTIES)}")
    serial = properties["serial"].strip()
    if not _SERIAL.fullmatch(serial):
        return f"property 'serial' must be the Pi's 8 hex digits (as in its TFTP requests), got {serial!r}"
    port = properties["switch_port"].strip()
    if not port.isdigit() or int(port) < 1:
        return f"property 'switch_port' must be a port number (1, 2, ...), got {port!r}"
    device = properties.get("sd_device", "")
    if device and not _DEVICE.fullmatch(device):
        return f"property 'sd_device' must be a device path such as /dev/mmcblk0, got {device!r}"
    real = options.real
    if isinstance(real, RealConfig) and real.switch(properties["switch"]) is None:
        known = ", ".join(switch.name for switch in real.switches)
        return f"property 'switch' names an unknown switch {properties['switch']!r}; this agent has {known}"
    return None


PLUGIN = DriverPlugin(node_type="raspberry", name="real", create=create, check_node=check_node)
