"""The lab's network: one bridge on the host, one network namespace per Pi joined by a veth pair.

    host: bridge ebl<slot>-br, 10.213.<slot>.1/24 (the image server listens there)
      └─ veth ebl<slot>-pi<N> ──── eth0 in netns ebl<slot>-pi<N>, 10.213.<slot>.<10+N>/24,
                                   default route via 10.213.<slot>.1

Every name starts with `ebl<slot>-`, so `down` finds all of it by prefix. Slots keep labs that run
at the same time on one machine apart (another engineer's tests, a user's lab).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from edgebed.lab.proc import LabError, run, run_sync

SUBNET = "10.213"
MAX_SLOT = 99
MAX_PIS = 99
LOCK_DIR = Path("/run/edgebed-lab")


def prefix(slot: int) -> str:
    return f"ebl{slot}-"


def bridge_name(slot: int) -> str:
    return f"{prefix(slot)}br"


def host_ip(slot: int) -> str:
    return f"{SUBNET}.{slot}.1"


def pi_ip(slot: int, index: int) -> str:
    return f"{SUBNET}.{slot}.{10 + index}"


def pi_netns(slot: int, index: int) -> str:
    return f"{prefix(slot)}pi{index}"


def links_with_prefix(pre: str) -> list[str]:
    """Host network interfaces whose name starts with `pre`."""
    out = run_sync("ip", "-o", "link", "show", check=False)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            name = parts[1].strip().split("@", 1)[0]
            if name.startswith(pre):
                names.append(name)
    return names


def netns_with_prefix(pre: str) -> list[str]:
    out = run_sync("ip", "netns", "list", check=False)
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(pre)]


@dataclass
class SlotLock:
    """A slot held by this process: an flock on /run/edgebed-lab/slot-<n>.lock (released when the
    process dies, even by SIGKILL; leftovers of a dead lab still keep the slot busy by name)."""

    slot: int
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def claim_slot(wanted: int | None) -> SlotLock:
    """Takes slot `wanted`, or the lowest free one. Raises LabError when it (or every one) is busy."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    candidates = [wanted] if wanted is not None else list(range(MAX_SLOT + 1))
    for slot in candidates:
        if not 0 <= slot <= MAX_SLOT:
            raise LabError(f"slot {slot} is outside 0..{MAX_SLOT}")
        fd = os.open(LOCK_DIR / f"slot-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if links_with_prefix(prefix(slot)) or netns_with_prefix(prefix(slot)):
            os.close(fd)  # leftovers of a lab that was not taken down
            continue
        return SlotLock(slot, fd)
    if wanted is not None:
        raise LabError(f"slot {wanted} is in use by another lab (or its leftovers: "
                       f"`python -m edgebed.lab down` in that lab's directory)")
    raise LabError("every lab slot is in use")


async def make_bridge(slot: int) -> None:
    name = bridge_name(slot)
    await run("ip", "link", "add", name, "type", "bridge")
    await run("ip", "addr", "add", f"{host_ip(slot)}/24", "dev", name)
    await run("ip", "link", "set", name, "up")


async def make_pi_net(slot: int, index: int) -> None:
    """Creates netns ebl<slot>-pi<index> with eth0 (veth to the bridge), lo up, a default route."""
    ns = pi_netns(slot, index)
    host_side = f"{prefix(slot)}pi{index}"
    pi_side = f"{prefix(slot)}pi{index}c"
    await run("ip", "netns", "add", ns)
    await run("ip", "link", "add", host_side, "type", "veth", "peer", "name", pi_side)
    await run("ip", "link", "set", host_side, "master", bridge_name(slot))
    await run("ip", "link", "set", host_side, "up")
    await run("ip", "link", "set", pi_side, "netns", ns)
    await run("ip", "-n", ns, "link", "set", pi_side, "name", "eth0")
    await run("ip", "-n", ns, "addr", "add", f"{pi_ip(slot, index)}/24", "dev", "eth0")
    await run("ip", "-n", ns, "link", "set", "eth0", "up")
    await run("ip", "-n", ns, "link", "set", "lo", "up")
    await run("ip", "-n", ns, "route", "add", "default", "via", host_ip(slot))


# Servers: namespaces ebl<slot>-sv<N> on the same bridge, 10.213.<slot>.<100+N>, with a MAC of
# their own (their PXE entries are named after it).
MAX_SERVERS = 50


def server_ip(slot: int, index: int) -> str:
    return f"{SUBNET}.{slot}.{100 + index}"


def server_netns(slot: int, index: int) -> str:
    return f"{prefix(slot)}sv{index}"


def server_mac(slot: int, index: int) -> str:
    """A locally administered MAC (52:54:00 is QEMU's prefix, as a lab's virtual NIC)."""
    return f"52:54:00:eb:{slot:02x}:{index:02x}"


async def make_server_net(slot: int, index: int) -> None:
    """Creates netns ebl<slot>-sv<index> like a Pi's, with eth0's MAC set to server_mac."""
    ns = server_netns(slot, index)
    host_side = f"{prefix(slot)}sv{index}"
    inside = f"{prefix(slot)}sv{index}c"
    await run("ip", "netns", "add", ns)
    await run("ip", "link", "add", host_side, "type", "veth", "peer", "name", inside)
    await run("ip", "link", "set", host_side, "master", bridge_name(slot))
    await run("ip", "link", "set", host_side, "up")
    await run("ip", "link", "set", inside, "netns", ns)
    await run("ip", "-n", ns, "link", "set", inside, "name", "eth0")
    await run("ip", "-n", ns, "link", "set", "eth0", "address", server_mac(slot, index))
    await run("ip", "-n", ns, "addr", "add", f"{server_ip(slot, index)}/24", "dev", "eth0")
    await run("ip", "-n", ns, "link", "set", "eth0", "up")
    await run("ip", "-n", ns, "link", "set", "lo", "up")
    await run("ip", "-n", ns, "route", "add", "default", "via", host_ip(slot))
