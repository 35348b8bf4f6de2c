"""SSH to the nodes with asyncssh: one connection per node, reused across steps; commands built
with every value quoted.

Commands run through the node's login shell, so a command is a string: build it with `command`
(an argv, shlex-quoted) or `bash` (a constant script, its values as positional parameters,
quoted). A value from data (a host name, a URL, a device path) is never spliced into script text.
Secrets never travel on a command line, where `ps` on the node would show them: they go through
the command's stdin (`input`).

Errors are DriverError subclasses: `Unreachable` when nothing answers on the SSH port (powered
off, booting, no route), `Refused` when a server answers but does not let the agent in (its key
is not in root's authorized_keys), `HostKeyRefused` when the server is not one the agent trusts,
`CommandFailed` for a non-zero exit.

Host keys are pinned (`HostKeys`), never learnt from whoever answers: a node may show either
the maintenance system's keys (`[real] netboot_known_hosts`, shared by every Pi that boots the
maintenance system) or the key the agent itself put on the card at its last deploy (configure's
host part generates it on the card and the agent stores its public half per node, by serial).
Anything else is refused during the handshake, before the agent's key signs anything or a
command is sent: a node answering with another key (a card written by someone else, a host
on the testbed network taking the node's address) gets nothing.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from edgebed.nodetypes.base import DriverError, NodeRef
from edgebed.nodetypes.drivers import LoadState, SaveState

log = logging.getLogger(__name__)

# Seconds a pooled connection may be silent before asyncssh probes it, and unanswered probes
# before it is dropped: a Pi that lost power sends no FIN, so its connection is otherwise kept.
KEEPALIVE_SECONDS = 10
KEEPALIVE_COUNT = 3
# A command that runs longer is given up (the executor's timeouts usually come first).
COMMAND_TIMEOUT = 600.0


class Unreachable(DriverError):
    """Nothing answers SSH on the node: off, still booting, hung, or no route to it."""


class Refused(DriverError):
    """An SSH server answers on the node but does not let the agent in."""


class CommandFailed(DriverError):
    """A command ran and exited non-zero; the message carries its last error line."""


class HostKeyRefused(Refused):
    """The node's SSH server shows a host key the agent does not trust for it."""


# The key types an OpenSSH public key line may start with (ssh-keygen -l's list).
_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
              "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
              "sk-ecdsa-sha2-nistp256@openssh.com")


def parse_public_keys(text: str) -> list[asyncssh.SSHKey]:
    """The host keys of a `*.pub` file or a known_hosts file: every line holding `TYPE BASE64`
    (a known_hosts line's host patterns before it, and comments after, are ignored; so are
    blank lines and `#` comments). Raises ValueError naming the line that holds no usable key.
    """
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].startswith("@"):
            raise ValueError(f"line {number}: markers such as {words[0]} are not supported")
        at = next((i for i, word in enumerate(words) if word in _KEY_TYPES), None)
        if at is None or at + 1 >= len(words):
            raise ValueError(f"line {number} holds no public key (TYPE BASE64)")
        try:
            keys.append(asyncssh.import_public_key(f"{words[at]} {words[at + 1]}"))
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise ValueError(f"line {number}: not a usable public key ({exc})") from None
    return keys


def load_known_hosts(path: str) -> list[asyncssh.SSHKey]:
    """The maintenance system's host keys from `path`; ValueError saying why they cannot be
    used (unreadable, no key, a bad line)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    keys = parse_public_keys(text)
    if not keys:
        raise ValueError("holds no public key")
    return keys


def fingerprint(key: asyncssh.SSHKey) -> str:
    return key.get_fingerprint("sha256")


def _serial_of(node: NodeRef) -> str:
    return node.properties.get("serial", "").strip().lower() or node.name


class HostKeys:
    """The host keys the agent accepts from each node: the maintenance system's (from the
    configuration) and the one pinned for the node's card or disk, kept with the driver's state in
    the agent's database (`load_state`/`save_state`, key `hostkey.<id>`). `ident` names the
    hardware a pin belongs to: a Pi's serial (the default), a server's MAC address."""

    def __init__(self, maintenance: list[asyncssh.SSHKey], *, load_state: LoadState,
                 save_state: SaveState, ident: Callable[[NodeRef], str] | None = None) -> None:
        if not maintenance:
            raise ValueError("the maintenance system needs at least one host key")
        self.maintenance = list(maintenance)
        self._load = load_state
        self._save = save_state
        self._ident = ident or _serial_of
        self._pinned: dict[str, asyncssh.SSHKey | None] = {}

    def _serial(self, node: NodeRef) -> str:
        return self._ident(node)

    async def card_key(self, node: NodeRef) -> asyncssh.SSHKey | None:
        """The key pinned for the node's card, None when the agent deployed none there."""
        serial = self._serial(node)
        if serial not in self._pinned:
            saved = await self._load(f"hostkey.{serial}")
            self._pinned[serial] = asyncssh.import_public_key(saved) if saved else None
        return self._pinned[serial]

    async def pin(self, node: NodeRef, key: asyncssh.SSHKey | None) -> None:
        """Pins `key` for the node's card (None: forgets the pin, the card is being rewritten).
        Durable when it returns."""
        serial = self._serial(node)
        line = key.export_public_key("openssh").decode().strip() if key is not None else ""
        await self._save(f"hostkey.{serial}", line)
        self._pinned[serial] = key

    async def trusted(self, node: NodeRef) -> list[asyncssh.SSHKey]:
        card = await self.card_key(node)
        return self.maintenance + ([card] if card is not None else [])

    async def refusal(self, node: NodeRef) -> str:
        """What a refused host key message says the agent expected."""
        card = await self.card_key(node)
        expected = (f"the maintenance system's ({', '.join(fingerprint(k) for k in self.maintenance)}, "
                    "real.netboot_known_hosts)")
        if card is not None:
            expected += f" or the one the agent set on the card or disk at its last deploy ({fingerprint(card)})"
        else:
            expected += (" (no deployed key: the agent has not deployed this node's card or disk since it pins"
                         " host keys)")
        return f"the host key is not {expected}: refusing to log in"


@dataclass(frozen=True)
class Completed:
    exit_status: int
    stdout: str
    stderr: str


def command(*argv: str) -> str:
    """A command line for the node's shell: each argument quoted."""
    return shlex.join(argv)


def bash(script: str, *args: str, name: str = "edgebed") -> str:
    """Runs `script` (constant text) with bash on the node, `args` as $1, $2, ... (quoted); bash
    and not sh: the scripts use pipefail and arrays, which dash lacks. `name` is $0, which bash
    puts in its error messages."""
    return shlex.join(["bash", "-c", script, name, *args])


def last_line(text: str, limit: int = 300) -> str:
    """The last non-empty line of a command's output, shortened: what an error message quotes."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def load_key(path: str) -> asyncssh.SSHKey:
    """The agent's private key. Raises ValueError saying why it cannot be used (never quoting
    the file's contents)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot be read: {exc.strerror}") from None
    try:
        return asyncssh.import_private_key(data)
    except asyncssh.KeyImportError as exc:
        raise ValueError(f"is not a usable unencrypted private key ({exc})") from None


class SshPool:
    """Connections as root to the nodes, one per address, opened on first use and kept.

    key: the agent's private key; host_keys: which server keys each node may show (None: any,
    for tests of the pool alone; both real drivers pin them); port: the
    nodes' SSH port; connect_timeout: seconds for the TCP connection and the login together.
    """

    def __init__(self, key: asyncssh.SSHKey, host_keys: HostKeys | None = None, *, port: int = 22,
                 connect_timeout: float = 10.0, user: str = "root") -> None:
        self._key = key
        self.host_keys = host_keys
        self._port = port
        self._timeout = connect_timeout
        self._user = user
        self._connections: dict[str, asyncssh.SSHClientConnection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # asyncssh logs every connection and command line at INFO: the scripts' text at every
        # poll of every node. Its warnings and errors are kept.
        logging.getLogger("asyncssh").setLevel(logging.WARNING)

    async def pin(self, node: NodeRef, key: asyncssh.SSHKey | None) -> None:
        """Pins the node's card key (None: drops it), when this pool pins host keys."""
        if self.host_keys is not None:
            await self.host_keys.pin(node, key)

    @property
    def public_key(self) -> str:
        """The agent's public key, one OpenSSH line (for authorized_keys)."""
        return self._key.export_public_key("openssh").decode().strip()

    def _target(self, node: NodeRef) -> str:
        if not node.ip:
            raise DriverError(f"{node.name}: no 'ip' property to reach it by SSH")
        return node.ip

    def where(self, node: NodeRef) -> str:
        return f"{node.name}: ssh {self._user}@{node.ip}:{self._port}"

    async def _connect(self, node: NodeRef) -> asyncssh.SSHClientConnection:
        address = self._target(node)
        lock = self._locks.setdefault(address, asyncio.Lock())
        async with lock:
            connection = self._connections.get(address)
            if connection is not None and not connection.is_closed():
                return connection
            trusted = await self.host_keys.trusted(node) if self.host_keys is not None else None
            try:
                connection = await asyncssh.connect(
                    address, self._port, username=self._user, client_keys=[self._key],
                    # Only these keys, checked in the handshake (the module's docstring).
                    known_hosts=(trusted, [], []) if trusted is not None else None,
                    # Only the agent's key: no ssh-agent, no ~/.ssh/config of whoever runs it.
                    agent_path=None, config=None, password=None,
                    connect_timeout=self._timeout, login_timeout=self._timeout,
                    keepalive_interval=KEEPALIVE_SECONDS, keepalive_count_max=KEEPALIVE_COUNT,
                )
            except asyncssh.HostKeyNotVerifiable:
                why = await self.host_keys.refusal(node) if self.host_keys is not None else "host key refused"
                raise HostKeyRefused(f"{self.where(node)}: {why}") from None
            except asyncssh.PermissionDenied:
                raise Refused(
                    f"{self.where(node)}: the server refused the agent's key "
                    "(it is not in root's authorized_keys)"
                ) from None
            except asyncssh.ConnectionLost as exc:
                raise Unreachable(f"{self.where(node)}: connection lost: {exc.reason}") from None
            except asyncssh.DisconnectError as exc:
                raise Refused(f"{self.where(node)}: the server hung up: {exc.reason}") from None
            except asyncssh.Error as exc:
                raise Refused(f"{self.where(node)}: {exc}") from None
            except TimeoutError:
                raise Unreachable(
                    f"{self.where(node)}: no SSH answer within {self._timeout:g} s"
                ) from None
            except OSError as exc:
                raise Unreachable(f"{self.where(node)}: {exc.strerror or exc}") from None
            self._connections[address] = connection
            return connection

    async def run(self, node: NodeRef, line: str, *, input: str | None = None,
                  timeout: float = COMMAND_TIMEOUT, check: bool = True, what: str = "") -> Completed:
        """Runs `line` (built with `command` or `bash`) on the node; `input` goes to its stdin
        (None or "": an empty stdin, closed at once).
        With `check`, a non-zero exit raises CommandFailed naming `what` and quoting the last
        line of stderr. A pooled connection found dead (the node rebooted) is replaced once."""
        for attempt in (1, 2):
            connection = await self._connect(node)
            try:
                if input:
                    result = await connection.run(line, input=input, check=False, timeout=timeout)
                else:
                    # asyncssh closes stdin only after non-empty input: a script reading it
                    # (`cat`) would wait forever for nothing.
                    result = await connection.run(line, stdin=asyncssh.DEVNULL, check=False,
                                                  timeout=timeout)
            except asyncssh.TimeoutError:
                raise DriverError(
                    f"{self.where(node)}: {what or 'a command'} did not finish within {timeout:g} s"
                ) from None
            except (asyncssh.ChannelOpenError, asyncssh.DisconnectError, BrokenPipeError,
                    ConnectionResetError) as exc:
                await self._drop(node, connection)
                if attempt == 2:
                    raise Unreachable(f"{self.where(node)}: connection lost ({exc})") from None
                continue
            status = result.exit_status if result.exit_status is not None else -1
            stdout = _text(result.stdout)
            stderr = _text(result.stderr)
            if check and status != 0:
                raise CommandFailed(
                    f"{node.name}: {what or 'command'} failed (exit {status}): "
                    f"{last_line(stderr) or last_line(stdout) or 'no message'}"
                )
            return Completed(status, stdout, stderr)
        raise AssertionError("unreachable")

    async def _drop(self, node: NodeRef, connection: asyncssh.SSHClientConnection) -> None:
        if self._connections.get(node.ip) is connection:
            del self._connections[node.ip]
        connection.abort()

    async def forget(self, node: NodeRef) -> None:
        """Drops the node's connection: it lost power, and whatever answers next is a new boot."""
        connection = self._connections.pop(node.ip, None)
        if connection is not None:
            connection.abort()

    async def close(self) -> None:
        connections = list(self._connections.values())
        self._connections.clear()
        for connection in connections:
            connection.close()
        for connection in connections:
            await connection.wait_closed()


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value
