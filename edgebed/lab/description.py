"""What a running lab looks like from outside: `<lab>/lab.json` and the agent config it implies.

A driver, a test or a user reads the description (`LabDescription.load(directory)`) and needs
nothing else: the switch's address and community, each Pi's address, serial, PoE port and card
device, the TFTP root, the netboot folder, the image server and the agent's SSH key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from edgebed.lab.firmware import PiHardware
from edgebed.lab.image import TestImage
from edgebed.lab.proc import LabError
from edgebed.lab.servers import ServerHardware

DESCRIPTION_FILE = "lab.json"
PI_MODEL = "Raspberry Pi 4 Model B"


@dataclass(frozen=True)
class SwitchDescription:
    """The PoE switch: SNMP v2c at `address` ("127.0.0.1:<udp port>"); port N's power is the
    INTEGER at `<poe_oid>.<N + port_offset>` (1 on, 2 off); `ports` ports exist."""

    name: str
    address: str
    community: str
    poe_oid: str
    port_offset: int
    ports: int


@dataclass(frozen=True)
class LabDescription:
    directory: str
    slot: int
    bridge: str
    host_ip: str
    # None in a lab without Pis (servers only).
    switch: SwitchDescription | None
    pis: tuple[PiHardware, ...]
    tftp_root: str
    netboot_dir: str
    netboot_hostname: str
    image_dir: str
    image_url: str  # base URL ending in "/": image_url + file name
    ssh_key: str  # the agent's private key (ed25519); its public key is ssh_key + ".pub"
    image: TestImage
    boot_delay: float
    model: str = PI_MODEL
    # Servers (edgebed.lab.servers): the iPXE script their entries hold, their maintenance
    # system's host name, and the BMCs' one user and its password file.
    servers: tuple[ServerHardware, ...] = ()
    netboot_script: str = ""
    server_hostname: str = ""
    bmc_user: str = ""
    bmc_password_file: str = ""
    # The maintenance system's host public key (shared by every lab Pi and server), for the agent's
    # `netboot_known_hosts`; '' in a lab.json from before it was recorded.
    netboot_host_key: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> LabDescription:
        data = dict(data)
        data["switch"] = SwitchDescription(**data["switch"]) if data.get("switch") else None
        data["pis"] = tuple(PiHardware(**pi) for pi in data["pis"])
        data["servers"] = tuple(ServerHardware(**server) for server in data.get("servers", ()))
        data["image"] = TestImage.from_json(dict(data["image"]))
        return cls(**data)

    def save(self) -> None:
        path = Path(self.directory) / DESCRIPTION_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, directory: Path) -> LabDescription:
        """Raises FileNotFoundError when no lab was brought up in `directory`."""
        return cls.from_json(json.loads((directory / DESCRIPTION_FILE).read_text()))

    def image_url_for(self, compression: str = "zst") -> str:
        """URL of the test image file with that compression ("" raw, "zst", "xz")."""
        (file,) = [f for f in self.image.files if f.compression == compression]
        return self.image_url + file.file

    def node_properties(self, pi: PiHardware) -> dict[str, str]:
        """The AddNode properties of a raspberry node for this Pi."""
        if self.switch is None:
            raise LabError("this lab has no Pis")
        return {"ip": pi.ip, "serial": pi.serial, "switch": self.switch.name,
                "switch_port": str(pi.switch_port), "sd_device": pi.sd_device, "model": self.model}

    def server_properties(self, server: ServerHardware) -> dict[str, str]:
        """The AddNode properties of a node (server) for this lab server."""
        properties = {"ip": server.ip, "mac": server.mac, "bmc_protocol": server.bmc_protocol,
                      "bmc_address": server.bmc_address, "disk_device": server.disk_device}
        if server.bmc_system:
            properties["bmc_system"] = server.bmc_system
        return properties

    def server_agent_config(self) -> str:
        """A TOML configuration of a node agent with driver = "real" for this lab's servers, then
        each server's AddNode properties as comments (`# <node name> <JSON object>`)."""
        def q(text: str) -> str:
            return json.dumps(text)

        lab = Path(self.directory)
        lines = [
            f"# edgebed node agent for the servers of the hardware lab in {self.directory}",
            'name = "labsv"',
            'type = "node"',
            'listen = "127.0.0.1:50052"',
            f"token = {q('lab-token-change-me')}",
            f"database = {q(str(lab / 'agent-servers.sqlite'))}",
            'driver = "real"',
            "",
            "[real]",
            f"ssh_key = {q(self.ssh_key)}",
            f"tftp_root = {q(self.tftp_root)}",
            f"netboot_script = {q(self.netboot_script)}",
            f"netboot_hostname = {q(self.server_hostname)}",
            f"netboot_known_hosts = {q(self.netboot_host_key)}",
            f"image_dir = {q(self.image_dir)}",
            f"image_url = {q(self.image_url)}",
            'wipe = "quick"',
            "power_off_seconds = 1.0",
            "",
            "[[real.bmc_credentials]]",
            'match = "*"',
            f"user = {q(self.bmc_user)}",
            f"password_file = {q(self.bmc_password_file)}",
            "",
            "# Nodes (AddNode properties):",
        ]
        for server in self.servers:
            lines.append(f"# lab-{server.name} {json.dumps(self.server_properties(server))}")
        return "\n".join(lines) + "\n"

    def agent_config(self) -> str:
        """A TOML agent configuration with driver = "real" for this lab, then each Pi's AddNode
        properties as comments (`# <node name> <JSON object>`, one line per Pi)."""
        def q(text: str) -> str:
            return json.dumps(text)  # a TOML basic string is a JSON string for these values

        if self.switch is None:
            raise LabError("this lab has no Pis: agent-config --servers gives its node agent")
        lab = Path(self.directory)
        lines = [
            f"# edgebed agent for the hardware lab in {self.directory}",
            'name = "lab"',
            'type = "raspberry"',
            'listen = "127.0.0.1:50051"',
            f"token = {q('lab-token-change-me')}",
            f"database = {q(str(lab / 'agent.sqlite'))}",
            'driver = "real"',
            "",
            "[real]",
            f"ssh_key = {q(self.ssh_key)}",
            f"tftp_root = {q(self.tftp_root)}",
            f"netboot_dir = {q(self.netboot_dir)}",
            f"netboot_hostname = {q(self.netboot_hostname)}",
            f"netboot_known_hosts = {q(self.netboot_host_key)}",
            f"image_dir = {q(self.image_dir)}",
            f"image_url = {q(self.image_url)}",
            'serve_images = ""  # the lab\'s image server already serves image_dir at image_url',
            'wipe = "quick"',
            "",
            "[[real.switches]]",
            f"name = {q(self.switch.name)}",
            f"address = {q(self.switch.address)}",
            f"community = {q(self.switch.community)}",
            f"poe_oid = {q(self.switch.poe_oid)}",
            f"port_offset = {self.switch.port_offset}",
            "",
            "# Nodes (AddNode properties):",
        ]
        for pi in self.pis:
            lines.append(f"# lab-{pi.name} {json.dumps(self.node_properties(pi))}")
        return "\n".join(lines) + "\n"
