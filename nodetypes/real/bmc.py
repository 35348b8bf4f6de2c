"""A server's BMC: chassis power and the boot device, over IPMI (lanplus, ipmitool) or Redfish
(sushy), picked per node by its `bmc_protocol` property.

    node properties    bmc_protocol  "ipmi" or "redfish"
                       bmc_address   ipmi: "host" or "host:port" (UDP 623 by default)
                                     redfish: "host", "host:port" (https) or "http[s]://host[:port]"
                       bmc_system    redfish only, optional: the system's id under
                                     /redfish/v1/Systems/ (default: the BMC's only system)
    agent settings     [[real.bmc_credentials]]: the first table whose `match` (an fnmatch pattern)
                       matches the node's name or its bmc_address gives the user and the password
                       file; passwords are never node properties, which users see

IPMI runs ipmitool (one session per call: pyghmi's shared sessions hung or broke when a client
logged in again); sushy blocks (requests), so Redfish calls run in a worker thread. One call at a
time per BMC, each within about `timeout` seconds. A power change is a request: the BMC may apply it
seconds later (a Redfish ForceOff on some BMCs, the emulator's fake driver 1-11 s), so the
callers poll `power()` until it reports the change, and never take the request for the result.

Errors are `BmcError` (a DriverError) with one line naming the node, the protocol, the address
and what went wrong; a refused login says so ("refused user 'admin': wrong user name or
password?"), never with the password.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlparse

from edgebed.nodetypes.base import DriverError, NodeRef

log = logging.getLogger(__name__)

IPMI = "ipmi"
REDFISH = "redfish"
PROTOCOLS = (IPMI, REDFISH)
IPMI_PORT = 623
# The Redfish service root (sushy's default).
ROOT_PREFIX = "/redfish/v1/"


class BmcError(DriverError):
    """The BMC refused, did not answer, or answered something else than asked."""


@dataclass(frozen=True)
class Credentials:
    """One [[real.bmc_credentials]] table with its password read."""

    match: str
    user: str
    # Out of repr(): it reaches logs and tracebacks.
    password: str = field(repr=False)


@dataclass(frozen=True)
class BmcAddress:
    """Where a node's BMC answers: `host`, `port`, and for Redfish the base `url`."""

    protocol: str
    host: str
    port: int
    url: str = ""

    def __str__(self) -> str:
        return self.url or f"{self.host}:{self.port}"


def parse_address(protocol: str, text: str) -> BmcAddress:
    """`text` (a bmc_address property) for `protocol`. ValueError saying what is wrong."""
    text = text.strip()
    if protocol not in PROTOCOLS:
        raise ValueError(f"bmc_protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if not text or any(char.isspace() for char in text) or not text.isprintable():
        raise ValueError(f"bmc_address must be a host, host:port or (redfish) a URL, got {text!r}")
    if protocol == REDFISH:
        url = text if "://" in text else f"https://{text}"
        parsed = urlparse(url)
        try:
            port = parsed.port
        except ValueError:
            port = None
            parsed = parsed._replace(netloc="")
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path.strip("/") \
                or parsed.query or parsed.fragment or parsed.username:
            raise ValueError(f"bmc_address of a redfish BMC must be host[:port] or "
                             f"http[s]://host[:port], got {text!r}")
        default = 443 if parsed.scheme == "https" else 80
        return BmcAddress(REDFISH, parsed.hostname, port or default, f"{parsed.scheme}://{parsed.netloc}")
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, str(IPMI_PORT)
    host = host.strip("[]")
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"bmc_address of an ipmi BMC must be host or host:port (port 1..65535), got {text!r}")
    return BmcAddress(IPMI, host, int(port_text))


def node_address(node: NodeRef) -> BmcAddress:
    """The node's BMC address from its properties. BmcError when they are not usable."""
    try:
        return parse_address(node.properties.get("bmc_protocol", "").strip(),
                             node.properties.get("bmc_address", ""))
    except ValueError as exc:
        raise BmcError(f"{node.name}: {exc}") from None


def find_credentials(
    credentials: Iterable[Credentials], node_name: str, address: str
) -> Credentials | None:
    """The first credentials whose pattern matches the node's name, or its BMC address (as the
    property spells it, or its host alone)."""
    host = address
    for protocol in PROTOCOLS:
        try:
            host = parse_address(protocol, address).host
            break
        except ValueError:
            continue
    for item in credentials:
        if any(fnmatch.fnmatchcase(name, item.match) for name in (node_name, address, host)):
            return item
    return None


class Client(Protocol):
    """One BMC."""

    async def power(self) -> bool: ...

    async def set_power(self, on: bool) -> None: ...

    async def set_boot(self, network: bool) -> None: ...

    async def close(self) -> None: ...


# Where ipmitool -v says why a session was not established (its last line is always "Unable to
# establish IPMI v2 / RMCP+ session").
_IPMI_REASONS = (
    ("RAKP 2 HMAC is invalid", "refused the password of user {user!r} (wrong password?)"),
    ("unauthorized name", "does not know user {user!r} (wrong user name?)"),
    ("Get Auth Capabilities error", "no answer (no IPMI-over-LAN BMC at this address?)"),
    ("Insufficient privilege", "user {user!r} lacks the privilege (operator or administrator needed)"),
)


class IpmiClient:
    """IPMI 2.0 over LAN (lanplus, RMCP+, cipher suite 3) with ipmitool: one session per call, so
    no session can expire between polls. The password reaches ipmitool through its environment
    (-E), never its command line, which `ps` shows."""

    def __init__(self, address: BmcAddress, credentials: Credentials, timeout: float,
                 ipmitool: str = "ipmitool") -> None:
        self._address = address
        self._credentials = credentials
        self._timeout = timeout
        self._ipmitool = ipmitool

    async def _run(self, *args: str) -> str:
        # -N/-R: seconds per try and retries of one request; -v: the reason of a refused session.
        argv = [self._ipmitool, "-v", "-I", "lanplus", "-C", "3", "-H", self._address.host,
                "-p", str(self._address.port), "-U", self._credentials.user, "-E",
                "-N", f"{max(1, int(self._timeout / 3))}", "-R", "2", *args]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "IPMI_PASSWORD": self._credentials.password}
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=env)
        except FileNotFoundError:
            raise BmcError(f"{self._ipmitool} is not installed (Debian package ipmitool)") from None
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout=self._timeout + 5)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise BmcError(f"no answer within {self._timeout + 5:g} s") from None
        except asyncio.CancelledError:
            # The step was cancelled (a state timed out, the agent stops): no ipmitool left behind.
            process.kill()
            raise
        if process.returncode != 0:
            text = err.decode(errors="replace")
            for clue, reason in _IPMI_REASONS:
                if clue in text:
                    raise BmcError(reason.format(user=self._credentials.user))
            lines = [line for line in text.splitlines() if line.strip() and not line.startswith(">")
                     and "IANA PEN" not in line]
            raise BmcError(_first_line(lines[-1] if lines else f"ipmitool exited {process.returncode}"))
        return out.decode(errors="replace")

    async def power(self) -> bool:
        out = await self._run("chassis", "power", "status")
        if "Chassis Power is on" in out:
            return True
        if "Chassis Power is off" in out:
            return False
        raise BmcError(f"unexpected power status {_first_line(out)!r}")

    async def set_power(self, on: bool) -> None:
        await self._run("chassis", "power", "on" if on else "off")

    async def set_boot(self, network: bool) -> None:
        # Persistent: a hard reboot the executor orders during a network-booted state (or a
        # power cut) must boot the network again, not the disk.
        await self._run("chassis", "bootdev", "pxe" if network else "disk", "options=persistent")

    async def close(self) -> None:
        return None


class RedfishClient:
    """Redfish with sushy: the ComputerSystem `system` (or the BMC's only one). sushy blocks
    (requests): each call runs in a worker thread."""

    def __init__(self, address: BmcAddress, credentials: Credentials, timeout: float,
                 system: str = "", verify: bool | str = True) -> None:
        self._address = address
        self._credentials = credentials
        self._timeout = timeout
        self._system_id = system
        self._verify = verify
        self._root: Any = None
        self._system: Any = None

    def _get(self) -> Any:
        import sushy

        if self._root is None:
            self._root = sushy.Sushy(
                self._address.url, verify=self._verify,
                # Basic authentication on every request: no session to expire between polls.
                auth=sushy.auth.BasicAuth(self._credentials.user, self._credentials.password),
                read_timeout=self._timeout, connect_timeout=self._timeout,
                # A BMC answering 5xx is retried by the caller's poll, not inside one call.
                server_side_retries=0,
            )
        if self._system is None:
            if self._system_id:
                self._system = self._root.get_system(f"{ROOT_PREFIX}Systems/{self._system_id}")
            else:
                members = self._root.get_system_collection().get_members()
                if len(members) != 1:
                    raise BmcError(f"the BMC has {len(members)} systems: set the node's bmc_system "
                                   "property to the id of its own")
                self._system = members[0]
        else:
            self._system.refresh(force=True)
        return self._system

    async def _call(self, action: Any) -> Any:
        return await asyncio.to_thread(self._blocking, action)

    def _blocking(self, action: Any) -> Any:
        try:
            import sushy.exceptions as errors
        except ImportError:
            raise BmcError("the Redfish client is not installed: pip install 'edgebed[bmc]' (sushy)") from None

        try:
            return action(self._get())
        except errors.AccessError:
            self._root = self._system = None
            raise BmcError(f"refused user {self._credentials.user!r}: wrong user name or "
                           "password? (HTTP 401/403)") from None
        except errors.ResourceNotFoundError:
            self._system = None
            raise BmcError(f"no system {self._system_id or '(default)'} on this BMC") from None
        except errors.ConnectionError as exc:
            self._root = self._system = None
            raise BmcError(f"no answer ({_first_line(str(exc))})") from None
        except errors.SushyError as exc:
            self._system = None
            raise BmcError(_first_line(str(exc))) from None

    async def power(self) -> bool:
        import sushy

        state = await self._call(lambda system: system.power_state)
        # PoweringOn/PoweringOff: the change is not there yet; what the caller waits for.
        return state in (sushy.PowerState.ON, sushy.PowerState.POWERING_OFF)

    async def set_power(self, on: bool) -> None:
        import sushy

        reset = sushy.ResetType.ON if on else sushy.ResetType.FORCE_OFF
        await self._call(lambda system: system.reset_system(reset))

    async def set_boot(self, network: bool) -> None:
        import sushy

        target = sushy.BootSource.PXE if network else sushy.BootSource.HDD
        await self._call(lambda system: system.set_system_boot_options(
            target=target, enabled=sushy.BootSourceOverrideEnabled.CONTINUOUS))

    async def close(self) -> None:
        root, self._root, self._system = self._root, None, None
        if root is None:
            return
        try:
            await asyncio.to_thread(root.close)
        except Exception:
            log.debug("closing the Redfish connection to %s failed", self._address, exc_info=True)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else "error"
    return line if len(line) <= 300 else line[:297] + "..."


class Bmcs:
    """The agent's BMC clients, one per (protocol, address, credentials, system), each used by
    one call at a time. `credentials` in the order of the settings; `timeout`: seconds per call;
    `verify`: Redfish TLS verification (True, or a CA bundle path)."""

    def __init__(self, credentials: Iterable[Credentials], *, timeout: float = 10.0,
                 verify: bool | str = True) -> None:
        self._credentials = tuple(credentials)
        self._timeout = timeout
        self._verify = verify
        self._clients: dict[tuple[str, str, str, str], Client] = {}
        self._locks: dict[tuple[str, str, str, str], asyncio.Lock] = {}

    def credentials_for(self, node_name: str, properties: Mapping[str, str]) -> Credentials | None:
        return find_credentials(self._credentials, node_name, properties.get("bmc_address", "").strip())

    def _client(self, node: NodeRef) -> tuple[tuple[str, str, str, str], Client, BmcAddress]:
        address = node_address(node)
        credentials = self.credentials_for(node.name, node.properties)
        if credentials is None:
            raise BmcError(f"{node.name}: no [[real.bmc_credentials]] table matches the node or "
                           f"its BMC {address}")
        system = node.properties.get("bmc_system", "").strip()
        # By the credentials' table (its pattern), not the user alone: two tables may name one
        # user with different passwords.
        key = (address.protocol, str(address), credentials.match, system)
        client = self._clients.get(key)
        if client is None:
            if address.protocol == IPMI:
                client = IpmiClient(address, credentials, self._timeout)
            else:
                client = RedfishClient(address, credentials, self._timeout, system, self._verify)
            self._clients[key] = client
        return key, client, address

    async def call(self, node: NodeRef, what: str, method: str, *args: Any) -> Any:
        """client.method(*args) for the node's BMC in a worker thread; BmcError naming the node,
        the BMC and `what` when it fails or takes longer than the timeout (twice: an IPMI login
        and a request)."""
        key, client, address = self._client(node)
        lock = self._locks.setdefault(key, asyncio.Lock())
        where = f"{node.name}: {address.protocol} BMC {address}"
        async with lock:
            try:
                return await asyncio.wait_for(getattr(client, method)(*args),
                                              timeout=2 * self._timeout + 5)
            except BmcError as exc:
                raise BmcError(f"{where}: {what}: {exc}") from None
            except TimeoutError:
                # The thread may still be waiting: the next call opens a new session.
                self._clients.pop(key, None)
                raise BmcError(f"{where}: {what}: no answer within {2 * self._timeout + 5:g} s") from None
            except (OSError, ValueError, RuntimeError) as exc:
                raise BmcError(f"{where}: {what}: {_first_line(str(exc)) or type(exc).__name__}") from None

    async def close(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.close()
