"""The real node (server) driver end to end, in the hardware lab (docs/lab.md): real agent
processes of type `node` with driver = "real" drive two lab servers, one behind an ipmi_sim BMC
and one behind the sushy-tools Redfish emulator, through PXE entries, sshd and loop-device disks.

One lab (the two servers, no Pi) serves the module; each test leaves the servers powered off.
State timeouts are shortened with `[real] timeout_scale`. The lab's Redfish emulator applies a
power change 0-2 s after it is asked (sushy-tools' own draw is 1-11 s), so that the driver's
polling is exercised. Figures are printed as `FIGURE ...` lines (pytest -s shows them).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from edgebed.agent.settings import load_settings
from edgebed.lab.description import LabDescription
from edgebed.lab.servers import RedfishReader, ServerHardware, ipmi_state
from edgebed.nodetypes.real.config import ServerRealConfig
from tests.agent.real.lab import Watch
from tests.agent.real.peers import MIB
from tests.agent.real.server_lab import ServerAgentConfig, server_lab_process
from tests.agent.real.test_lab import _slow_server, card_table, figure, ssh_run, transitions

pytestmark = [pytest.mark.slow, pytest.mark.lab]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with server_lab_process(tmp_path_factory.mktemp("serverlab") / "lab") as (description, took):
        figure(f"server lab up in {took:.1f} s (1 IPMI server, 1 Redfish server)")
        yield description


def by_protocol(lab: LabDescription, protocol: str) -> ServerHardware:
    (server,) = [server for server in lab.servers if server.bmc_protocol == protocol]
    return server


def bmc_state(lab: LabDescription, server: ServerHardware) -> tuple[bool, str]:
    """(powered, boot device) as the server's BMC has them, read beside the driver."""
    if server.bmc_protocol == "ipmi":
        return ipmi_state(Path(server.folder) / "bmc")
    password = Path(lab.bmc_password_file).read_text().strip()
    return RedfishReader(server.bmc_address, password).read(server.bmc_system)


def test_the_labs_node_agent_configuration_loads(lab, tmp_path) -> None:
    """`python -m edgebed.lab agent-config --servers` gives a node agent the lab's servers."""
    path = tmp_path / "agent.toml"
    text = lab.server_agent_config()
    path.write_text(text)
    settings = load_settings(path, env={"EDGEBED_TOKEN": "a-token-for-the-lab-test-0123456789"})
    assert settings.type == "node" and isinstance(settings.real, ServerRealConfig)
    assert settings.real.bmc_credentials[0].password_file == lab.bmc_password_file
    for server in lab.servers:
        assert f"# lab-{server.name} " in text
    assert lab.switch is None  # no Pis, no switch


async def test_ipmi_and_redfish_servers_deploy_reboot_and_destroy(lab, tmp_path, user_key) -> None:
    """Both servers through one agent, at once: deploy (PXE entry and boot device, the
    maintenance system writes the disk, then disk boot), the user logs in; reboot; destroy
    (disk wiped, power off, next boot the maintenance system)."""
    key_path, public_key = user_key
    agent = ServerAgentConfig(lab, tmp_path, name="e2e").agent().start()
    nodes = {f"lab-{server.bmc_protocol}": server for server in lab.servers}
    watch = Watch(agent.address)
    seconds: dict[str, float] = {}
    try:
        for name, server in nodes.items():
            await watch.add_node(name, lab.server_properties(server))
        await watch.put_environment("lab-test", "lab-test.img.zst")

        async def run(process: str, within: float, **properties: str) -> dict[str, str]:
            began = time.monotonic()
            for name in nodes:
                await watch.start(name, process, "lab-test" if process == "deploy" else "",
                                  **{key: value.replace("NODE", name) for key, value in properties.items()})
            finals = await asyncio.gather(*(watch.final(name, within=within) for name in nodes))
            seconds[process] = time.monotonic() - began
            return {name: action.state for name, action in zip(nodes, finals, strict=True)}

        deployed = await run("deploy", 240, ssh_key=public_key, hostname="exp-NODE", partition_size="full")
        assert deployed == {name: "deployed" for name in nodes}, (watch.seen, agent.log()[-4000:])
        login = dict(username="pi", client_keys=[str(key_path)])
        for name, server in nodes.items():
            assert (await ssh_run(server.ip, "hostname; id -un", **login)).split() == [f"exp-{name}", "pi"]
            # The disk's system booted: boot device back to the disk, the PXE entry gone.
            powered, boot = bmc_state(lab, server)
            assert powered and boot.lower() in ("default", "hdd"), (name, boot)
            assert not (Path(lab.tftp_root) / server.pxe_entry_name).exists()
            last = card_table(server.disk_device).splitlines()[-1].split()
            assert (int(last[1]) + int(last[2])) * 512 == 256 * MIB  # partition_size full

        rebooted = await run("reboot", 120)
        assert rebooted == {name: "rebooted" for name in nodes}, watch.seen
        for name, server in nodes.items():
            assert (await ssh_run(server.ip, "hostname", **login)).strip() == f"exp-{name}"

        destroyed = await run("destroy", 240)
        assert destroyed == {name: "destroyed" for name in nodes}, watch.seen
        for name, server in nodes.items():
            assert card_table(server.disk_device) == ""
            assert subprocess.run(["wipefs", "--no-act", "--noheadings", server.disk_device],
                                  capture_output=True, text=True).stdout == ""
            powered, boot = bmc_state(lab, server)
            assert not powered and boot.lower() in ("pxe", "network"), (name, boot)
            entry = Path(lab.tftp_root) / server.pxe_entry_name
            assert entry.read_text().startswith("#!ipxe\n# edgebed boot entry for " + name)
    finally:
        await watch.close()
        agent.terminate()
    logs = agent.log()
    # The BMC password never reaches the log.
    assert Path(lab.bmc_password_file).read_text().strip() not in logs
    for name in nodes:
        rows = transitions(agent, name)
        assert [state for event, state, _ in rows if event == "enter"][-1] == "destroyed"
        assert not [state for event, state, _ in rows if event in ("reboot", "power_cut")], rows
    figure(f"servers (IPMI and Redfish at once): deploy {seconds['deploy']:.1f} s, reboot "
           f"{seconds['reboot']:.1f} s, destroy {seconds['destroy']:.1f} s (64 MiB image, .zst; "
           "timeout_scale 0.1; Redfish power changes applied 0-2 s late)")


async def test_a_wrong_bmc_password_is_a_clear_error_and_never_a_final_success(lab, tmp_path) -> None:
    """Credentials with a wrong password for the nodes named wrongpw-*: each deploy's first BMC
    call is refused, the error says so in one line naming the node, the BMC and the user, and
    the action ends `lost` once its state's timeout passes, never `deployed`."""
    entries = {server.name: Path(lab.tftp_root) / server.pxe_entry_name for server in lab.servers}
    before = {name: path.read_text() if path.exists() else None for name, path in entries.items()}
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    scale = 0.02  # bootdev_pxe is given up after 2.4 s instead of 120 s
    agent = ServerAgentConfig(lab, tmp_path, name="wrongpw", timeout_scale=scale,
                              credentials=[("wrongpw-*", lab.bmc_user, str(wrong))]).agent().start()
    nodes = {f"wrongpw-{server.bmc_protocol}": server for server in lab.servers}
    watch = Watch(agent.address)
    try:
        for name, server in nodes.items():
            await watch.add_node(name, lab.server_properties(server))
        await watch.put_environment("lab-test", "lab-test.img.zst")
        began = time.monotonic()
        for name in nodes:
            await watch.start(name, "deploy", "lab-test")
        finals = dict(zip(nodes, await asyncio.gather(*(watch.final(name, within=120) for name in nodes)),
                          strict=True))
        took = time.monotonic() - began
    finally:
        await watch.close()
        agent.terminate()
    logs = agent.log()
    for name, final in finals.items():
        assert final.state == "lost", (name, watch.seen[name])
        assert watch.seen[name] == ["bootdev_pxe", "lost"], watch.seen[name]
        # The action says why (ActionState.last_error, from the step's error), and so does the log.
        assert "refused" in final.last_error and "not-the-password" not in final.last_error, final.last_error
    assert ("wrongpw-ipmi: ipmi BMC 127.0.0.1:" in logs
            and "boot device PXE: refused the password of user 'admin' (wrong password?)" in logs), logs[-3000:]
    assert ("wrongpw-redfish: redfish BMC http://127.0.0.1:" in logs
            and "refused user 'admin': wrong user name or password? (HTTP 401/403)" in logs), logs[-3000:]
    assert "not-the-password" not in logs
    # Nothing was switched: the BMCs refused every request, and the PXE entries are as they were.
    for server in lab.servers:
        assert bmc_state(lab, server)[0] is False
    assert {name: path.read_text() if path.exists() else None for name, path in entries.items()} == before
    line = next(line for line in logs.splitlines() if "refused the password" in line)
    figure(f"wrong BMC password: both deploys lost in {took:.1f} s (timeout_scale {scale}); the "
           f"error: {line[line.index('wrongpw-ipmi: ipmi BMC'):].removesuffix(' (trying again)')}")


async def test_an_agent_killed_during_the_disk_write_finds_it_again_and_deploys(lab, tmp_path) -> None:
    """SIGKILL in the middle of the image write to the IPMI server's disk: the write runs on in
    the maintenance system; the restarted agent finds the same job, waits for it, and the
    deploy ends deployed."""
    server = by_protocol(lab, "ipmi")
    http, url = _slow_server(lab.image_dir, lab.host_ip, rate=8 * MIB)
    agent = ServerAgentConfig(lab, tmp_path, name="kill", image_url=url).agent().start()
    try:
        watch = Watch(agent.address)
        await watch.add_node("lab-kill", lab.server_properties(server))
        # Raw: 64 MiB at 8 MiB/s, about 8 s of write.
        await watch.put_environment("lab-raw", "lab-test.img")
        await watch.start("lab-kill", "deploy", "lab-raw")
        writing = await watch.until(
            "lab-kill", lambda a: a.state == "write_image" and a.progress >= 10, within=120)
        await watch.close()
        agent.kill()
        killed_at = writing.progress

        agent.start()
        watch = Watch(agent.address)
        try:
            deployed = await watch.final("lab-kill", within=180)
        finally:
            await watch.close()
            agent.terminate()
    finally:
        agent.stop()
        http.terminate()
        http.wait()
        # Left off, as the module's tests leave the servers (a destroy would take seconds).
        password = Path(lab.bmc_password_file).read_text().strip()
        host, _, port = server.bmc_address.rpartition(":")
        subprocess.run(["ipmitool", "-I", "lanplus", "-C", "3", "-H", host, "-p", port, "-U", lab.bmc_user,
                        "-E", "chassis", "power", "off"], env={"PATH": "/usr/bin:/bin", "IPMI_PASSWORD": password},
                       capture_output=True, check=False, timeout=30)
    logs = agent.log()
    assert deployed.state == "deployed", logs[-3000:]
    assert logs.count("copying lab-test.img") == 1, logs[-3000:]
    assert "resumed 1 unfinished action" in logs
    rows = transitions(agent, "lab-kill", "deploy")
    assert [s for e, s, _ in rows if e == "enter"].count("write_image") == 1
    # The write was not cut short by a reboot: the restarted agent waited for the same job. (A
    # rung elsewhere, such as a slow network boot on a loaded machine before the write, is not
    # what this test is about.)
    assert not [s for e, s, _ in rows if e in ("reboot", "power_cut") and s == "write_image"], rows
    figure(f"server agent killed at {killed_at} % of the disk write; deploy ended deployed without a new write")
