"""The real node (server) driver's parts without the lab: the [real] table of a node agent, the
PXE entries, BMC addresses and credentials, AddNode's checks, and the IPMI client against a real
ipmi_sim on loopback (the lab's own BMC, which needs no namespace)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import grpc
import pytest

from edgebed.agent.app import open_agent
from edgebed.agent.settings import load_settings
from edgebed.config import ConfigError, KeyProblem
from edgebed.nodetypes.base import DriverError, NodeRef
from edgebed.nodetypes.drivers import DriverOptions
from edgebed.nodetypes.interfaces import LOCAL, NETWORK
from edgebed.nodetypes.real.bmc import BmcError, Bmcs, Credentials, find_credentials, parse_address
from edgebed.nodetypes.real.config import ServerRealConfig
from edgebed.nodetypes.real.pxe import PxeEntries, mac_of
from edgebed.nodetypes.real.servers import BmcPower, ServerBoot, create
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from tests.agent.conftest import AUTH, TOKEN
from tests.agent.real.peers import make_key
from tests.conftest import component_missing

PASSWORD = "bmc-pass-1234"
SCRIPT = "#!ipxe\nkernel http://10.0.0.1/maint/vmlinuz\ninitrd http://10.0.0.1/maint/initrd\nboot\n"


@pytest.fixture
def machine(tmp_path) -> dict[str, Path]:
    key = make_key(tmp_path / "keys")
    host = make_key(tmp_path / "keys", "maint_host_ed25519")
    tftp = tmp_path / "tftp"
    tftp.mkdir()
    (tftp / "maintenance.ipxe").write_text(SCRIPT)
    images = tmp_path / "images"
    images.mkdir()
    password = tmp_path / "bmc.password"
    password.write_text(PASSWORD + "\n")
    password.chmod(0o600)
    return {"ssh_key": key.private, "netboot_known_hosts": Path(f"{host.private}.pub"),
            "tftp_root": tftp, "netboot_script": tftp / "maintenance.ipxe",
            "image_dir": images, "password_file": password, "database": tmp_path / "agent.sqlite"}


def node_toml(machine: dict[str, Path], *, real: dict | None = None,
              credentials: list[dict] | None = None) -> str:
    def value(item: object) -> str:
        return '"' + str(item) + '"' if isinstance(item, str | Path) else str(item)

    lines = ['name = "srv"', 'type = "node"', 'listen = "127.0.0.1:0"', f'token = "{TOKEN}"',
             f'database = "{machine["database"]}"', 'driver = "real"', "[real]"]
    table = {"ssh_key": machine["ssh_key"], "tftp_root": machine["tftp_root"],
             "netboot_script": machine["netboot_script"], "netboot_hostname": "maint",
             "netboot_known_hosts": machine["netboot_known_hosts"],
             "image_dir": machine["image_dir"], "image_url": "http://10.0.0.1:8081", **(real or {})}
    lines += [f"{k} = {value(v)}" for k, v in table.items()]
    if credentials is None:
        credentials = [{"match": "*", "user": "admin", "password_file": machine["password_file"]}]
    for item in credentials:
        lines.append("[[real.bmc_credentials]]")
        lines += [f"{k} = {value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def load(tmp_path: Path, text: str):
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return load_settings(path, env={})


def test_a_node_agent_loads_its_real_table(tmp_path, machine) -> None:
    settings = load(tmp_path, node_toml(machine))
    real = settings.real
    assert isinstance(real, ServerRealConfig)
    assert (real.bmc_timeout, real.power_off_seconds, real.wipe, real.redfish_ca_file) == (10.0, 5.0, "quick", "")
    (credentials,) = real.bmc_credentials
    assert (credentials.match, credentials.user) == ("*", "admin")
    # The password is not in the settings at all, only its file.
    assert PASSWORD not in repr(settings)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (dict(credentials=[]), "key 'real.bmc_credentials' is missing: at least 1 [[real.bmc_credentials]] table needed"),
        (dict(credentials=[{"match": "*", "user": "admin"}]), "key 'real.bmc_credentials[1].password_file' is missing"),
        (dict(credentials=[{"match": "*", "user": "admin", "password_file": "bmc.password"}]),
         "key 'real.bmc_credentials[1].password_file' must be an absolute path"),
        (dict(credentials=[{"match": "", "user": "admin", "password_file": "/x"}]),
         "key 'real.bmc_credentials[1].match' must not be empty"),
        (dict(real={"switches": 1}), "unknown key 'real.switches'"),
        (dict(real={"bmc_timeout": 0}), "key 'real.bmc_timeout' must be between"),
        (dict(real={"netboot_script": "maintenance.ipxe"}), "key 'real.netboot_script' must be an absolute path"),
        (dict(real={"netboot_known_hosts": "maint_host_keys"}),
         "key 'real.netboot_known_hosts' must be an absolute path"),
    ],
)
def test_a_bad_node_real_key_is_named_with_the_file(tmp_path, machine, change, expected) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, node_toml(machine, **change))
    assert expected in str(caught.value) and str(caught.value).startswith(str(tmp_path / "agent.toml"))


async def test_what_only_the_machine_can_tell_is_named_by_key(tmp_path, machine) -> None:
    machine["password_file"].write_text("\n")
    settings = load(tmp_path, node_toml(machine))
    with pytest.raises(KeyProblem, match=r"real.bmc_credentials\[1\].password_file' is .* which is empty"):
        await create(DriverOptions(real=settings.real))
    machine["password_file"].unlink()
    with pytest.raises(KeyProblem, match="which cannot be read: No such file"):
        await create(DriverOptions(real=settings.real))
    machine["netboot_script"].write_text("kernel vmlinuz\n")
    with pytest.raises(KeyProblem, match="real.netboot_script' .* is not an iPXE script"):
        await create(DriverOptions(real=settings.real))



async def test_a_node_agent_needs_the_maintenance_systems_host_keys(tmp_path, machine) -> None:
    """As for the Pis: no host key is learnt from whoever answers, so a node agent without the
    maintenance system's keys does not start."""
    text = node_toml(machine).replace(f'netboot_known_hosts = "{machine["netboot_known_hosts"]}"\n', "")
    with pytest.raises(ConfigError, match="key 'real.netboot_known_hosts' is missing"):
        load(tmp_path, text)
    empty = tmp_path / "no_keys"
    empty.write_text("# nothing yet\n")
    settings = load(tmp_path, node_toml(machine, real={"netboot_known_hosts": empty}))
    with pytest.raises(KeyProblem, match="real.netboot_known_hosts' is .* holds no public key"):
        await create(DriverOptions(real=settings.real))


# PXE entries.


def server(name: str = "srv-1", **properties: str) -> NodeRef:
    return NodeRef(name, {"ip": "10.0.0.21", "mac": "52:54:00:AB:cd:01", "bmc_protocol": "ipmi",
                          "bmc_address": "10.0.3.21", **properties})


async def test_a_pxe_entry_is_written_for_network_boot_and_removed_for_local(machine) -> None:
    entries = PxeEntries(str(machine["tftp_root"]), str(machine["netboot_script"]))
    node = server()
    entry = machine["tftp_root"] / "52-54-00-ab-cd-01.ipxe"
    await entries.set(node, True)
    text = entry.read_text()
    assert text.startswith("#!ipxe\n# edgebed boot entry for srv-1") and text.endswith(SCRIPT.split("\n", 1)[1])
    assert entry.stat().st_mode & 0o777 == 0o644
    await entries.set(node, True)  # again: nothing changes
    assert entry.read_text() == text
    await entries.set(node, False)
    assert not entry.exists()
    await entries.set(node, False)
    # Someone else's entry is never replaced nor removed.
    entry.write_text("#!ipxe\nsanboot --no-describe --drive 0x80\n")
    for network in (True, False):
        with pytest.raises(DriverError, match="is a boot entry edgebed did not write"):
            await entries.set(node, network)
    assert entry.read_text().startswith("#!ipxe\nsanboot")


@pytest.mark.parametrize("mac", ["", "52:54:00:ab:cd", "52:54:00:ab:cd:0g", "../../etc/passwd"])
def test_a_bad_mac_is_a_driver_error(mac) -> None:
    with pytest.raises(DriverError, match="property mac must be a MAC address"):
        mac_of(server(mac=mac))


# BMC addresses and credentials.


@pytest.mark.parametrize(
    ("protocol", "text", "expected"),
    [
        ("ipmi", "10.0.3.21", ("10.0.3.21", 623, "")),
        ("ipmi", "10.0.3.21:6230", ("10.0.3.21", 6230, "")),
        ("redfish", "bmc1.lab", ("bmc1.lab", 443, "https://bmc1.lab")),
        ("redfish", "http://127.0.0.1:8000", ("127.0.0.1", 8000, "http://127.0.0.1:8000")),
    ],
)
def test_bmc_addresses(protocol, text, expected) -> None:
    address = parse_address(protocol, text)
    assert (address.host, address.port, address.url) == expected


@pytest.mark.parametrize(
    ("protocol", "text", "expected"),
    [
        ("snmp", "10.0.3.21", "bmc_protocol must be one of ipmi, redfish"),
        ("ipmi", "10.0.3.21:0", "must be host or host:port"),
        ("ipmi", "", "bmc_address must be a host"),
        ("redfish", "ftp://bmc1", "must be host[:port] or http[s]://host[:port]"),
        ("redfish", "https://admin:pw@bmc1", "must be host[:port] or http[s]://host[:port]"),
        ("redfish", "https://bmc1/redfish/v1", "must be host[:port] or http[s]://host[:port]"),
    ],
)
def test_bad_bmc_addresses(protocol, text, expected) -> None:
    with pytest.raises(ValueError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        parse_address(protocol, text)


def test_the_first_matching_credentials_apply_by_name_or_address() -> None:
    tables = [Credentials("rack2-*", "ops", "a"), Credentials("10.0.3.*", "admin", "b"),
              Credentials("*", "root", "c")]
    assert find_credentials(tables, "rack2-07", "10.0.3.7").user == "ops"
    assert find_credentials(tables, "srv-1", "10.0.3.7:6230").user == "admin"
    assert find_credentials(tables, "srv-1", "https://bmc.lab").user == "root"
    assert find_credentials(tables[:2], "srv-1", "10.9.9.9") is None
    assert "b" not in repr(tables[1])


async def test_a_node_no_credentials_match_fails_naming_it() -> None:
    power = BmcPower(Bmcs([Credentials("rack9-*", "admin", "x")]))
    with pytest.raises(BmcError, match=r"srv-1: no \[\[real.bmc_credentials\]\] table matches the node or its BMC 10.0.3.21:623"):
        await power.is_powered(server())


# AddNode.


@pytest.fixture
async def stub(tmp_path, machine):
    settings = load(tmp_path, node_toml(machine))
    async with open_agent(settings) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            yield agent_pb2_grpc.AgentStub(channel)


SERVER = {"ip": "10.0.0.21", "mac": "52:54:00:ab:cd:01", "bmc_protocol": "redfish",
          "bmc_address": "https://10.0.3.21", "bmc_system": "System.Embedded.1", "disk_device": "/dev/nvme0n1"}


async def test_add_node_takes_a_complete_server(stub) -> None:
    reply = await stub.AddNode(pb.AddNodeRequest(node_name="srv-001", properties=SERVER), metadata=AUTH, timeout=5)
    assert dict(reply.node.properties)["bmc_protocol"] == "redfish"


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({k: v for k, v in SERVER.items() if k != "mac"}, "property 'mac' is missing"),
        ({k: v for k, v in SERVER.items() if k != "bmc_address"}, "property 'bmc_address' is missing"),
        ({**SERVER, "mac": "52:54:00"}, "property 'mac' must be a MAC address"),
        ({**SERVER, "bmc_protocol": "amt"}, "property bmc_protocol must be one of ipmi, redfish"),
        ({**SERVER, "bmc_protocol": "ipmi", "bmc_address": "10.0.3.21"}, "property 'bmc_system' must be a Redfish system id"),
        ({**SERVER, "disk_device": "sda; reboot"}, "property 'disk_device' must be a device path"),
        ({**SERVER, "bmc_password": "hunter2"}, "property 'bmc_password' looks like a secret"),
    ],
)
async def test_add_node_refuses_a_server_the_driver_could_not_drive(stub, properties, expected) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AddNode(pb.AddNodeRequest(node_name="srv-001", properties=properties), metadata=AUTH, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in caught.value.details()
    assert "hunter2" not in caught.value.details()


# The IPMI client against ipmi_sim.


@pytest.fixture
async def ipmi_bmc(tmp_path):
    from edgebed.lab.servers import missing_server_prerequisites, start_ipmi_sim

    missing = missing_server_prerequisites(["ipmi"])
    if missing:
        component_missing(", ".join(missing))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path / "bmc"
    process = await start_ipmi_sim(folder, tmp_path, "bmc", port, "rightpassword1")
    try:
        yield folder, f"127.0.0.1:{port}"
    finally:
        process.kill()
        await process.wait()


@pytest.mark.slow
async def test_ipmi_power_and_boot_device_through_ipmi_sim_and_a_refused_password(ipmi_bmc, machine) -> None:
    folder, address = ipmi_bmc
    bmcs = Bmcs([Credentials("bad-*", "admin", "wrongpassword"), Credentials("*", "admin", "rightpassword1")],
                timeout=3)
    power = BmcPower(bmcs, min_off_seconds=0.1)
    boot = ServerBoot(bmcs, PxeEntries(str(machine["tftp_root"]), str(machine["netboot_script"])))
    node = server(bmc_address=address)
    try:
        assert await power.is_powered(node) is False
        await boot.set_boot_source(node, NETWORK)
        assert (folder / "boot").read_text().strip() == "pxe"
        assert (machine["tftp_root"] / "52-54-00-ab-cd-01.ipxe").exists()
        await power.set_power(node, True)
        assert (folder / "power").read_text().strip() == "1" and await power.is_powered(node)
        await power.hard_reboot(node)
        assert await power.is_powered(node)
        await boot.set_boot_source(node, LOCAL)
        assert (folder / "boot").read_text().strip() == "default"
        assert not (machine["tftp_root"] / "52-54-00-ab-cd-01.ipxe").exists()
        await power.set_power(node, False)
        assert not await power.is_powered(node)

        refused = server("bad-1", bmc_address=address)
        with pytest.raises(BmcError) as caught:
            await power.set_power(refused, True)
        assert str(caught.value) == (f"bad-1: ipmi BMC {address}: reading the power state: refused the "
                                     "password of user 'admin' (wrong password?)")
        assert (folder / "power").read_text().strip() == "0"
        nobody = Bmcs([Credentials("*", "nobody", "rightpassword1")], timeout=3)
        with pytest.raises(BmcError, match="does not know user 'nobody'"):
            await nobody.call(node, "power", "power")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            quiet = server(bmc_address=f"127.0.0.1:{silent.getsockname()[1]}")
            with pytest.raises(BmcError, match="no answer"):
                await asyncio.wait_for(bmcs.call(quiet, "power", "power"), 30)
    finally:
        await bmcs.close()


# The Redfish client against the sushy-tools emulator (the lab's, with its fake driver).


@pytest.fixture
async def redfish_bmc(tmp_path):
    from edgebed.lab.servers import ServerHardware, missing_server_prerequisites, start_redfish

    missing = missing_server_prerequisites(["redfish"])
    if missing:
        component_missing(", ".join(missing))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    system = "0000eb1a-0000-4b00-8000-000000000001"
    hardware = ServerHardware(index=1, name="sv1", netns="none", ip="10.0.0.21", mac="52:54:00:ab:cd:01",
                              disk_file="", disk_device="/dev/null", folder=str(tmp_path),
                              bmc_protocol="redfish", bmc_address=f"http://127.0.0.1:{port}",
                              bmc_system=system)
    # Power changes applied 2-3 s after the request: more than one poll of the driver.
    process = await start_redfish(tmp_path / "redfish", tmp_path, [hardware], port, "rightpassword1", (3, 3))
    try:
        yield hardware
    finally:
        process.kill()
        await process.wait()


@pytest.mark.slow
async def test_redfish_power_is_polled_until_the_bmc_reports_it_and_a_refused_password(redfish_bmc, machine) -> None:
    hardware = redfish_bmc
    bmcs = Bmcs([Credentials("bad-*", "admin", "wrongpassword"), Credentials("*", "admin", "rightpassword1")],
                timeout=5)
    power = BmcPower(bmcs, min_off_seconds=0.1)
    boot = ServerBoot(bmcs, PxeEntries(str(machine["tftp_root"]), str(machine["netboot_script"])))
    node = server(bmc_protocol="redfish", bmc_address=hardware.bmc_address, bmc_system=hardware.bmc_system)
    try:
        await boot.set_boot_source(node, NETWORK)
        await power.set_power(node, True)
        # Requested, not done: the emulator applies it seconds later, and the driver says so.
        assert await power.is_powered(node) is False
        began = asyncio.get_running_loop().time()
        while not await power.is_powered(node):
            assert asyncio.get_running_loop().time() - began < 10
            await asyncio.sleep(0.2)
        await power.hard_reboot(node)  # waits for the report of off, then asks for on
        await boot.set_boot_source(node, LOCAL)
        assert not (machine["tftp_root"] / "52-54-00-ab-cd-01.ipxe").exists()

        refused = server("bad-1", bmc_protocol="redfish", bmc_address=hardware.bmc_address,
                         bmc_system=hardware.bmc_system)
        with pytest.raises(BmcError) as caught:
            await power.is_powered(refused)
        assert str(caught.value) == (f"bad-1: redfish BMC {hardware.bmc_address}: reading the power state: "
                                     "refused user 'admin': wrong user name or password? (HTTP 401/403)")
        elsewhere = server(bmc_protocol="redfish", bmc_address=hardware.bmc_address, bmc_system="no-such-system")
        with pytest.raises(BmcError, match="no system no-such-system on this BMC"):
            await power.is_powered(elsewhere)
    finally:
        await bmcs.close()


async def test_a_servers_pinned_host_key_is_kept_under_its_mac_not_its_name() -> None:
    """The node driver's HostKeys identify a server by its MAC (pxe.mac_of): renaming the node in
    the inventory keeps the pin; another server does not get it."""
    import asyncssh

    from edgebed.nodetypes.real.pxe import mac_of
    from edgebed.nodetypes.real.ssh import HostKeys

    state: dict[str, str] = {}

    async def load_state(key: str) -> str | None:
        return state.get(key)

    async def save_state(key: str, value: str) -> None:
        state[key] = value

    maintenance = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
    deployed = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
    keys = HostKeys([maintenance], load_state=load_state, save_state=save_state, ident=mac_of)
    await keys.pin(server("srv-1"), deployed)
    assert list(state) == ["hostkey.52-54-00-ab-cd-01"]
    again = HostKeys([maintenance], load_state=load_state, save_state=save_state, ident=mac_of)
    fingerprints = [key.get_fingerprint() for key in await again.trusted(server("renamed"))]
    assert fingerprints == [maintenance.get_fingerprint(), deployed.get_fingerprint()]
    other = server("srv-2", mac="52:54:00:ab:cd:02")
    assert [key.get_fingerprint() for key in await again.trusted(other)] == [maintenance.get_fingerprint()]
