"""TLS on the agent: the `edgebed tls` CA, an agent serving (mutual) TLS to gRPC clients and to
grpcurl, start-up checks of its certificate files, and the warning for plaintext on the network."""

from __future__ import annotations

import asyncio
import logging
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgebed.agent.app import is_loopback, open_agent, start_agent
from edgebed.config import ConfigError
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from tests.agent.conftest import AUTH, TOKEN, make_settings
from tests.conftest import component_missing
from tests.pki import make_pki
from tests.processes import AgentProcess, write_toml

# Each channel its own subchannels, so that one refused handshake is not reused by the next.
OPTIONS = (("grpc.use_local_subchannel_pool", 1),)


def console_script(name: str) -> str:
    """A console script installed beside the interpreter (edgebed, grpcurl), as operators run it."""
    script = Path(sys.executable).with_name(name)
    if not script.exists():
        found = shutil.which(name)
        if found is None:
            component_missing(f"the `{name}` command (pip install -e '.[test]')")
        return str(found)
    return str(script)


def read(path: Path) -> bytes:
    return path.read_bytes()


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """A CA, agent and client certificates, and another CA: tests.agent.helpers.make_pki."""
    return make_pki(tmp_path / "pki", agent_dns=("localhost",))


def tls_settings(tmp_path: Path, pki: Path, *, mutual: bool = True, **overrides):
    values = dict(
        tls_cert=str(pki / "agent.pem"),
        tls_key=str(pki / "agent.key"),
        tls_client_ca=str(pki / "ca.pem") if mutual else "",
    )
    return make_settings(tmp_path, **{**values, **overrides})


def tls_channel(address: str, ca: Path, cert: Path | None = None, key: Path | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(ca),
        private_key=read(key) if key else None,
        certificate_chain=read(cert) if cert else None,
    )
    return grpc.aio.secure_channel(address, credentials, options=OPTIONS)


async def get_nodes(channel: grpc.aio.Channel) -> list[str]:
    async with channel:
        reply = await agent_pb2_grpc.AgentStub(channel).GetNodes(pb.GetNodesRequest(), metadata=AUTH, timeout=5)
    return [node.name for node in reply.nodes]


async def refused(channel: grpc.aio.Channel) -> str:
    """The details of a call the agent refused below gRPC (the handshake); fails if it answered."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get_nodes(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
    return caught.value.details() or ""


# -- the CA ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_tls_commands_make_a_ca_and_certificates_through_the_console_script(tmp_path):
    edgebed = console_script("edgebed")
    folder = tmp_path / "ca"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([edgebed, "tls", *args], capture_output=True, text=True, timeout=60)

    made = run("ca", "--dir", str(folder))
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines() == [f"wrote {folder / 'ca.pem'}", f"wrote {folder / 'ca.key'}"]
    agent = run("issue", "--dir", str(folder), "--name", "rpi", "--ip", "10.0.0.5", "--ip", "::1", "--dns", "rpi.lab")
    assert agent.returncode == 0, agent.stderr
    client = run("issue", "--dir", str(folder), "--name", "controller", "--client", "--days", "30")
    assert client.returncode == 0, client.stderr

    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("ca", "rpi", "controller"):
        assert stat.S_IMODE((folder / f"{name}.key").stat().st_mode) == 0o600, name
        assert b"PRIVATE KEY" not in (folder / f"{name}.pem").read_bytes()

    ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    server = x509.load_pem_x509_certificate((folder / "rpi.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5", "::1"]
    assert names.get_values_for_type(x509.DNSName) == ["rpi.lab"]
    assert list(server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    controller = x509.load_pem_x509_certificate((folder / "controller.pem").read_bytes())
    controller.verify_directly_issued_by(ca)
    assert list(controller.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert (controller.not_valid_after_utc - controller.not_valid_before_utc).days == 30

    # Nothing is ever overwritten, and bad input is one line with exit code 2.
    ca_key = (folder / "ca.key").read_bytes()
    for args, expected in [
        (("ca", "--dir", str(folder)), f"edgebed: {folder / 'ca.pem'} exists"),
        (("issue", "--dir", str(folder), "--name", "rpi", "--ip", "10.0.0.6"), f"edgebed: {folder / 'rpi.pem'} exists"),
        (("issue", "--dir", str(folder), "--name", "srv"), "edgebed: an agent's certificate needs --ip or --dns"),
        (("issue", "--dir", str(folder), "--name", "srv", "--ip", "srv.lab"), "edgebed: --ip must be an IPv4 or IPv6"),
        (("issue", "--dir", str(folder), "--name", "../x", "--ip", "10.0.0.6"), "edgebed: --name must be letters"),
        (("issue", "--dir", str(tmp_path / "none"), "--name", "srv", "--ip", "10.0.0.6"),
         f"edgebed: CA certificate {tmp_path / 'none' / 'ca.pem'}: no such file"),
    ]:
        result = run(*args)
        assert result.returncode == 2, (args, result)
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(expected), (args, line)
    assert (folder / "ca.key").read_bytes() == ca_key
    assert not (folder / "srv.key").exists() and not (tmp_path / "x.key").exists()


# -- serving TLS -------------------------------------------------------------------------------


async def test_a_mutual_tls_agent_serves_a_client_with_a_certificate_and_refuses_others(tmp_path, pki):
    client = (pki / "controller.pem", pki / "controller.key")
    async with open_agent(tls_settings(tmp_path, pki)) as agent:
        nodes = await get_nodes(tls_channel(agent.address, pki / "ca.pem", *client))
        assert nodes == [f"rpi-{i:03d}" for i in range(1, 7)]
        # Health needs no token, but it needs the client certificate like everything else.
        async with tls_channel(agent.address, pki / "ca.pem", *client) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        # No client certificate, one from another CA, a server certificate as a client's, plaintext.
        await refused(tls_channel(agent.address, pki / "ca.pem"))
        await refused(
            tls_channel(agent.address, pki / "ca.pem", pki / "other/controller.pem", pki / "other/controller.key")
        )
        await refused(tls_channel(agent.address, pki / "ca.pem", pki / "agent.pem", pki / "agent.key"))
        await refused(grpc.aio.insecure_channel(agent.address, options=OPTIONS))
        # The client refuses an agent whose certificate its CA did not issue.
        details = await refused(tls_channel(agent.address, pki / "other/ca.pem", *client))
        assert "CERTIFICATE_VERIFY_FAILED" in details
        # Still serving the right client after all that.
        assert len(await get_nodes(tls_channel(agent.address, pki / "ca.pem", *client))) == 6


async def test_a_tls_agent_without_client_ca_serves_any_tls_client_and_no_plaintext_one(tmp_path, pki):
    async with open_agent(tls_settings(tmp_path, pki, mutual=False)) as agent:
        assert len(await get_nodes(tls_channel(agent.address, pki / "ca.pem"))) == 6
        # The agent's own certificate, pinned, is a trust anchor as good as its CA.
        assert len(await get_nodes(tls_channel(agent.address, pki / "agent.pem"))) == 6
        await refused(grpc.aio.insecure_channel(agent.address, options=OPTIONS))
        # TLS does not replace the token.
        async with tls_channel(agent.address, pki / "ca.pem") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await agent_pb2_grpc.AgentStub(channel).GetNodes(pb.GetNodesRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -- start-up checks ---------------------------------------------------------------------------


def test_tls_keys_that_do_not_go_together_are_refused_naming_the_key(tmp_path, pki):
    from edgebed.agent.settings import load_settings

    base = dict(name="rpi", type="raspberry", listen="127.0.0.1:0", token=TOKEN, database=str(tmp_path / "a.sqlite"))
    cases = [
        ({"tls_cert": str(pki / "agent.pem")}, "key 'tls_key' is missing"),
        ({"tls_key": str(pki / "agent.key")}, "key 'tls_cert' is missing"),
        ({"tls_client_ca": str(pki / "ca.pem")}, "key 'tls_client_ca' needs tls_cert and tls_key"),
    ]
    for extra, expected in cases:
        config = write_toml(tmp_path / "agent.toml", {**base, **extra})
        with pytest.raises(ConfigError) as caught:
            load_settings(config, env={})
        assert str(caught.value).startswith(f"{config}: {expected}"), caught.value


@pytest.mark.parametrize(
    "change, key, expected",
    [
        ({"tls_cert": "{pki}/missing.pem"}, "tls_cert", "file {pki}/missing.pem: no such file"),
        ({"tls_cert": "{pki}/agent.key"}, "tls_cert", "file {pki}/agent.key: no PEM certificate"),
        ({"tls_key": "{pki}/missing.key"}, "tls_key", "file {pki}/missing.key: no such file"),
        ({"tls_key": "{pki}/agent.pem"}, "tls_key", "file {pki}/agent.pem: not a PEM private key"),
        ({"tls_key": "{pki}/controller.key"}, "tls_key", "file {pki}/controller.key is not the key of the certificate"),
        ({"tls_client_ca": "{pki}"}, "tls_client_ca", "file {pki}: is a directory"),
        ({"tls_client_ca": "{pki}/ca.key"}, "tls_client_ca", "file {pki}/ca.key: no PEM certificate"),
    ],
)
async def test_an_unusable_tls_file_stops_start_up_naming_the_key_before_anything_is_opened(
    tmp_path, pki, change, key, expected
):
    settings = tls_settings(
        tmp_path, pki, source="t.toml", **{k: v.format(pki=pki) for k, v in change.items()}
    )
    with pytest.raises(ConfigError) as caught:
        await start_agent(settings)
    message = str(caught.value)
    assert message.startswith(f"t.toml: key '{key}' {expected.format(pki=pki)}"), message
    assert "PRIVATE KEY" not in message and "\n" not in message
    assert not Path(settings.database).exists()


@pytest.mark.parametrize(
    "host, loopback",
    [("127.0.0.1", True), ("127.8.0.1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("[::]", False), ("", False), ("10.0.0.5", False), ("agent.lab", False)],
)
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


async def test_listening_beyond_loopback_without_tls_warns_once_at_start_up(tmp_path, pki, caplog):
    caplog.set_level(logging.INFO, logger="edgebed.agent")

    def warnings() -> list[str]:
        messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        return [m for m in messages if "without TLS" in m]

    async with open_agent(make_settings(tmp_path, listen="0.0.0.0:0")):
        pass
    [warning] = warnings()
    assert warning.startswith("agent rpi listens on 0.0.0.0:0 without TLS") and "tls_cert" in warning
    assert TOKEN not in caplog.text

    caplog.clear()
    async with open_agent(make_settings(tmp_path, listen="127.0.0.1:0")):
        pass
    async with open_agent(tls_settings(tmp_path, pki, listen="0.0.0.0:0")):
        pass
    assert warnings() == []
    assert "serving mutual TLS on 0.0.0.0" in caplog.text


# -- grpcurl -----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_grpcurl_with_cacert_and_a_client_certificate_talks_to_a_mutual_tls_agent_process(tmp_path, pki):
    grpcurl = console_script("grpcurl")
    agent = AgentProcess(
        tmp_path, "rpi", token=TOKEN, nodes=3, tls_cert=str(pki / "agent.pem"), tls_key=str(pki / "agent.key"),
        tls_client_ca=str(pki / "ca.pem"),
    ).start()

    async def run(*args: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            grpcurl, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
        return process.returncode or 0, out.decode(), err.decode()

    tls = ("-cacert", str(pki / "ca.pem"))
    client = ("-cert", str(pki / "controller.pem"), "-key", str(pki / "controller.key"))
    try:
        code, out, err = await run(*tls, *client, agent.address, "list")
        assert code == 0, err
        assert "edgebed.v1.Agent" in out.split() and "grpc.health.v1.Health" in out.split()
        code, out, err = await run(
            *tls, *client, "-H", f"authorization: Bearer {TOKEN}", agent.address, "edgebed.v1.Agent/GetNodes"
        )
        assert code == 0, err
        assert '"name": "rpi-003"' in out

        # Without a client certificate, with the wrong CA, or in plaintext: refused.
        code, out, err = await run(*tls, agent.address, "list")
        assert code != 0 and "edgebed.v1.Agent" not in out
        code, out, err = await run("-cacert", str(pki / "other/ca.pem"), *client, agent.address, "list")
        assert code != 0 and "certificate" in err
        code, out, err = await run("-plaintext", agent.address, "list")
        assert code != 0 and "edgebed.v1.Agent" not in out
    finally:
        assert agent.terminate() == 0
