"""The real raspberry driver end to end, in the hardware lab (docs/lab.md): real agent processes
with driver = "real" drive lab Pis through snmpsim, network-boot folders, sshd and loop-device
cards; the user logs in to what was deployed.

The session's lab of 8 Pis (the `lab` fixture, tests/labs.py) serves the module, each test its
own Pis. State timeouts are shortened with
`[real] timeout_scale`; the lab's port poll (0.2 s) allows `poe_off_seconds = 0.5`. Figures
(durations, memory) are printed as `FIGURE ...` lines (pytest -s shows them); the copy's
throughput against a raw `dd` is scripts/bench/lab_copy.py's.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncssh
import pytest

from edgebed.lab.description import LabDescription
from tests.agent.real.lab import AgentConfig, Watch
from tests.agent.real.peers import MIB
from tests.processes import REPO, AgentProcess

pytestmark = [pytest.mark.slow, pytest.mark.lab]

PASSWORD = "a long user password"


def figure(text: str) -> None:
    print(f"\nFIGURE {text}", flush=True)


def transitions(agent: AgentProcess, node: str, process: str = "") -> list[tuple[str, str, float]]:
    """(event, state, wall time) of the node's last action (of `process`, when given), from the
    stopped agent's transition log."""
    rows = [row for row in agent.transitions()
            if row.node_name == node and process in ("", row.process)]
    last = rows[-1].action_id
    return [(row.event, row.state, row.at) for row in rows if row.action_id == last]


def seconds_in(rows: list[tuple[str, str, float]], state: str) -> float:
    entered = [at for event, name, at in rows if event == "enter" and name == state]
    later = [at for event, _, at in rows if event == "enter" and at > entered[0]]
    return min(later) - entered[0]


async def ssh_run(host: str, command: str, **login: object) -> str:
    async with asyncssh.connect(host, known_hosts=None, agent_path=None, config=None,
                                connect_timeout=10, **login) as connection:
        result = await connection.run(command, check=True, timeout=120)
        return str(result.stdout)


def card_table(device: str) -> str:
    done = subprocess.run(["partx", "-g", "-o", "NR,START,SECTORS", device], capture_output=True,
                          text=True, check=False)
    return done.stdout if done.returncode == 0 else ""


def port_value(lab: LabDescription, port: int) -> str:
    done = subprocess.run(["snmpget", "-v2c", "-c", lab.switch.community, "-Oqv", "-t", "2",
                           lab.switch.address, f"{lab.switch.poe_oid}.{port}"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def test_deploy_reboot_and_destroy_end_to_end(lab, tmp_path, user_key) -> None:
    key_path, public_key = user_key
    agent = AgentConfig(lab, tmp_path, name="e2e", timeout_scale=0.1).agent().start()
    pi = lab.pis[0]
    watch = Watch(agent.address)
    try:
        await watch.add_node("lab-pi1", lab.node_properties(pi))
        await watch.put_environment("lab-test", "lab-test.img.zst")

        began = time.monotonic()
        await watch.start("lab-pi1", "deploy", "lab-test", ssh_key=public_key, hostname="exp-pi1",
                          os_password=PASSWORD, partition_size="full")
        deployed = await watch.final("lab-pi1", within=180)
        deploy_seconds = time.monotonic() - began
        assert deployed.state == "deployed", (watch.seen["lab-pi1"], agent.log()[-3000:])
        assert deployed.reboots == 0

        # The user logs in with their own key, on the host name they chose, and with their
        # password; the root partition fills the card.
        login = dict(username="pi", client_keys=[str(key_path)])
        assert (await ssh_run(pi.ip, "hostname; id -un", **login)).split() == ["exp-pi1", "pi"]
        # The lab's card system shows the card's root there (docs/lab.md).
        marker = f"/run/edgebed-lab/{pi.netns}/card/etc/edgebed-image"
        assert (await ssh_run(pi.ip, f"cat {marker}", **login)).startswith("lab-test")
        assert (await ssh_run(pi.ip, "hostname", username="pi", password=PASSWORD,
                              preferred_auth="password")).strip() == "exp-pi1"
        last = card_table(pi.sd_device).splitlines()[-1].split()
        assert (int(last[1]) + int(last[2])) * 512 == 256 * MIB
        # Past the partition table (whose root entry grew), up to the root partition, the card
        # is the image byte for byte: the boot partition is nothing the driver configures.
        image = Path(lab.image_dir) / "lab-test.img"
        with image.open("rb") as source, open(pi.sd_device, "rb") as card:
            source.seek(512)
            card.seek(512)
            length = 20 * MIB - 512
            assert hashlib.sha256(source.read(length)).digest() == hashlib.sha256(card.read(length)).digest()

        began = time.monotonic()
        await watch.start("lab-pi1", "reboot")
        rebooted = await watch.final("lab-pi1", within=120)
        reboot_seconds = time.monotonic() - began
        assert rebooted.state == "rebooted", watch.seen["lab-pi1"]
        assert (await ssh_run(pi.ip, "hostname", **login)).strip() == "exp-pi1"

        began = time.monotonic()
        await watch.start("lab-pi1", "destroy")
        destroyed = await watch.final("lab-pi1", within=180)
        destroy_seconds = time.monotonic() - began
        assert destroyed.state == "destroyed", watch.seen["lab-pi1"]
        # No table, no signature; the port is off, and network boot stays on: the next power
        # on boots the maintenance system, never the previous one.
        assert card_table(pi.sd_device) == ""
        assert subprocess.run(["wipefs", "--no-act", "--noheadings", pi.sd_device],
                              capture_output=True, text=True).stdout == ""
        assert port_value(lab, pi.switch_port) == "2"
        assert os.path.lexists(Path(lab.tftp_root) / pi.serial)
    finally:
        await watch.close()
        agent.terminate()
    rows = transitions(agent, "lab-pi1")
    assert [state for event, state, _ in rows if event == "enter"][-1] == "destroyed"
    # The user's password never reaches the log.
    assert PASSWORD not in agent.log()
    figure(f"lab deploy {deploy_seconds:.1f} s, reboot {reboot_seconds:.1f} s, "
           f"destroy {destroy_seconds:.1f} s (64 MiB image, .zst; timeout_scale 0.1)")


def _slow_server(folder: str, host: str, rate: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.agent.real.slow_http", folder, host, str(port), str(rate)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)
    assert process.stdout is not None and b"serving" in process.stdout.readline()
    return process, f"http://{host}:{port}"


async def test_an_agent_killed_during_the_copy_finds_it_again_and_deploys(lab, tmp_path, user_key) -> None:
    """SIGKILL in the middle of the image copy: the copy runs on in the Pi; the restarted agent
    finds the same job (it does not start another), waits for it, and the deploy ends deployed
    with a verified card."""
    _, public_key = user_key
    server, url = _slow_server(lab.image_dir, lab.host_ip, rate=8 * MIB)
    agent = AgentConfig(lab, tmp_path, name="kill", timeout_scale=0.1, image_url=url).agent().start()
    pi = lab.pis[1]
    try:
        watch = Watch(agent.address)
        await watch.add_node("lab-pi2", lab.node_properties(pi))
        # Raw: 64 MiB at 8 MiB/s, about 8 s of copy.
        await watch.put_environment("lab-raw", "lab-test.img")
        await watch.start("lab-pi2", "deploy", "lab-raw", ssh_key=public_key)
        copying = await watch.until(
            "lab-pi2", lambda a: a.state == "copy_image" and a.progress >= 10, within=120)
        await watch.close()
        agent.kill()
        killed_at = copying.progress

        agent.start()  # the same configuration, database and log
        watch = Watch(agent.address)
        try:
            deployed = await watch.final("lab-pi2", within=180)
        finally:
            await watch.close()
            agent.terminate()
    finally:
        agent.stop()
        server.terminate()
        server.wait()
    logs = agent.log()
    assert deployed.state == "deployed", logs[-3000:]
    # One copy job in all: the restarted agent found it running and left it alone.
    assert logs.count("copying lab-test.img") == 1, logs[-3000:]
    assert "resumed 1 unfinished action" in logs
    rows = transitions(agent, "lab-pi2")
    assert [s for e, s, _ in rows if e == "enter"].count("copy_image") == 1
    # The copy was not cut short by a reboot (a rung in another state, a slow network boot on a
    # loaded machine, is not what this test is about).
    assert not [s for e, s, _ in rows if e in ("reboot", "power_cut") and s == "copy_image"], rows
    figure(f"agent killed at {killed_at} % of the copy; deploy ended deployed without a new copy")


# About two minutes of the states' timeouts (the copy's 108 s, the host key's 120 s), and the
# lab's start when this test comes first: more than pytest's 300 s on a loaded machine.
@pytest.mark.timeout(600)
async def test_failures_end_in_a_clear_error_and_lost_never_deployed(lab, tmp_path) -> None:
    """A corrupted image (checksum mismatch), a wrong community, a switch that does not answer,
    SSH refusing the agent's key, and a maintenance system showing a host key the agent does not
    trust (sshd with another key than `netboot_known_hosts`): each logs what is wrong and ends
    `lost` once its state's timeout passes, never `deployed`, with the driver's error as the
    action's last_error (GetActionState)."""
    # The image server holds a corrupted copy of what the agent's image_dir has (bit rot on a
    # mirror): same name, same size, one MiB flipped in the root file system.
    good_dir = tmp_path / "images"
    good_dir.mkdir()
    shutil.copy(Path(lab.image_dir) / "lab-test.img", good_dir / "corrupt.img")
    shutil.copy(Path(lab.image_dir) / "lab-test.img.zst", good_dir / "lab-test.img.zst")
    bad = Path(lab.image_dir) / "corrupt.img"
    shutil.copy(good_dir / "corrupt.img", bad)
    with bad.open("r+b") as handle:
        handle.seek(40 * MIB)
        handle.write(os.urandom(MIB))
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # bound and never read: requests go unanswered
    # Short timeouts, for a test: a copy is given up after 108 s instead of an hour. The switch
    # failures get 12 s in poe_off, time for a few SNMP timeouts (2 s each) to be logged.
    scale = 0.03
    config = AgentConfig(lab, tmp_path, name="fail", timeout_scale=scale, image_dir=str(good_dir))
    wrong_key_dir = tmp_path / "wrongkey"
    wrong_key_dir.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key_dir / "key")],
                   check=True)
    # Its nodes on the bad switches never reach SSH; its node on the lab's switch meets a
    # maintenance system whose host key is not the one this agent expects.
    switches = AgentConfig(
        lab, tmp_path, name="switches", timeout_scale=0.1,
        switches={"badcommunity": {"community": "not-the-community"},
                  "silent": {"address": f"127.0.0.1:{silent.getsockname()[1]}"}},
        netboot_known_hosts=str(wrong_key_dir / "key.pub"),
    )
    refused = AgentConfig(lab, tmp_path, name="refused", timeout_scale=scale,
                          ssh_key=str(wrong_key_dir / "key"))
    agents = {name: setting.agent().start()
              for name, setting in (("fail", config), ("switches", switches), ("refused", refused))}
    watches = {name: Watch(agent.address) for name, agent in agents.items()}
    # node -> (agent, its switch, its environment)
    nodes = {
        "corrupt": ("fail", lab.switch.name, "corrupt"),
        "community": ("switches", "badcommunity", "lab-test"),
        "silent": ("switches", "silent", "lab-test"),
        "refused": ("refused", lab.switch.name, "lab-test"),
        "hostkey": ("switches", lab.switch.name, "lab-test"),
    }
    try:
        await watches["fail"].put_environment("corrupt", "corrupt.img")
        for name in ("switches", "refused"):
            await watches[name].put_environment("lab-test", "lab-test.img.zst")
        for index, (node, (agent, switch, _)) in enumerate(nodes.items(), start=2):
            await watches[agent].add_node(node, {**lab.node_properties(lab.pis[index]), "switch": switch})
        began = time.monotonic()
        for node, (agent, _, environment) in nodes.items():
            await watches[agent].start(node, "deploy", environment)
        actions = await asyncio.gather(
            *(watches[agent].final(node, within=300) for node, (agent, _, _) in nodes.items()))
        finals = dict(zip(nodes, actions, strict=True))
        took = time.monotonic() - began
    finally:
        for watch in watches.values():
            await watch.close()
        for agent in agents.values():
            agent.terminate()
        silent.close()
        bad.unlink()
    seen = {node: watches[agent].seen[node] for node, (agent, _, _) in nodes.items()}
    for name, final in finals.items():
        assert final.state == "lost", (name, seen[name])
        assert "deployed" not in seen[name], (name, seen[name])
    # Where each one stopped, and what the log says about it.
    assert finals["corrupt"].state == "lost" and "copy_image" in seen["corrupt"]
    assert "partition" not in seen["corrupt"]
    failing, switching, refusing = (agents[name].log() for name in ("fail", "switches", "refused"))
    assert "corrupt: copy failed: checksum mismatch: the card holds sha256" in failing
    assert "corrupt: deploy lost: state copy_image timed out" in failing
    assert "community: switch badcommunity (" in switching and "no answer" in switching
    assert "community: deploy lost: state poe_off timed out" in switching
    assert "silent: switch silent (" in switching and "silent: deploy lost: state poe_off timed out" in switching
    # The communities never reach the log.
    assert "not-the-community" not in switching
    assert "the server refused the agent's key" in refusing
    assert "refused: deploy lost: state wait_netboot_ssh timed out" in refusing
    assert "the host key is not the maintenance system's" in switching
    # The same errors, as the actions' last_error: why each was lost, then the driver's error.
    errors = {node: final.last_error for node, final in finals.items()}
    assert errors["corrupt"].startswith("lost: state copy_image timed out"), errors
    assert "corrupt: copy failed: checksum mismatch: the card holds sha256" in errors["corrupt"]
    assert errors["community"].startswith("lost: state poe_off timed out"), errors
    assert "switch badcommunity (" in errors["community"] and "no answer" in errors["community"]
    assert "switch silent (" in errors["silent"]
    assert "the server refused the agent's key" in errors["refused"]
    assert errors["hostkey"].startswith("lost: state wait_netboot_ssh timed out"), errors
    assert "the host key is not the maintenance system's" in errors["hostkey"]
    assert all(len(error) <= 1024 and "\n" not in error for error in errors.values())
    assert not any("not-the-community" in error or lab.switch.community in error for error in errors.values())
    figure(f"failures: 5 actions lost in {took:.0f} s (timeout_scale {scale}; the switches' 0.1)")


async def test_eight_pis_deploy_at_once(lab, tmp_path, user_key) -> None:
    """All 8 lab Pis deployed by one agent at once, with the realistic timeouts; the agent's
    resident memory is sampled throughout."""
    _, public_key = user_key
    # The default 2 s off as well: with eight Pis booting on a busy machine, one turn of the
    # lab's firmware can outlast a 0.5 s cut, which the Pi then rides through (docs/lab.md), and
    # with realistic timeouts that costs minutes before the ladder power-cycles it again.
    agent = AgentConfig(lab, tmp_path, name="eight", timeout_scale=1.0, poe_off_seconds=2.0).agent().start()
    watch = Watch(agent.address)
    names = [f"lab-pi{pi.index}" for pi in lab.pis]
    try:
        for name, pi in zip(names, lab.pis, strict=True):
            await watch.add_node(name, lab.node_properties(pi))
        await watch.put_environment("lab-test", "lab-test.img.zst")
        at_start = rss_kib(agent.pid)
        began = time.monotonic()
        for name in names:
            await watch.start(name, "deploy", "lab-test", ssh_key=public_key)
        peak = at_start
        while True:
            peak = max(peak, rss_kib(agent.pid))
            states = await watch.states(*names)
            if all(action.final for action in states.values()):
                break
            assert time.monotonic() - began < 600, {n: a.state for n, a in states.items()}
            await asyncio.sleep(0.2)
        took = time.monotonic() - began
    finally:
        await watch.close()
        agent.terminate()
    assert {action.state for action in states.values()} == {"deployed"}, watch.seen
    figure(f"8 lab Pis deployed at once in {took:.1f} s; agent RSS {at_start / 1024:.1f} MB at "
           f"start, {peak / 1024:.1f} MB at peak")
