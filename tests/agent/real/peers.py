"""Real protocol peers for the real raspberry driver's tests: snmpsim as a PoE switch, OpenSSH's
sshd as a Pi's maintenance or card system (in a UTS namespace of its own, so that it answers
`uname -n` with the host name the test gives it), loop devices as SD cards, Python's http.server
as the image server.

Each needs something of the machine (root, a program); `require` skips a test that lacks it with
the reason, or fails it under CI=true, where every prerequisite must be installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import component_missing

SSHD = "/usr/sbin/sshd"
POE_OID = "1.3.6.1.2.1.105.1.1.1.3.1"
COMMUNITY = "private-community-7f3a"


def missing(*needs: str) -> list[str]:
    """What of `needs` this machine lacks: "root", or program names."""
    absent = []
    for need in needs:
        if need == "root":
            if os.geteuid() != 0:
                absent.append("root")
        elif need == "sshd":
            if not Path(SSHD).exists():
                absent.append(f"{SSHD} (openssh-server)")
        elif need == "snmpsim":
            if responder() is None:
                absent.append("snmpsim (pip install snmpsim pysmi)")
        elif shutil.which(need) is None:
            absent.append(need)
    return absent


def require(*needs: str) -> None:
    """Skips the calling test when the machine lacks one of `needs`, naming what; under CI=true
    fails it instead: CI installs everything (scripts/ci-lab-deps)."""
    absent = missing(*needs)
    if absent:
        component_missing(", ".join(absent))


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g} s")
        time.sleep(0.05)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# SNMP.


def responder() -> str | None:
    beside = Path(sys.executable).parent / "snmpsim-command-responder"
    return str(beside) if beside.exists() else shutil.which("snmpsim-command-responder")


@dataclass(frozen=True)
class Switch:
    address: str
    community: str
    ports: int
    # A port whose OID exists but is read-only: a SET on it is answered, and changes nothing.
    read_only_port: int


@contextmanager
def snmp_switch(folder: Path, ports: int = 8) -> Iterator[Switch]:
    """snmpsim answering v2c for COMMUNITY on 127.0.0.1, every port off (2) and writable
    (writecache), except port `ports` + 1, read-only."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "data"
    data.mkdir(exist_ok=True)
    lines = ["1.3.6.1.2.1.1.1.0|4|edgebed test PoE switch"]
    lines += [f"{POE_OID}.{port}|2:writecache|value=2" for port in range(1, ports + 1)]
    lines.append(f"{POE_OID}.{ports + 1}|2|2")
    (data / f"{COMMUNITY}.snmprec").write_text("\n".join(lines) + "\n")
    port = free_port(socket.SOCK_DGRAM)
    log = (folder / "snmpsim.log").open("ab")
    process = subprocess.Popen(
        [responder(), f"--data-dir={data}", f"--cache-dir={folder / 'cache'}",
         f"--agent-udpv4-endpoint=127.0.0.1:{port}",
         f"--variation-module-options=writecache:file:{folder / 'writecache.db'}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        # As root, snmpsim otherwise drops to a user that cannot read the interpreter.
        env={**os.environ, "SNMPSIM_ALLOW_ROOT": "true"},
    )
    log.close()
    try:
        def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"snmpsim exited: {(folder / 'snmpsim.log').read_text()[-2000:]}")
            done = subprocess.run(
                ["snmpget", "-v2c", "-c", COMMUNITY, "-t", "0.5", "-r", "0", f"127.0.0.1:{port}",
                 f"{POE_OID}.1"], capture_output=True, check=False)
            return done.returncode == 0

        wait_until(answers, 60, "snmpsim did not answer")
        yield Switch(f"127.0.0.1:{port}", COMMUNITY, ports, ports + 1)
    finally:
        stop(process)


def read_port(switch: Switch, port: int, community: str | None = None) -> str:
    """The port's value as Debian's snmpget sees it: an independent reading."""
    done = subprocess.run(
        ["snmpget", "-v2c", "-c", community or switch.community, "-t", "1", "-r", "0", "-Oqv",
         switch.address, f"{POE_OID}.{port}"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


# SSH.


@dataclass(frozen=True)
class AgentKey:
    private: Path
    public: str


def make_key(folder: Path, name: str = "agent_ed25519") -> AgentKey:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if not path.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)],
                       check=True)
    return AgentKey(path, (folder / f"{name}.pub").read_text().strip())


@dataclass
class SshServer:
    port: int
    hostname: str
    authorized_keys: Path
    process: subprocess.Popen
    log: Path
    # Its host key's public line file (host_ed25519.pub).
    host_key: Path

    def stop(self) -> None:
        stop(self.process)


@contextmanager
def ssh_server(folder: Path, hostname: str, authorized: str, port: int | None = None) -> Iterator[SshServer]:
    """sshd on 127.0.0.1:`port` (a free one by default), in a UTS namespace whose host name is
    `hostname`, letting root in with the keys `authorized` (text) only."""
    folder.mkdir(parents=True, exist_ok=True)
    host_key = folder / "host_ed25519"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    keys = folder / "authorized_keys"
    keys.write_text(authorized.strip() + "\n")
    port = port or free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile none\nUsePAM no\n"
        "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        # tmp_path's folders belong to root but their modes are the test runner's business.
        f"StrictModes no\nAuthorizedKeysFile {keys}\nUseDNS no\nPrintMotd no\n"
        "Subsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = folder / "sshd.log"
    with log.open("ab") as handle:
        process = subprocess.Popen(
            ["unshare", "--uts", "--", "sh", "-c", 'hostname "$1" && exec "$2" -D -e -f "$3"',
             "sh", hostname, SSHD, str(config)],
            stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    server = SshServer(port, hostname, keys, process, log, Path(f"{host_key}.pub"))
    try:
        def listening() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"sshd exited: {log.read_text()[-2000:]}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, 20, "sshd did not listen")
        yield server
    finally:
        server.stop()


# SD cards.


@contextmanager
def loop_card(path: Path, mib: int) -> Iterator[str]:
    """A loop device over a sparse file of `mib` MiB: a blank SD card. Detached afterwards,
    with the partitions partx gave it."""
    with path.open("wb") as handle:
        handle.truncate(mib * 1024 * 1024)
    device = subprocess.run(["losetup", "--find", "--show", str(path)], capture_output=True,
                            text=True, check=True).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["partx", "-d", device], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


# Images.


@contextmanager
def http_server(folder: Path) -> Iterator[str]:
    """Python's http.server on 127.0.0.1 serving `folder`; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
         str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, 20, "http.server did not listen")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


MIB = 1024 * 1024


def build_image(path: Path, *, root_hostname: str = "raspberrypi", size_mib: int = 24) -> Path:
    """A small Pi-like card image (as mkfs.ext4 -d builds it, nothing mounted): a DOS table,
    p1 FAT-typed (left blank), p2 ext4 with /etc/{passwd,shadow,group,hostname,hosts}, /home/pi,
    /root, and random bytes in a file so that images differ in content."""
    work = path.parent / f"{path.name}.build"
    tree = work / "root"
    for sub in ("etc", "home/pi", "root", "tmp", "data"):
        (tree / sub).mkdir(parents=True, exist_ok=True)
    etc = tree / "etc"
    etc.joinpath("hostname").write_text(f"{root_hostname}\n")
    etc.joinpath("hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{root_hostname}\n")
    etc.joinpath("passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n"
        "pi:x:1000:1000:,,,:/home/pi:/bin/bash\n")
    etc.joinpath("shadow").write_text("root:*:19700:0:99999:7:::\nsshd:*:19700:0:99999:7:::\n"
                                      "pi:!:19700:0:99999:7:::\n")
    etc.joinpath("group").write_text("root:x:0:\npi:x:1000:\n")
    etc.joinpath("shadow").chmod(0o640)
    (tree / "data" / "noise").write_bytes(os.urandom(256 * 1024))
    os.chown(tree / "home/pi", 1000, 1000)
    rootfs = work / "root.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(rootfs), f"{size_mib - 8}M"],
                   check=True, capture_output=True)
    with path.open("wb") as handle:
        handle.truncate(size_mib * MIB)
    table = "label: dos\nunit: sectors\nstart=2048, size=12288, type=c\nstart=16384, type=83\n"
    subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(path)],
                   input=table.encode(), check=True, capture_output=True)
    subprocess.run(["dd", f"if={rootfs}", f"of={path}", "bs=1M", "seek=8", "conv=notrunc",
                    "status=none"], check=True)
    shutil.rmtree(work)
    return path
