"""The hardware lab against real clients: pysnmp for the PoE ports, asyncssh for the Pis.

What a real raspberry driver does is done here by hand, step by step, so the lab is known to
behave like the hardware before a driver is written against it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from pysnmp.hlapi.v3arch.asyncio import Integer, OctetString

from tests.lab.clients import SnmpError, Switch, netboot, run, ssh_answers, ssh_when_up
from tests.lab.conftest import require_lab, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.lab, pytest.mark.asyncio(loop_scope="module")]

# Power on to SSH: boot_delay (0.5 s) + one poll (0.2 s) + sshd start; generous for a busy 2-core box.
BOOT_WITHIN = 15.0
DEFAULT_PASSWORD = "raspberry"


def pi_state(pi) -> dict:  # type: ignore[no-untyped-def]
    return json.loads((Path(pi.folder) / "state.json").read_text())


def netns_pids(netns: str) -> list[str]:
    return subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()


async def boot_maintenance(lab, switch: Switch, pi):  # type: ignore[no-untyped-def]
    """Network boot on, port power-cycled on: returns (root connection to nfspi, boot seconds)."""
    d = lab
    netboot(d, pi, True)
    assert await switch.power(pi.switch_port, False) == 2
    await asyncio.sleep(0.5)
    assert await switch.power(pi.switch_port, True) == 1
    conn, took = await ssh_when_up(pi.ip, BOOT_WITHIN, key=Path(d.ssh_key))
    assert (await run(conn, "hostname")).strip() == d.netboot_hostname
    return conn, took


async def write_image(lab, conn, pi, compression: str = "zst") -> float:  # type: ignore[no-untyped-def]
    """Streams the test image onto the card from the maintenance system; checks its sha256.
    Returns the seconds the copy took."""
    d = lab
    decompress = {"zst": "zstd -dc", "xz": "xz -dc", "": "cat"}[compression]
    dev = shlex.quote(pi.sd_device)
    began = time.monotonic()
    await run(conn, f"set -euo pipefail; curl -sSf {shlex.quote(d.image_url_for(compression))} "
                    f"| {decompress} | dd of={dev} bs=4M oflag=direct status=none")
    took = time.monotonic() - began
    digest = await run(conn, f"head -c {d.image.size} {dev} | sha256sum")
    assert digest.split()[0] == d.image.sha256
    return took


async def configure_card(conn, pi, hostname: str, root_key: str, user_key: str,  # type: ignore[no-untyped-def]
                         enable_ssh: bool = True) -> None:
    """What a driver's partition/configure steps do: grow the root partition, set the host name,
    install keys for root and pi, enable SSH (the `ssh` file in the boot partition)."""
    dev = shlex.quote(pi.sd_device)
    script = f"""set -euo pipefail
partx -u {dev}
growpart {dev} 2 || [ $? -eq 1 ]
e2fsck -fy {dev}p2 >/dev/null || [ $? -le 1 ]
resize2fs {dev}p2 >/dev/null 2>&1
mkdir -p /tmp/card && mount {dev}p2 /tmp/card
echo {shlex.quote(hostname)} > /tmp/card/etc/hostname
install -d -m 700 /tmp/card/root/.ssh
echo {shlex.quote(root_key)} > /tmp/card/root/.ssh/authorized_keys
install -d -m 700 -o 1000 -g 1000 /tmp/card/home/pi/.ssh
echo {shlex.quote(user_key)} > /tmp/card/home/pi/.ssh/authorized_keys
chown 1000:1000 /tmp/card/home/pi/.ssh/authorized_keys
umount /tmp/card
"""
    if enable_ssh:
        script += f"MTOOLS_SKIP_CHECK=1 mcopy -i {dev}p1 /dev/null ::/ssh\n"
    await run(conn, script)


async def test_network_boot_brings_up_the_maintenance_system(lab) -> None:  # type: ignore[no-untyped-def]
    d = lab
    pi = d.pis[0]
    switch = Switch(d)
    try:
        assert await switch.get(pi.switch_port) == 2  # every port starts off
        conn, took = await boot_maintenance(lab, switch, pi)
        print(f"\nmaintenance system answered {took:.2f} s after power on")
        async with conn:
            tools = ("curl wget zstd xz dd sha256sum sfdisk wipefs partx growpart resize2fs e2fsck "
                     "mcopy blkdiscard").split()
            found = await run(conn, "for t in " + " ".join(tools) + "; do command -v $t >/dev/null && echo $t; done")
            assert set(found.split()) >= set(tools) - {"wget"}  # curl or wget is enough
            await run(conn, f"test -b {shlex.quote(pi.sd_device)}")
            assert (await run(conn, "cat /etc/hostname")).strip() == d.netboot_hostname
        assert pi_state(pi)["system"] == "maintenance"
    finally:
        await switch.power(pi.switch_port, False)
        netboot(d, pi, False)
        switch.close()


async def test_image_written_over_ssh_boots_the_card_system(lab, user_key: Path) -> None:  # type: ignore[no-untyped-def]
    d = lab
    pi = d.pis[0]
    switch = Switch(d)
    agent_pub = Path(d.ssh_key + ".pub").read_text().strip()
    user_pub = Path(f"{user_key}.pub").read_text().strip()
    try:
        conn, _ = await boot_maintenance(lab, switch, pi)
        async with conn:
            took = await write_image(lab, conn, pi, "zst")
            print(f"\n{d.image.size >> 20} MiB test image written through curl | zstd | dd in {took:.2f} s")
            await configure_card(conn, pi, "lab-node-1", agent_pub, user_pub)
        netboot(d, pi, False)
        await switch.power_cycle(pi.switch_port, off_seconds=2.0)

        root, took = await ssh_when_up(pi.ip, BOOT_WITHIN, key=Path(d.ssh_key))
        print(f"card system answered {took:.2f} s after power on")
        async with root:
            assert (await run(root, "hostname")).strip() == "lab-node-1"
            assert "ID=edgebed-lab" in await run(root, "cat /etc/os-release")
            marker = await run(root, f"cat /run/edgebed-lab/{pi.netns}/card{d.image.marker}")
            assert marker.split()[0] == d.image.name
            assert "pi:x:1000:1000" in await run(root, "getent passwd pi")
            # The root file system was grown to the card: more than the image's 44 MiB.
            size_kib = int((await run(root, "df -k --output=size /home | tail -1")).strip())
            assert size_kib > 100 * 1024
        user, _ = await ssh_when_up(pi.ip, 5, username="pi", key=user_key)
        async with user:
            assert (await run(user, "id -un; echo $HOME")).split() == ["pi", "/home/pi"]
        with_password, _ = await ssh_when_up(pi.ip, 5, username="pi", password=DEFAULT_PASSWORD)
        with_password.close()
        # The agent's key is not a key of pi's; the user's key is not root's.
        assert not await ssh_answers(pi.ip, username="pi", key=Path(d.ssh_key))
        assert not await ssh_answers(pi.ip, username="root", key=user_key)
        assert pi_state(pi)["system"] == "card"
    finally:
        await switch.power(pi.switch_port, False)
        switch.close()


async def test_power_off_stops_every_process_of_the_pi(lab) -> None:  # type: ignore[no-untyped-def]
    d = lab
    pi = d.pis[1]
    switch = Switch(d)
    try:
        conn, _ = await boot_maintenance(lab, switch, pi)
        # Something of the Pi's own that would outlive a mere sshd restart.
        await run(conn, "nohup sleep 600 >/dev/null 2>&1 &")
        conn.close()
        assert len(netns_pids(pi.netns)) >= 2
        began = time.monotonic()
        assert await switch.power(pi.switch_port, False) == 2
        gone = await wait_until(lambda: _no_pids(pi.netns), within=5)
        assert gone, f"still running in {pi.netns}: {netns_pids(pi.netns)}"
        print(f"\npower cut took effect in {time.monotonic() - began:.2f} s")
        assert not await ssh_answers(pi.ip, key=Path(d.ssh_key))
        assert pi_state(pi)["power"] == "off"
    finally:
        await switch.power(pi.switch_port, False)
        netboot(d, pi, False)
        switch.close()


async def _no_pids(netns: str) -> bool:
    return not netns_pids(netns)


async def test_a_wiped_card_boots_nothing(lab) -> None:  # type: ignore[no-untyped-def]
    d = lab
    pi = d.pis[1]
    switch = Switch(d)
    agent_pub = Path(d.ssh_key + ".pub").read_text().strip()
    try:
        conn, _ = await boot_maintenance(lab, switch, pi)
        async with conn:
            await write_image(lab, conn, pi, "xz")
            await configure_card(conn, pi, "lab-node-2", agent_pub, agent_pub)
            dev = shlex.quote(pi.sd_device)
            await run(conn, f"set -euo pipefail; partx -u {dev}; wipefs -q -a {dev}p2 {dev}p1 {dev}; "
                            f"dd if=/dev/zero of={dev} bs=1M count=1 oflag=direct status=none; "
                            f"test -z \"$(wipefs -n {dev})\"")
        netboot(d, pi, False)
        await switch.power_cycle(pi.switch_port, off_seconds=2.0)
        dark = await wait_until(lambda: _state_is(pi, "dark"), within=BOOT_WITHIN)
        assert dark, pi_state(pi)
        assert not await ssh_answers(pi.ip, key=Path(d.ssh_key))
        assert "nothing to boot" in (Path(pi.folder) / "console.log").read_text()
    finally:
        await switch.power(pi.switch_port, False)
        switch.close()


async def _state_is(pi, system: str) -> bool:  # type: ignore[no-untyped-def]
    return pi_state(pi)["system"] == system


async def test_a_card_without_ssh_enabled_boots_without_ssh(lab) -> None:  # type: ignore[no-untyped-def]
    d = lab
    pi = d.pis[1]
    switch = Switch(d)
    agent_pub = Path(d.ssh_key + ".pub").read_text().strip()
    try:
        conn, _ = await boot_maintenance(lab, switch, pi)
        async with conn:
            await write_image(lab, conn, pi, "")
            await configure_card(conn, pi, "lab-node-2", agent_pub, agent_pub, enable_ssh=False)
        netboot(d, pi, False)
        await switch.power_cycle(pi.switch_port, off_seconds=2.0)
        console = Path(pi.folder) / "console.log"
        booted = await wait_until(lambda: _console_has(console, "lab-node-2 up without SSH"), BOOT_WITHIN)
        assert booted, console.read_text()[-2000:]
        assert pi_state(pi)["system"] == "card"
        assert not await ssh_answers(pi.ip, key=Path(d.ssh_key))
    finally:
        await switch.power(pi.switch_port, False)
        switch.close()


async def _console_has(console: Path, text: str) -> bool:
    return text in console.read_text()


async def test_reboot_inside_a_pi_boots_it_again(lab) -> None:  # type: ignore[no-untyped-def]
    d = lab
    pi = d.pis[1]
    switch = Switch(d)
    try:
        conn, _ = await boot_maintenance(lab, switch, pi)
        async with conn:
            # The firmware cuts the system (sshd with it) as soon as it sees the request: on a
            # busy machine the session may close before the exit status arrives (None), as a
            # real reboot over SSH often does. Anything else is a failed command.
            result = await asyncio.wait_for(conn.run("touch /tmp/before-reboot; reboot"), 60)
            assert result.exit_status in (0, None), (result.exit_status, result.stderr)
        await wait_until(lambda: _console_has(Path(pi.folder) / "console.log", "reboot requested"), 5)
        again, _ = await ssh_when_up(pi.ip, BOOT_WITHIN, key=Path(d.ssh_key))
        async with again:
            # A new boot: the maintenance system's /tmp starts empty; the port stayed on.
            assert (await run(again, "ls -A /tmp")).strip() == ""
        assert await switch.get(pi.switch_port) == 1
    finally:
        await switch.power(pi.switch_port, False)
        netboot(d, pi, False)
        switch.close()


async def test_a_wrong_community_gets_no_answer(lab) -> None:  # type: ignore[no-untyped-def]
    d = lab
    wrong = Switch(d, community="public")
    right = Switch(d)
    try:
        began = time.monotonic()
        with pytest.raises(SnmpError, match="(?i)timeout|timed out|no snmp response"):
            await wrong.get(1, timeout=1.0)
        assert time.monotonic() - began >= 0.9
        with pytest.raises(SnmpError):
            await wrong.set_raw(1, OctetString("1"), timeout=1.0)
        # A SET of the wrong type is refused and changes nothing: read back after every SET.
        before = await right.get(d.pis[0].switch_port)
        echoed = await right.set_raw(d.pis[0].switch_port, OctetString("1"))
        assert not isinstance(echoed, Integer), echoed  # snmpsim answers noSuchInstance, no error
        assert await right.get(d.pis[0].switch_port) == before
    finally:
        wrong.close()
        right.close()


async def test_agent_config_names_every_part_of_the_lab(lab) -> None:  # type: ignore[no-untyped-def]
    d = lab
    config = tomllib.loads(d.agent_config())
    assert config["driver"] == "real" and config["type"] == "raspberry"
    real = config["real"]
    for key in ("ssh_key", "tftp_root", "netboot_dir", "netboot_hostname", "netboot_known_hosts",
                "image_dir", "image_url", "serve_images", "wipe"):
        assert key in real, key
    assert real["netboot_hostname"] == "nfspi"
    # The maintenance system's host key, which the Pis show when network-booted.
    assert Path(real["netboot_known_hosts"]).read_text().startswith("ssh-ed25519 ")
    (sw,) = real["switches"]
    assert sw["address"] == d.switch.address and sw["community"] == d.switch.community
    assert sw["poe_oid"] == "1.3.6.1.2.1.105.1.1.1.3.1"
    props = d.node_properties(d.pis[0])
    assert set(props) == {"ip", "serial", "switch", "switch_port", "sd_device", "model"}
    assert len(props["serial"]) == 8 and int(props["serial"], 16) >= 0
    out = subprocess.run([sys.executable, "-m", "edgebed.lab", "agent-config", "--dir", d.directory],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == d.agent_config()


def _leftovers(directory: Path, slot: int) -> list[str]:
    from edgebed.lab.lab import _loop_devices, _mount_points
    from edgebed.lab.net import links_with_prefix, netns_with_prefix, prefix
    from edgebed.lab.proc import marked_pids

    inside = str(directory) + "/"
    return (netns_with_prefix(prefix(slot)) + links_with_prefix(prefix(slot))
            + [dev for dev, back in _loop_devices() if back.startswith(inside)]
            + [m for m in _mount_points() if m.startswith(inside)]
            + [f"pid {pid}" for pid in marked_pids(directory)])


@pytest.mark.asyncio(loop_scope="function")
async def test_down_cleans_what_a_killed_up_left(tmp_path: Path) -> None:
    require_lab()
    directory = tmp_path / "killed"
    up = subprocess.Popen(
        [sys.executable, "-m", "edgebed.lab", "up", "--dir", str(directory), "--pis", "1",
         "--boot-delay", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = await asyncio.to_thread(up.stdout.readline)
            if not line:
                break
            lines.append(line)
            if line.startswith("ready: "):
                break
        assert lines and lines[-1].startswith("ready: "), "".join(lines)
        from edgebed.lab import LabDescription

        d = LabDescription.load(directory.resolve())
        pi = d.pis[0]
        switch = Switch(d)
        try:
            netboot(d, pi, True)
            assert await switch.power(pi.switch_port, True) == 1
            conn, _ = await ssh_when_up(pi.ip, BOOT_WITHIN, key=Path(d.ssh_key))
            conn.close()
        finally:
            switch.close()
        os.kill(up.pid, signal.SIGKILL)
        up.wait(timeout=10)
        left = _leftovers(directory.resolve(), d.slot)
        assert any(name.startswith("ebl") for name in left) and any("loop" in x for x in left), left
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        if up.stdout:
            up.stdout.close()
    down = subprocess.run([sys.executable, "-m", "edgebed.lab", "down", "--dir", str(directory)],
                          capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert _leftovers(directory.resolve(), d.slot) == []
    assert not await ssh_answers(pi.ip, key=Path(d.ssh_key), timeout=1)
