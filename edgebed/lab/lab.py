"""The hardware lab: a PoE switch, Pis as network namespaces with loop-device cards, an image
server, and the firmware that boots each Pi from the network or its card.

    async with Lab(Path("var/lab"), pis=2) as lab:
        print(lab.description.pis[0].ip)     # 10.213.<slot>.11
        ...                                  # drive it with SNMP and SSH, as a driver would

`up` always ends in a running lab or a LabError after cleaning what it had made; `down` (and
`clean(directory)`, used by `python -m edgebed.lab down`) removes everything of the lab in that
directory, also what a killed `up` left: namespaces and interfaces by their `ebl<slot>-` prefix,
processes by the EDGEBED_LAB_DIR marker in their environment, loop devices by their backing file
and mounts by their place, both inside the directory.

Layout of a lab directory:

    lab.json                 the description (LabDescription), written when the lab is ready
    state.json               {"slot": n, "pid": pid of `up`} while it runs or after it was killed
    keys/agent_ed25519[.pub] the agent's SSH key; keys/maintenance_host_ed25519 the netboot host key
    switch/                  snmpsim's data file, index cache, write cache and log
    images/                  the image server's folder: lab-test.img[.zst|.xz], SHA256SUMS
    tftp/netboot/            the maintenance system's boot files; tftp/<serial>/ ⇔ network boot
    pis/pi<N>/               card.img, serial, state.json, console.log, bin/ (reboot stand-ins)
    http.log                 the image server's log
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TypeVar

from edgebed.lab import net, servers, switch
from edgebed.lab.description import LabDescription, SwitchDescription
from edgebed.lab.firmware import RUN_ROOT, Firmware, FirmwareSettings, PiHardware
from edgebed.lab.image import build_test_image, write_boot_folder
from edgebed.lab.proc import LabError, child_env, kill_netns, marked_pids, pid_alive, run, run_sync

log = logging.getLogger("edgebed.lab")
T = TypeVar("T")

STATE_FILE = "state.json"
NETBOOT_HOSTNAME = "nfspi"
SSHD = "/usr/sbin/sshd"
_TOOLS = ("ip", "losetup", "partx", "unshare", "mount", "ssh-keygen", "mkfs.fat", "mcopy", "mdir",
          "mkfs.ext4", "sfdisk", "zstd", "xz", "openssl", "dd")


def missing_prerequisites(server_protocols: Sequence[str] = ()) -> list[str]:
    """What this machine lacks to run a lab (empty when nothing), with servers of these BMC
    protocols ("ipmi", "redfish"): one phrase per missing part."""
    missing = servers.missing_server_prerequisites(list(server_protocols))
    if not sys.platform.startswith("linux"):
        return ["Linux"]
    if os.geteuid() != 0:
        missing.append("root")
    missing += [f"the {tool} command" for tool in _TOOLS if shutil.which(tool) is None]
    if not Path(SSHD).exists():
        missing.append(f"{SSHD} (openssh-server)")
    if switch.responder_binary() is None:
        missing.append("snmpsim (pip install snmpsim pysmi)")
    if shutil.which("ip") is not None and os.geteuid() == 0:
        done = subprocess.run(["ip", "netns", "list"], capture_output=True, check=False)
        if done.returncode != 0:
            missing.append("network namespaces (ip netns)")
    return missing


def _free_port(kind: int, host: str) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _read_state(directory: Path) -> dict:
    try:
        return json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _is_lab_up(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"edgebed.lab" in cmdline or b"scripts/lab" in cmdline


def clean(directory: Path) -> list[str]:
    """Removes everything of the lab in `directory`, running or left by a killed `up`; returns
    one line per thing removed. Never touches another lab's slot or devices of other files.
    Only for root; errors of single steps are reported in the lines, not raised."""
    directory = directory.resolve()
    done: list[str] = []
    state = _read_state(directory)
    up_pid = state.get("pid")
    if isinstance(up_pid, int) and up_pid != os.getpid() and pid_alive(up_pid) and _is_lab_up(up_pid):
        # A running `up`: let it take itself down first.
        os.kill(up_pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while pid_alive(up_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(up_pid):
            os.kill(up_pid, signal.SIGKILL)
        done.append(f"stopped lab process {up_pid}")
    slot = state.get("slot")
    if isinstance(slot, int):
        for ns in net.netns_with_prefix(net.prefix(slot)):
            killed = kill_netns(ns)
            run_sync("ip", "netns", "delete", ns, check=False)
            done.append(f"deleted namespace {ns} ({killed} process(es) killed)")
    for pid in marked_pids(directory):
        try:
            os.kill(pid, signal.SIGKILL)
            done.append(f"killed process {pid}")
        except ProcessLookupError:
            pass
    if isinstance(slot, int):
        # Veths first (deleting one end deletes its peer), the bridge last.
        for link in sorted(net.links_with_prefix(net.prefix(slot)), key=lambda n: n.endswith("-br")):
            run_sync("ip", "link", "delete", link, check=False, timeout=10)
            done.append(f"deleted interface {link}")
        # The (empty, host-side) folders the Pis bound their run folders on.
        for folder in RUN_ROOT.glob(f"{net.prefix(slot)}*"):
            if folder.is_dir():
                try:
                    folder.rmdir()
                except OSError as error:
                    done.append(f"left {folder}: {error}")
    inside = str(directory) + "/"
    for mount_point in reversed(_mount_points()):
        if mount_point.startswith(inside):
            run_sync("umount", "-l", mount_point, check=False)
            done.append(f"unmounted {mount_point}")
    for device, backing in _loop_devices():
        if backing.startswith(inside):
            run_sync("partx", "-d", device, check=False)
            run_sync("losetup", "-d", device, check=False)
            done.append(f"detached {device} ({backing})")
    (directory / STATE_FILE).unlink(missing_ok=True)
    return done


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if len(fields) > 4:
            # mountinfo escapes space, tab, newline and backslash as octal.
            points.append(fields[4].encode().decode("unicode_escape"))
    return points


def _loop_devices() -> list[tuple[str, str]]:
    """(device, backing file) of every attached loop device."""
    out = run_sync("losetup", "--json", "--list", "--output", "NAME,BACK-FILE", check=False)
    if not out.strip():
        return []
    devices = []
    for item in json.loads(out).get("loopdevices", []):
        backing = (item.get("back-file") or "").removesuffix(" (deleted)")
        devices.append((item["name"], backing))
    return devices


class Lab:
    """A hardware lab in `directory` with `pis` Pis (0..99) and servers, one per item of
    `server_bmcs` ("ipmi" or "redfish": its BMC; edgebed.lab.servers).

    community: the switch's SNMP community (a wrong one gets no answer); boot_delay: seconds from
    power on to the boot decision; card_mib: size of each sparse card file (kept across runs, as a
    card keeps its contents); slot: 0..99 picks the addresses 10.213.<slot>.0/24 and the
    `ebl<slot>-` names (None: the lowest free one); poll_interval: seconds between the firmware's
    readings of the PoE ports; retry_seconds: a dark Pi's pause before it tries to boot again;
    redfish_delay: (least, most) whole seconds the Redfish emulator takes to apply a power change
    (sushy-tools: 1, 11).
    """

    def __init__(self, directory: Path, pis: int = 2, *, community: str = "private",
                 boot_delay: float = 1.0, card_mib: int = 256, slot: int | None = None,
                 poll_interval: float = 0.2, retry_seconds: float = 5.0,
                 server_bmcs: Sequence[str] = (), redfish_delay: tuple[int, int] = (1, 2)) -> None:
        if not 0 <= pis <= net.MAX_PIS or (pis == 0 and not server_bmcs):
            raise LabError(f"pis must be within 1..{net.MAX_PIS} (0 with servers), not {pis}")
        if len(server_bmcs) > net.MAX_SERVERS or set(server_bmcs) - {servers.IPMI, servers.REDFISH}:
            raise LabError(f"server_bmcs must be at most {net.MAX_SERVERS} of 'ipmi', 'redfish', "
                           f"got {list(server_bmcs)}")
        if not 0 <= redfish_delay[0] <= redfish_delay[1]:
            raise LabError(f"redfish_delay must be (least, most) seconds, got {redfish_delay}")
        self.directory = directory.resolve()
        if any(c in str(self.directory) for c in '"\n\\'):
            raise LabError(f"lab directory {self.directory!r}: no quotes, backslashes or newlines")
        self.pis = pis
        self.community = community
        self.boot_delay = boot_delay
        self.card_mib = card_mib
        self.wanted_slot = slot
        self.poll_interval = poll_interval
        self.retry_seconds = retry_seconds
        self.server_bmcs = tuple(server_bmcs)
        self.redfish_delay = redfish_delay
        self.timings: dict[str, float] = {}
        self._description: LabDescription | None = None
        self._slot: net.SlotLock | None = None
        self._snmpsim: asyncio.subprocess.Process | None = None
        self._http: asyncio.subprocess.Process | None = None
        self._firmware: list[Firmware] = []
        self._servers: list[servers.ServerFirmware] = []
        self._bmcs: list[asyncio.subprocess.Process] = []
        self._redfish: servers.RedfishReader | None = None
        self._poller: asyncio.Task[None] | None = None

    @property
    def description(self) -> LabDescription:
        if self._description is None:
            raise LabError("the lab is not up")
        return self._description

    async def __aenter__(self) -> Lab:
        await self.up()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.down()

    # -- up ------------------------------------------------------------------------------------

    async def up(self) -> LabDescription:
        """Brings the lab up; returns its description (also written to lab.json).

        Raises LabError (prerequisites missing, a slot busy, a tool failing) after cleaning up.
        """
        missing = missing_prerequisites(self.server_bmcs)
        if missing:
            raise LabError("the lab needs " + ", ".join(missing))
        start = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        running = _read_state(self.directory).get("pid")
        if isinstance(running, int) and running != os.getpid() and pid_alive(running) and _is_lab_up(running):
            raise LabError(f"a lab already runs in {self.directory} (pid {running}): "
                           "take it down first (python -m edgebed.lab down)")
        for line in await asyncio.to_thread(clean, self.directory):
            log.info("leftover of an earlier run: %s", line)
        self._slot = net.claim_slot(self.wanted_slot)
        (self.directory / STATE_FILE).write_text(json.dumps({"slot": self._slot.slot, "pid": os.getpid()}) + "\n")
        try:
            self._description = await self._up(self._slot.slot)
        except BaseException:
            await self.down()
            raise
        self.timings["up"] = time.monotonic() - start
        return self._description

    async def _timed(self, name: str, step: Awaitable[T]) -> T:
        """Awaits `step` and records its duration in seconds as timings[name]."""
        began = time.monotonic()
        result = await step
        self.timings[name] = time.monotonic() - began
        return result

    async def _up(self, slot: int) -> LabDescription:
        lab = self.directory
        keys = lab / "keys"
        keys.mkdir(exist_ok=True)
        agent_key = keys / "agent_ed25519"
        host_key = keys / "maintenance_host_ed25519"
        for key, comment in ((agent_key, "edgebed-lab-agent"), (host_key, f"root@{NETBOOT_HOSTNAME}")):
            if not key.exists():
                await run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key))

        image = await self._timed("images", asyncio.to_thread(build_test_image, lab / "images"))

        tftp_root = lab / "tftp"
        netboot_dir = tftp_root / "netboot"
        write_boot_folder(netboot_dir, f"maintenance system {NETBOOT_HOSTNAME}")

        # The switch powers Pis only: a lab of servers alone goes without (snmpsim's start is
        # most of a lab's).
        lab_switch: SwitchDescription | None = None
        if self.pis:
            snmp_port = _free_port(socket.SOCK_DGRAM, "127.0.0.1")
            switch_ports = max(8, self.pis)
            self._snmpsim = await self._timed(
                "switch", switch.start(lab / "switch", lab, self.community, switch_ports, snmp_port))
            lab_switch = SwitchDescription(
                name=switch.SWITCH_NAME, address=f"127.0.0.1:{snmp_port}", community=self.community,
                poe_oid=switch.POE_OID, port_offset=0, ports=switch_ports)

        async def network() -> None:
            await net.make_bridge(slot)
            for index in range(1, self.pis + 1):
                await net.make_pi_net(slot, index)
            for index in range(1, len(self.server_bmcs) + 1):
                await net.make_server_net(slot, index)
        await self._timed("network", network())

        pis = await self._timed("cards", self._cards(slot))

        http_port = _free_port(socket.SOCK_STREAM, net.host_ip(slot))
        self._http = await self._timed("image_server", self._image_server(slot, http_port))

        settings = FirmwareSettings(
            lab_dir=lab, tftp_root=tftp_root, netboot_hostname=NETBOOT_HOSTNAME,
            authorized_keys=Path(f"{agent_key}.pub").read_text(), maintenance_host_key=host_key,
            boot_delay=self.boot_delay, retry_seconds=self.retry_seconds)
        self._firmware = [Firmware(pi, settings) for pi in pis]
        lab_servers: tuple[servers.ServerHardware, ...] = ()
        server_fields: dict[str, str] = {}
        if self.server_bmcs:
            lab_servers = await self._timed("servers", self._servers_up(slot))
            netboot_script = tftp_root / "maintenance.ipxe"
            netboot_script.write_text(
                "#!ipxe\n# edgebed lab: the servers' maintenance system (the lab boots it when a\n"
                "# server's entry exists and its BMC's boot device is PXE)\n"
                f"kernel http://{net.host_ip(slot)}/maintenance/vmlinuz hostname={servers.SERVER_HOSTNAME}\n"
                f"initrd http://{net.host_ip(slot)}/maintenance/initrd.img\nboot\n")
            server_settings = FirmwareSettings(
                lab_dir=lab, tftp_root=tftp_root, netboot_hostname=servers.SERVER_HOSTNAME,
                authorized_keys=settings.authorized_keys, maintenance_host_key=host_key,
                boot_delay=self.boot_delay, retry_seconds=self.retry_seconds)
            self._servers = [servers.ServerFirmware(server, server_settings) for server in lab_servers]
            server_fields = {"netboot_script": str(netboot_script),
                             "server_hostname": servers.SERVER_HOSTNAME, "bmc_user": servers.BMC_USER,
                             "bmc_password_file": str(keys / "bmc-password")}
        description = LabDescription(
            directory=str(lab), slot=slot, bridge=net.bridge_name(slot), host_ip=net.host_ip(slot),
            switch=lab_switch,
            pis=tuple(pis), tftp_root=str(tftp_root), netboot_dir=str(netboot_dir),
            netboot_hostname=NETBOOT_HOSTNAME, image_dir=str(lab / "images"),
            image_url=f"http://{net.host_ip(slot)}:{http_port}/", ssh_key=str(agent_key),
            image=image, boot_delay=self.boot_delay, servers=lab_servers, **server_fields,
            netboot_host_key=f"{host_key}.pub")
        self._poller = asyncio.create_task(self._poll(description), name="lab firmware")
        description.save()
        return description

    async def _cards(self, slot: int) -> list[PiHardware]:
        pis = []
        serials: set[str] = set()
        for index in range(1, self.pis + 1):
            folder = self.directory / "pis" / f"pi{index}"
            folder.mkdir(parents=True, exist_ok=True)
            serial_file = folder / "serial"
            serial = serial_file.read_text().strip() if serial_file.exists() else ""
            while len(serial) != 8 or serial in serials:
                serial = secrets.token_hex(4)
                serial_file.write_text(serial + "\n")
            serials.add(serial)
            card = folder / "card.img"
            if not card.exists():
                with card.open("wb") as handle:
                    handle.truncate(self.card_mib * 1024 * 1024)  # sparse: a blank card
            device = (await run("losetup", "--find", "--show", str(card))).strip()
            pis.append(PiHardware(
                index=index, name=f"pi{index}", netns=net.pi_netns(slot, index),
                ip=net.pi_ip(slot, index), serial=serial, switch_port=index, card_file=str(card),
                sd_device=device, folder=str(folder)))
        return pis

    async def _servers_up(self, slot: int) -> tuple[servers.ServerHardware, ...]:
        """The servers' disks, folders and BMCs (ipmi_sim each, one Redfish emulator)."""
        keys = self.directory / "keys"
        password_file = keys / "bmc-password"
        password = password_file.read_text().strip() if password_file.exists() else ""
        if not 8 <= len(password) <= 16 or not password.isalnum():
            # IPMI 1.5 passwords (ipmi_sim's user table) are at most 16 bytes.
            password = secrets.token_hex(8)
            password_file.write_text(password + "\n")
            password_file.chmod(0o600)
        made: list[servers.ServerHardware] = []
        redfish_port = _free_port(socket.SOCK_STREAM, "127.0.0.1") if servers.REDFISH in self.server_bmcs else 0
        for index, protocol in enumerate(self.server_bmcs, start=1):
            folder = self.directory / "servers" / f"sv{index}"
            folder.mkdir(parents=True, exist_ok=True)
            disk = folder / "disk.img"
            if not disk.exists():
                with disk.open("wb") as handle:
                    handle.truncate(self.card_mib * 1024 * 1024)  # sparse: a blank disk
            device = (await run("losetup", "--find", "--show", str(disk))).strip()
            if protocol == servers.IPMI:
                ipmi_port = _free_port(socket.SOCK_DGRAM, "127.0.0.1")
                address, system = f"127.0.0.1:{ipmi_port}", ""
            else:
                # A UUID of its own per slot and server, as a Redfish system id.
                address = servers.redfish_url(redfish_port)
                system = f"{slot:04x}{index:04x}-eb1a-4b00-8000-00000000{index:04x}"
            made.append(servers.ServerHardware(
                index=index, name=f"sv{index}", netns=net.server_netns(slot, index),
                ip=net.server_ip(slot, index), mac=net.server_mac(slot, index), disk_file=str(disk),
                disk_device=device, folder=str(folder), bmc_protocol=protocol, bmc_address=address,
                bmc_system=system))
        for server in made:
            if server.bmc_protocol == servers.IPMI:
                port = int(server.bmc_address.rpartition(":")[2])
                self._bmcs.append(await servers.start_ipmi_sim(
                    Path(server.folder) / "bmc", self.directory, server.name, port, password))
        redfish = [server for server in made if server.bmc_protocol == servers.REDFISH]
        if redfish:
            self._bmcs.append(await servers.start_redfish(
                self.directory / "redfish", self.directory, redfish, redfish_port, password,
                self.redfish_delay))
            self._redfish = servers.RedfishReader(servers.redfish_url(redfish_port), password)
        return tuple(made)

    async def _image_server(self, slot: int, port: int) -> asyncio.subprocess.Process:
        images = self.directory / "images"
        http_log = (self.directory / "http.log").open("ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "http.server", str(port), "--bind", net.host_ip(slot),
                "--directory", str(images), stdin=subprocess.DEVNULL, stdout=http_log,
                stderr=subprocess.STDOUT, env=child_env(self.directory), start_new_session=True)
        finally:
            http_log.close()
        deadline = time.monotonic() + 15
        while True:
            try:
                _reader, writer = await asyncio.open_connection(net.host_ip(slot), port)
                writer.close()
                await writer.wait_closed()
                return proc
            except OSError:
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise LabError(f"the image server did not start: see {self.directory / 'http.log'}") from None
                await asyncio.sleep(0.1)

    async def _poll(self, description: LabDescription) -> None:
        reader = None
        if description.switch is not None:
            reader = switch.PoeReader(description.switch.address, description.switch.community,
                                      [pi.switch_port for pi in description.pis], description.switch.poe_oid)
        try:
            while True:
                values = await reader.read(timeout=1.0) if reader is not None else {}
                if values is None:
                    log.warning("the switch did not answer the firmware's poll")
                else:
                    for firmware in self._firmware:
                        await firmware.observe(values.get(firmware.pi.switch_port) == switch.POE_ON)
                for server in self._servers:
                    state = await asyncio.to_thread(servers.read_bmc, server.server, self._redfish)
                    if state is None:
                        log.warning("%s: the BMC did not answer the firmware's poll", server.server.name)
                    else:
                        await server.observe_bmc(*state)
                for firmware in [*self._firmware, *self._servers]:
                    await firmware.tick()
                await asyncio.sleep(self.poll_interval)
        finally:
            if reader is not None:
                reader.close()

    # -- down ----------------------------------------------------------------------------------

    async def down(self) -> None:
        """Stops everything `up` started and removes the namespaces, interfaces and loop devices
        (the card files and the rest of the directory stay). Safe to call more than once."""
        if self._poller is not None:
            self._poller.cancel()
            try:
                await self._poller
            except asyncio.CancelledError:
                pass
            self._poller = None
        for firmware in [*self._firmware, *self._servers]:
            await firmware.shutdown()
        self._firmware = []
        self._servers = []
        self._redfish = None
        for proc in (self._http, self._snmpsim, *self._bmcs):
            if proc is not None and proc.returncode is None:
                switch.stop(proc)
                await proc.wait()
        self._http = self._snmpsim = None
        self._bmcs = []
        if self._slot is not None:
            for line in await asyncio.to_thread(clean, self.directory):
                log.debug("down: %s", line)
            self._slot.release()
            self._slot = None
        self._description = None


def status(directory: Path) -> list[str]:
    """Lines describing the lab in `directory`: whether it runs, and each Pi's power and system."""
    directory = directory.resolve()
    try:
        description = LabDescription.load(directory)
    except FileNotFoundError:
        return [f"no lab was brought up in {directory}"]
    state = _read_state(directory)
    pid = state.get("pid")
    running = isinstance(pid, int) and pid_alive(pid)
    lines = [f"lab {directory}: {f'running (pid {pid})' if running else 'not running'}",
             (f"switch {description.switch.address} community {description.switch.community}"
              if description.switch is not None else "no switch (no Pis)"),
             f"image server {description.image_url}"]
    for pi in description.pis:
        try:
            pi_state = json.loads((Path(pi.folder) / "state.json").read_text())
        except (OSError, ValueError):
            pi_state = {}
        netboot = (Path(description.tftp_root) / pi.serial).exists()
        lines.append(
            f"{pi.name} {pi.ip} serial {pi.serial} port {pi.switch_port} card {pi.sd_device}: "
            f"power {pi_state.get('power', '?')}, system {pi_state.get('system', '?')}"
            f"{', netboot folder present' if netboot else ''}"
            f"{' (' + pi_state['detail'] + ')' if pi_state.get('detail') else ''}")
    for server in description.servers:
        try:
            server_state = json.loads((Path(server.folder) / "state.json").read_text())
        except (OSError, ValueError):
            server_state = {}
        entry = (Path(description.tftp_root) / server.pxe_entry_name).exists()
        lines.append(
            f"{server.name} {server.ip} mac {server.mac} {server.bmc_protocol} BMC {server.bmc_address}"
            f"{' system ' + server.bmc_system if server.bmc_system else ''} disk {server.disk_device}: "
            f"power {server_state.get('power', '?')}, system {server_state.get('system', '?')}"
            f"{', PXE entry present' if entry else ''}")
    return lines
