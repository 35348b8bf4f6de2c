"""The `[real]` settings of the real drivers: the TOML schema the agent checks them with, and the
typed values the driver is built from; one schema per node type (agent/settings.py REAL_TABLES).
The raspberry one:

    driver = "real"
    [real]
    ssh_key = "/etc/edgebed/agent_ed25519"     # root login on the maintenance and deployed systems
    tftp_root = "/srv/tftp"
    netboot_dir = "/srv/tftp/netboot"
    netboot_hostname = "nfspi"
    netboot_known_hosts = "/etc/edgebed/netboot_host_keys"  # the maintenance system's host keys
    image_dir = "/srv/images"                   # environments name files here
    image_url = "http://10.0.0.1:8081"          # where nodes fetch image_dir from
    serve_images = ""                           # "host:port": the agent serves image_dir itself
    wipe = "quick"                              # or "full"
    [[real.switches]]
    name = "sw1"
    address = "10.0.0.2:161"
    community = "private"
    poe_oid = "1.3.6.1.2.1.105.1.1.1.3.1"      # the port number (+ port_offset) is appended
    port_offset = 0

The node (server) one, SERVER_REAL_SCHEMA, is further below.

The schema checks what a file can tell (types, ranges, shapes); what only the machine can tell
(the key is readable, the folders exist, the address can be served) is checked when the driver
is created, as `DriverConfigError` naming the key. This module imports nothing heavy: the agent's
settings load it whatever the driver.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from edgebed.config import Array, Key, KeyProblem, Schema, check_host_port, in_range
from edgebed.nodetypes.base import HOSTNAME_PATTERN, NAME_PATTERN

# RFC 3621 pethPsePortAdminEnable.<group 1>: 1 = on (true), 2 = off (false).
PETH_PSE_PORT_ADMIN_ENABLE = "1.3.6.1.2.1.105.1.1.1.3.1"
WIPE_MODES = ("quick", "full")

# Patterns here are used with fullmatch: `$` also matches before a final newline.
_OID = re.compile(r"[0-9]+(\.[0-9]+)+")


def _check_oid(value: str) -> str | None:
    if not _OID.fullmatch(value):
        return f"must be a numeric OID such as {PETH_PSE_PORT_ADMIN_ENABLE}, got {value!r}"
    return None


def _check_switch_name(value: str) -> str | None:
    if not NAME_PATTERN.fullmatch(value):
        return f"must be letters, digits, '-', '_' or '.', got {value!r}"
    return None


def _check_address(value: str) -> str | None:
    """'host' or 'host:port' (UDP port 161 when left out)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        return None if value.strip() else "must not be empty"
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"must be 'host' or 'host:port' with a port 1..65535, got {value!r}"
    return None


def _check_community(value: str) -> str | None:
    # Never repeats the value: it is a password.
    if not value:
        return "must not be empty"
    if not value.isascii() or not value.isprintable():
        return "must be printable ASCII"
    return None


def _check_absolute(value: str) -> str | None:
    if not value.startswith("/"):
        return f"must be an absolute path, got {value!r}"
    if "\n" in value or "\0" in value:
        return "must not contain a newline or NUL"
    return None


def _check_url(value: str) -> str | None:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return f"must be an http:// or https:// URL, got {value!r}"
    if parsed.query or parsed.fragment:
        return f"must be a base URL without '?' or '#', got {value!r}"
    return None


def _check_serve(value: str) -> str | None:
    return None if value == "" else check_host_port(value)


def _check_hostname(value: str) -> str | None:
    # The same rule as the deployed system's `hostname` property (nodetypes.base).
    if len(value) > 63 or not re.fullmatch(HOSTNAME_PATTERN, value):
        return f"must be a host name: letters, digits and '-', at most 63 characters, got {value!r}"
    return None


SWITCH_SCHEMA: Schema = {
    "name": Key(str, check=_check_switch_name, help="the name nodes give as their 'switch' property"),
    "address": Key(str, check=_check_address, help="SNMP agent 'host:port' (port 161 by default)"),
    "community": Key(str, check=_check_community, secret=True, help="SNMP v2c write community"),
    "poe_oid": Key(str, default=PETH_PSE_PORT_ADMIN_ENABLE, check=_check_oid,
                   help="OID of a port's PoE switch; the port number + port_offset is appended"),
    "port_offset": Key(int, default=0, check=in_range(-100_000, 100_000),
                       help="added to a node's switch_port to make the OID's last number"),
    "on_value": Key(int, default=1, help="INTEGER written for power on (RFC 3621: 1, true)"),
    "off_value": Key(int, default=2, help="INTEGER written for power off (RFC 3621: 2, false)"),
}

RASPBERRY_REAL_SCHEMA: Schema = {
    "ssh_key": Key(str, check=_check_absolute,
                   help="the agent's private key: root login on the maintenance and deployed systems"),
    "ssh_port": Key(int, default=22, check=in_range(1, 65535), help="SSH port of the nodes"),
    "ssh_timeout": Key(float, default=10.0, check=in_range(0.5, 300),
                       help="seconds to connect to a node's SSH server"),
    "tftp_root": Key(str, check=_check_absolute, help="TFTP root; <tftp_root>/<serial>/ means network boot"),
    "netboot_dir": Key(str, check=_check_absolute, help="the maintenance system's boot files"),
    "netboot_hostname": Key(str, check=_check_hostname, help="host name of the maintenance system"),
    "netboot_known_hosts": Key(str, check=_check_absolute,
                               help="the maintenance system's SSH host public keys (its "
                                    "ssh_host_*_key.pub lines, or known_hosts lines)"),
    "image_dir": Key(str, check=_check_absolute, help="folder of the images environments name"),
    "image_url": Key(str, check=_check_url, help="base URL the nodes fetch image_dir from"),
    "serve_images": Key(str, default="", check=_check_serve,
                        help="'host:port' where the agent serves image_dir itself; '' = not"),
    "wipe": Key(str, default="quick", choices=WIPE_MODES,
                help="quick: partition table, signatures, first and last MiB; full: the whole card"),
    "work_dir": Key(str, default="/tmp/edgebed", check=_check_absolute,
                    help="folder on the maintenance system for job files (one sub-folder per node)"),
    "poe_off_seconds": Key(float, default=2.0, check=in_range(0, 600),
                           help="least time a port stays off, so that the Pi notices the cut"),
    "timeout_scale": Key(float, default=1.0, check=in_range(0.001, 100),
                         help="multiplies every state timeout (before_reboot, lost)"),
    "switches": Array(SWITCH_SCHEMA, min_items=1),
}


@dataclass(frozen=True)
class SwitchConfig:
    """One `[[real.switches]]` table."""

    name: str
    host: str
    port: int
    # Out of repr(): settings reach logs and tracebacks.
    community: str = field(repr=False)
    poe_oid: str = PETH_PSE_PORT_ADMIN_ENABLE
    port_offset: int = 0
    on_value: int = 1
    off_value: int = 2

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def oid(self, switch_port: int) -> str:
        """The OID of `switch_port`'s PoE switch."""
        return f"{self.poe_oid}.{switch_port + self.port_offset}"

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> SwitchConfig:
        host, sep, port = table["address"].rpartition(":")
        if not sep:
            host, port = table["address"], "161"
        return cls(
            name=table["name"], host=host.strip("[]"), port=int(port),
            community=table["community"], poe_oid=table["poe_oid"],
            port_offset=table["port_offset"], on_value=table["on_value"],
            off_value=table["off_value"],
        )


@dataclass(frozen=True)
class RealConfig:
    """The checked `[real]` table of a raspberry agent."""

    ssh_key: str
    tftp_root: str
    netboot_dir: str
    netboot_hostname: str
    image_dir: str
    image_url: str
    switches: tuple[SwitchConfig, ...]
    netboot_known_hosts: str = ""
    serve_images: str = ""
    wipe: str = "quick"
    work_dir: str = "/tmp/edgebed"
    ssh_port: int = 22
    ssh_timeout: float = 10.0
    poe_off_seconds: float = 2.0
    timeout_scale: float = 1.0

    def switch(self, name: str) -> SwitchConfig | None:
        for switch in self.switches:
            if switch.name == name:
                return switch
        return None

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> RealConfig:
        """`table` as the schema loaded it. Raises KeyProblem for what the schema cannot see:
        two switches of one name."""
        switches = tuple(SwitchConfig.from_table(item) for item in table["switches"])
        seen: set[str] = set()
        for index, switch in enumerate(switches, start=1):
            if switch.name in seen:
                raise KeyProblem(
                    f"real.switches[{index}].name",
                    f"is {switch.name!r}, which an earlier switch already has",
                )
            seen.add(switch.name)
        return cls(
            ssh_key=table["ssh_key"], tftp_root=table["tftp_root"],
            netboot_dir=table["netboot_dir"], netboot_hostname=table["netboot_hostname"],
            netboot_known_hosts=table["netboot_known_hosts"],
            image_dir=table["image_dir"], image_url=table["image_url"], switches=switches,
            serve_images=table["serve_images"], wipe=table["wipe"], work_dir=table["work_dir"],
            ssh_port=table["ssh_port"], ssh_timeout=table["ssh_timeout"],
            poe_off_seconds=table["poe_off_seconds"], timeout_scale=table["timeout_scale"],
        )


# The real node (server) driver: servers.py. Its [real] table shares the raspberry driver's keys
# for SSH, images and wipes, and replaces the switches with BMC credentials and the PXE entries.
#
#     [real]
#     ssh_key = "/etc/edgebed/agent_ed25519"
#     tftp_root = "/srv/tftp"                  # the agent writes <mac>.ipxe here (servers.md)
#     netboot_script = "/srv/tftp/maintenance.ipxe"  # boots the maintenance system
#     netboot_hostname = "edgebed-maint"
#     netboot_known_hosts = "/etc/edgebed/maint_host_keys"  # the maintenance system's host keys
#     image_dir = "/srv/images"
#     image_url = "http://10.0.0.1:8081"
#     [[real.bmc_credentials]]
#     match = "srv-*"                          # fnmatch pattern on the node name or BMC address
#     user = "admin"
#     password_file = "/etc/edgebed/bmc-srv.password"

BMC_PROTOCOLS = ("ipmi", "redfish")


def _check_pattern(value: str) -> str | None:
    if not value.strip():
        return "must not be empty (use \"*\" for every node)"
    if not value.isprintable():
        return "must be printable"
    return None


def _check_bmc_user(value: str) -> str | None:
    # IPMI user names are at most 16 bytes; Redfish ones are longer, but printable.
    if not value or not value.isprintable() or len(value) > 64:
        return f"must be 1..64 printable characters, got {value!r}"
    return None


BMC_CREDENTIALS_SCHEMA: Schema = {
    "match": Key(str, check=_check_pattern,
                 help="fnmatch pattern on the node's name or its bmc_address; the first table that "
                      "matches gives the credentials"),
    "user": Key(str, check=_check_bmc_user, help="BMC user name"),
    "password_file": Key(str, check=_check_absolute,
                         help="file holding the BMC password (its first line), read at start-up"),
}

SERVER_REAL_SCHEMA: Schema = {
    "ssh_key": RASPBERRY_REAL_SCHEMA["ssh_key"],
    "ssh_port": RASPBERRY_REAL_SCHEMA["ssh_port"],
    "ssh_timeout": RASPBERRY_REAL_SCHEMA["ssh_timeout"],
    "tftp_root": Key(str, check=_check_absolute,
                     help="TFTP/iPXE folder the agent owns: <tftp_root>/<mac>.ipxe means network boot"),
    "netboot_script": Key(str, check=_check_absolute,
                          help="iPXE script that boots the maintenance system; copied into each entry"),
    "netboot_hostname": RASPBERRY_REAL_SCHEMA["netboot_hostname"],
    "netboot_known_hosts": RASPBERRY_REAL_SCHEMA["netboot_known_hosts"],
    "image_dir": RASPBERRY_REAL_SCHEMA["image_dir"],
    "image_url": RASPBERRY_REAL_SCHEMA["image_url"],
    "serve_images": RASPBERRY_REAL_SCHEMA["serve_images"],
    "wipe": Key(str, default="quick", choices=WIPE_MODES,
                help="quick: partition table, signatures, first and last MiB; full: the whole disk"),
    "work_dir": RASPBERRY_REAL_SCHEMA["work_dir"],
    "bmc_timeout": Key(float, default=10.0, check=in_range(0.5, 120),
                       help="seconds for one BMC request (IPMI session or Redfish call)"),
    "power_off_seconds": Key(float, default=5.0, check=in_range(0, 600),
                             help="least time a hard reboot keeps a server off"),
    "redfish_ca_file": Key(str, default="", check=lambda v: None if v == "" else _check_absolute(v),
                           help="PEM bundle Redfish BMCs' certificates must chain to; '' = the system's"),
    "timeout_scale": RASPBERRY_REAL_SCHEMA["timeout_scale"],
    "bmc_credentials": Array(BMC_CREDENTIALS_SCHEMA, min_items=1),
}


@dataclass(frozen=True)
class BmcCredentials:
    """One `[[real.bmc_credentials]]` table. The password is read from `password_file` when the
    driver starts (servers.py), never kept in the settings."""

    match: str
    user: str
    password_file: str


@dataclass(frozen=True)
class ServerRealConfig:
    """The checked `[real]` table of a node (server) agent."""

    ssh_key: str
    tftp_root: str
    netboot_script: str
    netboot_hostname: str
    image_dir: str
    image_url: str
    bmc_credentials: tuple[BmcCredentials, ...]
    netboot_known_hosts: str = ""
    serve_images: str = ""
    wipe: str = "quick"
    work_dir: str = "/tmp/edgebed"
    ssh_port: int = 22
    ssh_timeout: float = 10.0
    bmc_timeout: float = 10.0
    power_off_seconds: float = 5.0
    redfish_ca_file: str = ""
    timeout_scale: float = 1.0

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ServerRealConfig:
        """`table` as SERVER_REAL_SCHEMA loaded it."""
        credentials = tuple(
            BmcCredentials(match=item["match"], user=item["user"], password_file=item["password_file"])
            for item in table["bmc_credentials"]
        )
        return cls(
            ssh_key=table["ssh_key"], tftp_root=table["tftp_root"],
            netboot_script=table["netboot_script"], netboot_hostname=table["netboot_hostname"],
            netboot_known_hosts=table["netboot_known_hosts"],
            image_dir=table["image_dir"], image_url=table["image_url"],
            bmc_credentials=credentials, serve_images=table["serve_images"], wipe=table["wipe"],
            work_dir=table["work_dir"], ssh_port=table["ssh_port"], ssh_timeout=table["ssh_timeout"],
            bmc_timeout=table["bmc_timeout"], power_off_seconds=table["power_off_seconds"],
            redfish_ca_file=table["redfish_ca_file"], timeout_scale=table["timeout_scale"],
        )
