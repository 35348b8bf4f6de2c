"""The controller calling agents over (mutual) TLS: a CA per agent, one client identity for the
controller, and a last_error that says which side of the handshake failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebed.config import ConfigError
from edgebed.controller.store import Store, migrate, open_database
from tests.controller.conftest import controller_for, make_settings
from tests.controller.test_cli import edgebed, one_line_error
from tests.controller.test_cli import write_config as write_controller_config
from tests.pki import make_pki
from tests.processes import AgentProcess

TOKEN = "tls-test-token-8d2e"


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_agent(tmp_path: Path, pki: Path):
    """A mutual-TLS `edgebed agent` process with 4 simulated nodes, its certificate naming
    127.0.0.1 only."""
    agent = AgentProcess(
        tmp_path, "rpi", token=TOKEN, nodes=4, tls_cert=str(pki / "agent.pem"), tls_key=str(pki / "agent.key"),
        tls_client_ca=str(pki / "ca.pem"),
    ).start()
    yield agent
    assert agent.terminate() == 0


def tls_controller_settings(tmp_path: Path, pki: Path, **overrides):
    return make_settings(
        tmp_path, tls_client_cert=str(pki / "controller.pem"), tls_client_key=str(pki / "controller.key"), **overrides
    )


@pytest.mark.slow
async def test_a_controller_and_an_agent_talk_over_mutual_tls(tmp_path, pki, tls_agent):
    ca = (pki / "ca.pem").read_text()
    async with controller_for(tls_controller_settings(tmp_path, pki)) as controller:
        info = await controller.agents.register("rpi", "raspberry", "127.0.0.1", tls_agent.port, TOKEN, ca)
        assert (info.status, info.last_error, info.node_count, info.tls) == ("connected", "", 4, True)
        record = await controller.store.agents.get_agent("rpi")
        assert record is not None and record.ca_pem == ca and ca not in repr(record)
        # The inventory refresh and a plain call go over the same TLS channel.
        assert await controller.inventory.refresh([record], catalogs=True) == {"rpi": None}
        assert sorted(await controller.client.get_nodes(record)) == [f"rpi-{i:03d}" for i in range(1, 5)]
        assert {node.name for node in await controller.inventory.list_nodes()} == {f"rpi-{i:03d}" for i in range(1, 5)}

        # Registered with the wrong CA: the controller refuses the agent's certificate.
        wrong = await controller.agents.register(
            "rpi-wrong-ca", "raspberry", "127.0.0.1", tls_agent.port, TOKEN, (pki / "other/ca.pem").read_text()
        )
        assert wrong.status == "disconnected"
        assert wrong.last_error == (
            "TLS handshake failed: the agent's certificate does not verify against its registered CA "
            "(unable to get local issuer certificate)"
        )
        # Dialled by a name its certificate does not carry.
        renamed = await controller.agents.register("rpi-by-name", "raspberry", "localhost", tls_agent.port, TOKEN, ca)
        assert renamed.last_error.startswith("TLS handshake failed: the agent's certificate does not name localhost")
        # Registered without a CA: plaintext to a TLS agent.
        plain = await controller.agents.register("rpi-plain", "raspberry", "127.0.0.1", tls_agent.port, TOKEN)
        assert plain.status == "disconnected" and not plain.tls
        assert plain.last_error.startswith("unavailable: ") and "register its CA" in plain.last_error
        # A success clears what a failure wrote.
        reconnected = await controller.agents.reconnect(await _admin(controller), "rpi")
        assert (reconnected.status, reconnected.last_error) == ("connected", "")

    # A controller without a client certificate: the agent refuses it during the handshake.
    async with controller_for(make_settings(tmp_path / "plain")) as controller:
        refused = await controller.agents.register("rpi", "raspberry", "127.0.0.1", tls_agent.port, TOKEN, ca)
        assert refused.status == "disconnected"
        assert refused.last_error.startswith(
            "TLS handshake failed: the agent closed the connection: it requires a client certificate"
        )
    # One the agent's CA did not issue: refused the same way.
    other = make_settings(
        tmp_path / "other", tls_client_cert=str(pki / "other/controller.pem"),
        tls_client_key=str(pki / "other/controller.key"),
    )
    async with controller_for(other) as controller:
        refused = await controller.agents.register("rpi", "raspberry", "127.0.0.1", tls_agent.port, TOKEN, ca)
        assert refused.last_error.startswith("TLS handshake failed: the agent closed the connection")


async def _admin(controller):
    user = await controller.accounts.create_user("admin@example.org", "a-long-password", admin=True, authorized=True)
    return user


async def test_a_ca_set_for_a_plaintext_agent_says_the_agent_does_not_speak_tls(tmp_path, pki, fake_agents):
    served = fake_agents("plain", token=TOKEN)
    async with controller_for(tls_controller_settings(tmp_path, pki)) as controller:
        info = await controller.agents.register(
            "plain", "raspberry", "127.0.0.1", served.port, TOKEN, (pki / "ca.pem").read_text()
        )
    assert info.status == "disconnected"
    assert info.last_error.startswith("TLS handshake failed: the agent does not speak TLS")
    # No call got through: the handshake failed before any.
    assert sum(served.fake.calls.values()) == 0


@pytest.mark.parametrize(
    "ca_pem, expected",
    [
        ("not a certificate", "the agent's CA: no PEM certificate"),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
         "the agent's CA: not a valid PEM certificate"),
        ("x" * 70_000, "the agent's CA: too large"),
    ],
)
async def test_a_bad_ca_is_refused_and_no_agent_is_added(tmp_path, ca_pem, expected):
    from edgebed.controller.errors import InvalidInput

    async with controller_for(make_settings(tmp_path)) as controller:
        with pytest.raises(InvalidInput) as caught:
            await controller.agents.register("rpi", "raspberry", "127.0.0.1", 1, TOKEN, ca_pem)
        assert str(caught.value.message).startswith(expected)
        assert await controller.store.agents.list_agents() == []


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"tls_client_cert": "{pki}/controller.pem"}, "key 'agents.tls_client_key' is missing"),
        ({"tls_client_key": "{pki}/controller.key"}, "key 'agents.tls_client_cert' is missing"),
        ({"tls_client_cert": "{pki}/controller.pem", "tls_client_key": "{pki}/agent.key"},
         "key 'agents.tls_client_key' file {pki}/agent.key is not the key of the certificate"),
        ({"tls_client_cert": "{pki}/none.pem", "tls_client_key": "{pki}/controller.key"},
         "key 'agents.tls_client_cert' file {pki}/none.pem: no such file"),
    ],
)
async def test_unusable_client_tls_files_stop_the_controller_naming_the_key(tmp_path, pki, overrides, expected):
    settings = make_settings(tmp_path, **{key: value.format(pki=pki) for key, value in overrides.items()})
    with pytest.raises(ConfigError) as caught:
        async with controller_for(settings):
            pass
    assert str(caught.value).startswith(expected.format(pki=pki)), caught.value
    assert "PRIVATE KEY" not in str(caught.value)
    # Nothing was opened: the database file was never created.
    assert not Path(settings.database).exists()


@pytest.mark.slow
def test_add_agent_with_a_ca_file_through_the_console_script(tmp_path, pki, tls_agent):
    token_file = tmp_path / "rpi.token"
    token_file.write_text(TOKEN + "\n")
    config = write_controller_config(tmp_path)
    with config.open("a", encoding="utf-8") as out:
        out.write(f'[agents]\ntls_client_cert = "{pki / "controller.pem"}"\n')
        out.write(f'tls_client_key = "{pki / "controller.key"}"\n')
    add = ["admin", "add-agent", "rpi", "--type", "raspberry", "--ip", "127.0.0.1", "--port", str(tls_agent.port),
           "--token-file", str(token_file), "--config", str(config)]
    result = edgebed(*add, "--ca-file", str(pki / "ca.pem"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "agent rpi added: connected (4 nodes)\n"

    assert one_line_error(edgebed(*add, "--ca-file", str(pki / "ca.key"))) == (
        f"edgebed: --ca-file {pki / 'ca.key'}: no PEM certificate ('-----BEGIN CERTIFICATE-----') in it"
    )
    assert one_line_error(edgebed(*add, "--ca-file", str(tmp_path / "none.pem"))) == (
        f"edgebed: --ca-file {tmp_path / 'none.pem'}: no such file"
    )


async def test_a_version_2_database_gets_an_empty_ca_for_its_agents(database_url):
    db = open_database(database_url, max_connections=2)
    assert migrate(db, target=2) == 2
    with db.connection_context():
        db.execute_sql(
            'INSERT INTO "agent" (name, type, ip, port, status, token, last_error) '
            "VALUES ('rpi', 'raspberry', '10.0.0.1', 50051, 'connected', 'tok', '')"
        )
    db.close_all()
    store = Store(database_url, secret_key=bytes(range(32)))
    await store.open()
    try:
        agent = await store.agents.get_agent("rpi")
        assert agent is not None and agent.ca_pem == "" and not agent.tls and agent.token == "tok"
    finally:
        await store.close()
