"""The `[real]` settings of a raspberry agent: one line naming the key and the file for every
mistake, whether the file shows it (types, shapes) or only the machine does (a key that is not
there, a folder missing, an address taken); communities never shown; AddNode refusing a node the
driver could not drive."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import grpc
import pytest

from edgebed.agent.app import open_agent, real_clock, start_agent
from edgebed.agent.clock import FastClock, SystemClock
from edgebed.agent.settings import load_settings
from edgebed.config import ConfigError
from edgebed.nodetypes.real.boards import SensorRealConfig
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from tests.agent.conftest import AUTH, TOKEN
from tests.agent.real.peers import free_port, make_key
from tests.processes import REPO

COMMUNITY = "s3cret-community"


@pytest.fixture
def machine(tmp_path) -> dict[str, Path]:
    """What a [real] table points at, present and usable."""
    key = make_key(tmp_path / "keys")
    host = make_key(tmp_path / "keys", "netboot_host_ed25519")
    netboot = tmp_path / "tftp" / "netboot"
    netboot.mkdir(parents=True)
    (netboot / "start4.elf").write_text("firmware")
    images = tmp_path / "images"
    images.mkdir()
    return {"ssh_key": key.private, "netboot_known_hosts": Path(f"{host.private}.pub"),
            "tftp_root": tmp_path / "tftp", "netboot_dir": netboot,
            "image_dir": images, "database": tmp_path / "agent.sqlite"}


def real_toml(machine: dict[str, Path], *, real: dict | None = None, switches: list[dict] | None = None,
              top: dict | None = None, drop: tuple[str, ...] = ()) -> str:
    def value(item: object) -> str:
        if isinstance(item, str):
            return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return str(item).lower() if isinstance(item, bool) else str(item)

    head = {"name": "rpi", "type": "raspberry", "listen": "127.0.0.1:0", "token": TOKEN,
            "database": str(machine["database"]), "driver": "real", **(top or {})}
    table = {
        "ssh_key": str(machine["ssh_key"]), "tftp_root": str(machine["tftp_root"]),
        "netboot_dir": str(machine["netboot_dir"]), "netboot_hostname": "nfspi",
        "netboot_known_hosts": str(machine["netboot_known_hosts"]),
        "image_dir": str(machine["image_dir"]), "image_url": "http://10.0.0.1:8081",
        **(real or {}),
    }
    if switches is None:
        switches = [{"name": "sw1", "address": "127.0.0.1:161", "community": COMMUNITY}]
    lines = [f"{k} = {value(v)}" for k, v in head.items() if k not in drop]
    lines.append("[real]")
    lines += [f"{k} = {value(v)}" for k, v in table.items() if f"real.{k}" not in drop]
    for switch in switches:
        lines.append("[[real.switches]]")
        lines += [f"{k} = {value(v)}" for k, v in switch.items()]
    return "\n".join(lines) + "\n"


def load(tmp_path: Path, text: str, env: dict | None = None):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return load_settings(path, env=env or {})


def problem(tmp_path: Path, text: str, env: dict | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, env)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "agent.toml")) and "\n" not in message
    return message


def test_a_complete_table_loads_with_its_defaults(tmp_path, machine) -> None:
    settings = load(tmp_path, real_toml(machine))
    real = settings.real
    assert real is not None and settings.driver == "real"
    assert (real.wipe, real.serve_images, real.work_dir, real.ssh_port) == ("quick", "", "/tmp/edgebed", 22)
    assert real.poe_off_seconds == 2.0 and real.timeout_scale == 1.0
    (switch,) = real.switches
    assert (switch.name, switch.host, switch.port, switch.poe_oid, switch.port_offset) == (
        "sw1", "127.0.0.1", 161, "1.3.6.1.2.1.105.1.1.1.3.1", 0)
    assert switch.oid(3) == "1.3.6.1.2.1.105.1.1.1.3.1.3"
    assert COMMUNITY not in repr(settings) and "sw1" in repr(settings)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (dict(drop=("real.ssh_key",)), "key 'real.ssh_key' is missing"),
        (dict(drop=("real.netboot_hostname",)), "key 'real.netboot_hostname' is missing"),
        (dict(real={"ssh_key": "relative/key"}), "key 'real.ssh_key' must be an absolute path"),
        (dict(real={"wipe": "thorough"}), "key 'real.wipe' must be one of 'quick', 'full'"),
        (dict(real={"serve_images": "8081"}), "key 'real.serve_images' must be 'host:port'"),
        (dict(real={"image_url": "ftp://x/images"}), "key 'real.image_url' must be an http:// or https:// URL"),
        (dict(real={"netboot_hostname": "nfs pi"}), "key 'real.netboot_hostname' must be a host name"),
        (dict(real={"timeout_scale": 0}), "key 'real.timeout_scale' must be between"),
        (dict(real={"poe_off_seconds": -1}), "key 'real.poe_off_seconds' must be between"),
        (dict(real={"colour": "red"}), "unknown key 'real.colour'"),
        (dict(switches=[]), "key 'real.switches' is missing: at least 1 [[real.switches]] table needed"),
        (dict(switches=[{"name": "sw1", "address": "10.0.0.2"}]), "key 'real.switches[1].community' is missing"),
        (dict(switches=[{"name": "sw1", "address": "10.0.0.2", "community": "c"},
                        {"name": "sw2", "address": "10.0.0.3:99999", "community": "c"}]),
         "key 'real.switches[2].address' must be 'host' or 'host:port'"),
        (dict(switches=[{"name": "sw1", "address": "h", "community": "c", "poe_oid": "peth.3"}]),
         "key 'real.switches[1].poe_oid' must be a numeric OID"),
        (dict(switches=[{"name": "sw1", "address": "h", "community": "c"},
                        {"name": "sw1", "address": "h2", "community": "c"}]),
         "key 'real.switches[2].name' is 'sw1', which an earlier switch already has"),
        (dict(switches=[{"name": "sw1", "address": "h", "community": "c", "port": 1}]),
         "unknown key 'real.switches[1].port'"),
        # A node agent's [real] has the server driver's keys, not a Pi's; a sensor agent's too.
        (dict(top={"type": "node"}), "unknown key 'real.netboot_dir'"),
        (dict(top={"type": "sensor"}), "unknown key 'real.ssh_key'"),
    ],
)
def test_a_bad_real_key_is_named_with_the_file(tmp_path, machine, change, expected) -> None:
    assert expected in problem(tmp_path, real_toml(machine, **change))


def test_driver_real_without_a_real_table_names_its_first_key(tmp_path, machine) -> None:
    head = (f'name = "rpi"\ntype = "raspberry"\nlisten = "127.0.0.1:0"\ntoken = "{TOKEN}"\n'
            f'database = "{machine["database"]}"\n')
    assert "key 'real.ssh_key' is missing" in problem(tmp_path, head + 'driver = "real"\n')
    # A sim agent needs none.
    assert load(tmp_path, head + 'driver = "sim"\n').real is None


def test_a_community_is_never_repeated_in_an_error(tmp_path, machine) -> None:
    message = problem(tmp_path, real_toml(machine, switches=[
        {"name": "sw1", "address": "h", "community": 123456789}]))
    assert "key 'real.switches[1].community' must be a string" in message and "123456789" not in message


def test_environment_variables_override_real_keys_and_a_switchs_community(tmp_path, machine) -> None:
    settings = load(tmp_path, real_toml(machine), env={
        "EDGEBED_REAL_WIPE": "full", "EDGEBED_REAL_TIMEOUT_SCALE": "0.5",
        "EDGEBED_REAL_SWITCHES_1_COMMUNITY": "from-the-environment"})
    assert settings.real is not None and settings.real.wipe == "full" and settings.real.timeout_scale == 0.5
    assert settings.real.switches[0].community == "from-the-environment"
    message = problem(tmp_path, real_toml(machine), env={"EDGEBED_REAL_SWITCHES_1_PORT_OFFSET": "x"})
    assert "(overridden by EDGEBED_REAL_SWITCHES_1_PORT_OFFSET)" in message


# What only the machine can tell, at start-up.


async def start_problem(tmp_path: Path, text: str) -> str:
    settings = load(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        await start_agent(settings)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "agent.toml")) and "\n" not in message
    return message


async def test_a_missing_or_unusable_ssh_key_stops_start_up(tmp_path, machine) -> None:
    message = await start_problem(tmp_path, real_toml(machine, real={"ssh_key": str(tmp_path / "nope")}))
    assert "key 'real.ssh_key' is" in message and "cannot be read: No such file" in message
    not_a_key = tmp_path / "not-a-key"
    not_a_key.write_text("hello\n")
    message = await start_problem(tmp_path, real_toml(machine, real={"ssh_key": str(not_a_key)}))
    assert "key 'real.ssh_key'" in message and "is not a usable unencrypted private key" in message
    encrypted = tmp_path / "encrypted"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(encrypted)], check=True)
    message = await start_problem(tmp_path, real_toml(machine, real={"ssh_key": str(encrypted)}))
    assert "key 'real.ssh_key'" in message and "not a usable unencrypted private key" in message


async def test_missing_or_unusable_netboot_host_keys_stop_start_up(tmp_path, machine) -> None:
    assert "key 'real.netboot_known_hosts' is missing" in problem(
        tmp_path, real_toml(machine, drop=("real.netboot_known_hosts",)))
    message = await start_problem(tmp_path, real_toml(machine, real={"netboot_known_hosts": str(tmp_path / "nope")}))
    assert "key 'real.netboot_known_hosts' is" in message and "cannot be read: No such file" in message
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("# nothing yet\n")
    message = await start_problem(tmp_path, real_toml(machine, real={"netboot_known_hosts": str(empty)}))
    assert "key 'real.netboot_known_hosts'" in message and "holds no public key" in message
    bad = tmp_path / "bad_known_hosts"
    bad.write_text("nfspi ssh-ed25519 AAAAnot-base64\n")
    message = await start_problem(tmp_path, real_toml(machine, real={"netboot_known_hosts": str(bad)}))
    assert "key 'real.netboot_known_hosts'" in message and "line 1: not a usable public key" in message
    # A known_hosts line (host patterns first) and a .pub line both do.
    public = Path(machine["netboot_known_hosts"]).read_text().split()
    good = tmp_path / "known_hosts"
    good.write_text(f"# the NFS root's keys\n10.0.0.0/8,nfspi {public[0]} {public[1]}\n{' '.join(public)}\n")
    async with open_agent(load(tmp_path, real_toml(machine, real={"netboot_known_hosts": str(good)}))):
        pass


async def test_missing_folders_stop_start_up(tmp_path, machine) -> None:
    message = await start_problem(tmp_path, real_toml(machine, real={"tftp_root": str(tmp_path / "no-tftp")}))
    assert "key 'real.tftp_root' is" in message and "which is not a folder" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    message = await start_problem(tmp_path, real_toml(machine, real={"netboot_dir": str(empty)}))
    assert "key 'real.netboot_dir'" in message and "holds no boot files" in message
    message = await start_problem(tmp_path, real_toml(machine, real={"image_dir": str(tmp_path / "none")}))
    assert "key 'real.image_dir'" in message


async def test_serve_images_on_an_address_in_use_stops_start_up(tmp_path, machine) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        message = await start_problem(tmp_path, real_toml(machine, real={"serve_images": address}))
    assert f"key 'real.serve_images' is '{address}', where the agent cannot listen" in message
    # The database lock and file were released: the same settings start once the port is free.
    async with open_agent(load(tmp_path, real_toml(machine, real={"serve_images": f"127.0.0.1:{free_port()}"}))):
        pass


def test_timeout_scale_runs_the_state_timeouts_faster_or_slower() -> None:
    assert isinstance(real_clock(1.0), SystemClock)
    fast = real_clock(0.05)
    assert isinstance(fast, FastClock) and fast.speed == pytest.approx(20)
    assert real_clock(2.0).speed == pytest.approx(0.5)


# AddNode.


@pytest.fixture
async def stub(tmp_path, machine):
    settings = load(tmp_path, real_toml(machine, switches=[
        {"name": "sw1", "address": "127.0.0.1:161", "community": COMMUNITY},
        {"name": "sw2", "address": "127.0.0.1:162", "community": COMMUNITY}]))
    async with open_agent(settings) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            yield agent_pb2_grpc.AgentStub(channel)


PI = {"ip": "10.0.0.11", "serial": "1a2b3c4d", "switch": "sw2", "switch_port": "7"}


async def test_add_node_takes_a_complete_pi(stub) -> None:
    reply = await stub.AddNode(pb.AddNodeRequest(node_name="rpi-001", properties={
        **PI, "sd_device": "/dev/sda", "model": "Raspberry Pi 4 Model B"}), metadata=AUTH, timeout=5)
    assert dict(reply.node.properties)["switch"] == "sw2"
    nodes = await stub.GetNodes(pb.GetNodesRequest(), metadata=AUTH, timeout=5)
    assert [node.name for node in nodes.nodes] == ["rpi-001"]


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({k: v for k, v in PI.items() if k != "serial"}, "property 'serial' is missing"),
        ({k: v for k, v in PI.items() if k != "switch"}, "property 'switch' is missing"),
        ({k: v for k, v in PI.items() if k != "switch_port"}, "property 'switch_port' is missing"),
        ({k: v for k, v in PI.items() if k != "ip"}, "property 'ip' is missing"),
        ({**PI, "switch": "sw9"}, "property 'switch' names an unknown switch 'sw9'; this agent has sw1, sw2"),
        ({**PI, "serial": "xyz"}, "property 'serial' must be the Pi's 8 hex digits"),
        ({**PI, "switch_port": "0"}, "property 'switch_port' must be a port number"),
        ({**PI, "sd_device": "mmcblk0; rm -rf /"}, "property 'sd_device' must be a device path"),
    ],
)
async def test_add_node_refuses_what_the_driver_could_not_drive(stub, properties, expected) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AddNode(pb.AddNodeRequest(node_name="rpi-001", properties=properties),
                           metadata=AUTH, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in caught.value.details()
    nodes = await stub.GetNodes(pb.GetNodesRequest(), metadata=AUTH, timeout=5)
    assert list(nodes.nodes) == []


def test_the_examples_real_section_uncommented_is_a_valid_table(tmp_path) -> None:
    """scripts/agent.example.toml documents [real] in comments; taken out of them, it loads."""
    text = Path(REPO, "scripts", "agent.example.toml").read_text()
    start = text.index("# [real]")
    kept = []
    for line in text[start:text.index('# driver = "real" (sensor)')].splitlines():
        if line.startswith("# ") and not line.startswith("# # "):
            kept.append(line[2:])
        elif line.startswith("# # ") and "=" in line:
            kept.append(line[4:])  # the optional keys, with their defaults
    head = text[:text.index('# driver = "real" (raspberry)')].replace('driver = "sim"', 'driver = "real"')
    # The example's token is refused by design; an operator sets one, here through the environment.
    settings = load(tmp_path, head + "\n".join(kept) + "\n", env={"EDGEBED_TOKEN": TOKEN})
    assert settings.real is not None and settings.real.switches[0].name == "sw1"
    assert settings.real.timeout_scale == 1.0 and settings.real.switches[0].off_value == 2


def test_the_examples_sensor_section_uncommented_is_a_valid_table(tmp_path) -> None:
    """The sensor agent's [real] example, taken out of its comments, loads: templates, patterns."""
    text = Path(REPO, "scripts", "agent.example.toml").read_text()
    sensor = text[text.index('# driver = "real" (sensor)'):]
    kept = []
    for line in sensor[sensor.index("# [real]"):].splitlines():
        if line.startswith("# ") and not line.startswith("# # "):
            kept.append(line[2:])
        elif line.startswith("# # ") and "=" in line:
            kept.append(line[4:])
    head = text[:text.index('# driver = "real" (raspberry)')].replace('driver = "sim"', 'driver = "real"')
    head = head.replace('type = "raspberry"', 'type = "sensor"')
    settings = load(tmp_path, head + "\n".join(kept) + "\n", env={"EDGEBED_TOKEN": TOKEN})
    real = settings.real
    assert isinstance(real, SensorRealConfig)
    assert [board.model for board in real.boards] == ["nrf52840dk", "iotlab-m3"]
    assert real.boards[0].alive_pattern == r"^main\(\): This is RIOT!"
    assert real.boards[1].properties_needed() == ["console", "port", "relay"]
