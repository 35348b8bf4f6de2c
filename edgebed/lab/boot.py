"""What a lab Pi runs when it boots: `python -m edgebed.lab.boot SPEC.json`.

The firmware (edgebed.lab.firmware) starts this inside the Pi's network namespace and in a new
mount and UTS namespace of its own:

    ip netns exec ebl<slot>-pi<N> unshare --mount --uts --propagation private -- \
        python -m edgebed.lab.boot <pi dir>/boot.json

so every mount below is seen only by the Pi's processes, and disappears with them at a power cut.
The spec (JSON, written by the firmware) is a `BootSpec`. Then, by `mode`:

- "maintenance" (the network-booted system): host name `nfspi`; a fresh /tmp and /root (with the
  agent's key in /root/.ssh/authorized_keys) bound over the host's; `sd_device` is the Pi's card;
  the host's tools are its tools. It execs sshd (root login with a key only).
- "card" (the card's own system): the card must hold a DOS partition table whose first partition
  is FAT with start4.elf (checked with mtools) and whose second is ext4 with /etc/passwd and
  /etc/hostname; it is mounted (and stays visible inside at <mount_dir>/card), and its /etc/passwd,
  /etc/shadow, /etc/group, /etc/gshadow, /etc/hostname, /etc/hosts, /etc/os-release, /home and
  /root are bound over the host's (each only when both exist); the host name is the card's. When
  SSH is enabled on the card (a `ssh` or `ssh.txt` file in the boot partition, which is consumed
  and turned into the systemd symlink as Raspberry Pi OS's first boot does, or that symlink
  itself) it execs sshd with the
  card's host key (created on the card at the first boot, as on a real Pi); otherwise it stays up
  without SSH, like a Pi whose SSH was never enabled.

Exit code 3 with one line on stderr: nothing bootable (the firmware keeps the Pi dark and retries,
as a Pi 4's boot loader loops over its boot order). Any other failure exits 1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgebed.lab.image import MTOOLS_ENV

NOT_BOOTABLE = 3
SSH_UNIT = "etc/systemd/system/multi-user.target.wants/ssh.service"
SSH_UNIT_TARGET = "/lib/systemd/system/ssh.service"


@dataclass(frozen=True)
class BootSpec:
    """mode: "maintenance" or "card"; run_dir: the Pi's scratch folder for this boot (emptied by
    the firmware before each boot; its bin/ holds the reboot/poweroff stand-ins, put first on
    PATH); mount_dir: where run_dir is bound first, outside /tmp, so that it stays reachable once
    the Pi's own /tmp hides the host's (a lab directory under /tmp is common); card: the loop
    device; hostname: used by "maintenance"; authorized_keys: the agent's public key (text);
    host_key: the maintenance system's host key file; sshd: the binary."""

    mode: str
    run_dir: str
    mount_dir: str
    card: str
    hostname: str
    authorized_keys: str
    host_key: str
    sshd: str = "/usr/sbin/sshd"


class NotBootable(Exception):
    """The card holds nothing a Pi would boot; the message says why."""


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, capture_output=True, check=False, env=env, timeout=60)


def _must(*argv: str) -> None:
    done = _run(*argv)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.decode(errors='replace').strip()}")


def _bind(source: Path, target: str) -> None:
    _must("mount", "--bind", str(source), target)


def _sshd_config(spec: BootSpec, host_key: str, passwords: bool) -> Path:
    """An sshd config of our own: with `-f`, Debian's /etc/ssh/sshd_config is not read at all."""
    stubs = f"{spec.mount_dir}/bin"
    for value in (host_key, stubs):
        if any(c in value for c in '"\n'):
            raise RuntimeError(f"path not usable in an sshd config: {value!r}")
    config = Path(spec.mount_dir) / "sshd_config"
    config.write_text(
        "Port 22\n"
        "ListenAddress 0.0.0.0\n"
        f'HostKey "{host_key}"\n'
        # Several Pis share the host's /run: no pid file, or they would overwrite each other's.
        "PidFile none\n"
        "UsePAM no\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        f"PasswordAuthentication {'yes' if passwords else 'no'}\n"
        "KbdInteractiveAuthentication no\n"
        "AuthorizedKeysFile .ssh/authorized_keys\n"
        "UseDNS no\n"
        "PrintMotd no\n"
        "AcceptEnv LANG LC_*\n"
        f'SetEnv "PATH={stubs}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"\n'
        "Subsystem sftp internal-sftp\n")
    return config


def _exec_sshd(spec: BootSpec, config: Path) -> None:
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    sys.stdout.flush()
    os.execv(spec.sshd, [spec.sshd, "-D", "-e", "-f", str(config)])


def _enter_run_dir(spec: BootSpec) -> Path:
    """Binds run_dir at mount_dir and returns mount_dir: every later path goes through it."""
    mount_dir = Path(spec.mount_dir)
    mount_dir.mkdir(parents=True, exist_ok=True)
    _bind(Path(spec.run_dir), str(mount_dir))
    return mount_dir


def boot_maintenance(spec: BootSpec) -> None:
    run = _enter_run_dir(spec)
    tmp, root = run / "tmp", run / "root"
    tmp.mkdir(mode=0o1777, exist_ok=True)
    tmp.chmod(0o1777)
    (root / ".ssh").mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    (root / ".ssh").chmod(0o700)
    keys = root / ".ssh/authorized_keys"
    keys.write_text(spec.authorized_keys.strip() + "\n")
    keys.chmod(0o600)
    host_key = run / "ssh_host_ed25519_key"
    shutil.copyfile(spec.host_key, host_key)
    host_key.chmod(0o600)
    hostname = run / "hostname"
    hostname.write_text(spec.hostname + "\n")
    config = _sshd_config(spec, str(host_key), passwords=False)
    _bind(root, "/root")
    _bind(hostname, "/etc/hostname")
    _bind(tmp, "/tmp")  # last: it may hide the lab directory
    socket.sethostname(spec.hostname)
    print(f"maintenance system {spec.hostname} up, card {spec.card}", flush=True)
    _exec_sshd(spec, config)


def _partitions(card: str) -> list[tuple[int, int, int, str]]:
    """(number, start sector, sectors, type) of each partition in the card's table, read from the
    card itself; the kernel's view is refreshed with partx (it has no MBR parser for loops)."""
    done = _run("partx", "-g", "-o", "NR,START,SECTORS,TYPE", card)
    if done.returncode != 0:
        raise NotBootable(f"no partition table on {card}")
    parts = []
    for line in done.stdout.decode().splitlines():
        words = line.split()
        if len(words) == 4 and words[0].isdigit():
            parts.append((int(words[0]), int(words[1]), int(words[2]), words[3].lower()))
    # The table may have changed since the last boot (a new image): update, then add what is new.
    _run("partx", "-u", card)
    _run("partx", "-a", card)
    return parts


def boot_card(spec: BootSpec) -> None:
    run = _enter_run_dir(spec)
    parts = _partitions(spec.card)
    if len(parts) < 2:
        raise NotBootable(f"{spec.card} has {len(parts)} partition(s), a Pi system needs 2")
    if parts[0][3] not in ("0xb", "0xc", "0xe", "0x6"):
        raise NotBootable(f"partition 1 of {spec.card} is type {parts[0][3]}, not FAT")
    boot_part, root_part = f"{spec.card}p1", f"{spec.card}p2"
    mtools = dict(os.environ, **MTOOLS_ENV)
    if _run("mdir", "-b", "-i", boot_part, "::/start4.elf", env=mtools).returncode != 0:
        raise NotBootable(f"no start4.elf in the FAT boot partition {boot_part}")
    card_root = run / "card"
    card_root.mkdir(exist_ok=True)
    mounted = _run("mount", "-t", "ext4", root_part, str(card_root))
    if mounted.returncode != 0:
        raise NotBootable(f"{root_part} is not a mountable ext4 root: "
                          f"{mounted.stderr.decode(errors='replace').strip()}")
    etc = card_root / "etc"
    for name in ("passwd", "hostname"):
        if not (etc / name).is_file():
            raise NotBootable(f"the root file system on {root_part} has no /etc/{name}")
    hostname = (etc / "hostname").read_text().strip() or "raspberrypi"

    # Raspberry Pi OS's first boot: a `ssh` file in the boot partition enables the SSH server.
    unit = card_root / SSH_UNIT
    for name in ("ssh", "ssh.txt"):
        if _run("mdir", "-b", "-i", boot_part, f"::/{name}", env=mtools).returncode == 0:
            unit.parent.mkdir(parents=True, exist_ok=True)
            if not os.path.lexists(unit):
                unit.symlink_to(SSH_UNIT_TARGET)
            _run("mdel", "-i", boot_part, f"::/{name}", env=mtools)
    ssh_enabled = os.path.lexists(unit)

    for name in ("passwd", "shadow", "group", "gshadow", "hostname", "hosts", "os-release"):
        if (etc / name).is_file() and Path("/etc", name).exists():
            _bind(etc / name, f"/etc/{name}")
    for folder in ("home", "root"):
        (card_root / folder).mkdir(exist_ok=True)
        _bind(card_root / folder, f"/{folder}")
    host_key = etc / "ssh/ssh_host_ed25519_key"
    if ssh_enabled and not host_key.exists():
        # A real Pi creates its host keys on the card at its first boot.
        host_key.parent.mkdir(parents=True, exist_ok=True)
        _must("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{hostname}", "-f", str(host_key))
    config = _sshd_config(spec, str(host_key), passwords=True)
    tmp = card_root / "tmp"
    tmp.mkdir(mode=0o1777, exist_ok=True)
    _bind(tmp, "/tmp")  # last: it may hide the lab directory
    socket.sethostname(hostname)
    if not ssh_enabled:
        print(f"card system {hostname} up without SSH (not enabled on the card)", flush=True)
        # The system runs on, without a server: it stops at the next power cut (SIGKILL).
        while True:
            signal.pause()
    print(f"card system {hostname} up, SSH enabled", flush=True)
    _exec_sshd(spec, config)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m edgebed.lab.boot SPEC.json", file=sys.stderr)
        return 2
    spec = BootSpec(**json.loads(Path(argv[0]).read_text()))
    if shutil.which(spec.sshd) is None and not Path(spec.sshd).exists():
        print(f"{spec.sshd} is missing (install openssh-server)", file=sys.stderr)
        return 1
    try:
        if spec.mode == "maintenance":
            boot_maintenance(spec)
        elif spec.mode == "card":
            boot_card(spec)
        else:
            print(f"unknown boot mode {spec.mode!r}", file=sys.stderr)
            return 2
    except NotBootable as reason:
        print(f"nothing to boot: {reason}", file=sys.stderr, flush=True)
        return NOT_BOOTABLE
    except (RuntimeError, OSError, subprocess.SubprocessError) as failure:
        print(f"boot failed: {failure}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
