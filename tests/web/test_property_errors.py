"""Action properties checked when they are set, through the JSON API and the configure form,
against real simulated agents (their node types declare the constraints): every wrong property
is named, next to its field on the page; a deploy the agent refused anyway carries its
`last_error` in the JSON and on the configure and manage pages."""

from __future__ import annotations

import html
import re
import time

import grpc

from edgebed.controller.domain import Environment
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc as pb_grpc
from tests.web.conftest import ADMIN, ALICE, client_for
from tests.web.harness import Client

TOO_SHORT = "tiny7"


def _reserve(client: Client, node: str, start: int) -> None:
    taken = client.request("POST", "/api/v1/reservations", json={
        "nodes": [node], "start_date": start, "duration_hours": 1})
    assert taken.status == 201, taken.text


def _raspberry_environment(client: Client) -> str:
    return client.get("/api/v1/environments").json()["raspberry"][0]["name"]


def test_nodetypes_carry_each_propertys_constraints_label_and_help(testbed):
    alice = Client(testbed.url, token=testbed.api_token(ALICE))
    specs = {spec["name"]: spec for spec in alice.get("/api/v1/nodetypes").json()["raspberry"]["properties"]}
    password = specs["os_password"]
    assert (password["min_length"], password["max_length"]) == (8, 128)
    assert password["label"] == "Password of the default user"
    assert password["help"] == "8 to 128 characters without control characters"
    assert specs["hostname"]["pattern"] and specs["hostname"]["max_length"] == 63
    assert specs["partition_size"]["values"][0] == "full"


def test_a_too_short_os_password_is_refused_at_configure_through_the_api(testbed):
    alice = Client(testbed.url, token=testbed.api_token(ALICE))
    _reserve(alice, "rpi-001", int(time.time()) + 86400)
    environment = _raspberry_environment(alice)
    refused = alice.request("PUT", "/api/v1/reservations/rpi-001", json={
        "bin": "api", "environment": environment, "os_password": TOO_SHORT, "hostname": "-bad-",
        "partition_size": "3T"})
    assert refused.status == 400, refused.text
    body = refused.json()
    assert body["fields"] == {
        "os_password": "must be 8 to 128 characters long",
        "hostname": "must be a host name: letters, digits and '-', at most 63 characters, "
                    "not starting or ending with '-'",
        "partition_size": "must be one of full, 8G, 16G, 32G; got '3T'",
    }
    assert body["error"].startswith("os_password: must be 8 to 128 characters long; hostname: ")
    assert TOO_SHORT not in refused.text
    # Nothing was set: not the bin, not the good environment.
    after = alice.get("/api/v1/reservations/rpi-001").json()
    assert (after["status"], after["bin"], after["missing_properties"]) == ("configuring", "", ["environment"])
    assert "environment" not in after["properties"] and after["last_error"] == ""

    # A partial configuration names what is still missing; a complete one is ready.
    partial = alice.request("PUT", "/api/v1/reservations/rpi-001", json={"os_password": "long enough"})
    assert partial.status == 200 and partial.json()["missing_properties"] == ["environment"]
    ready = alice.request("PUT", "/api/v1/reservations/rpi-001", json={"environment": environment})
    assert ready.status == 200 and (ready.json()["status"], ready.json()["missing_properties"]) == ("ready", [])
    assert alice.request("POST", "/api/v1/reservations/rpi-001/destroy").status == 200


def test_a_too_short_os_password_is_refused_by_the_configure_form_beside_its_field(testbed):
    alice = client_for(testbed, ALICE)
    api = Client(testbed.url, token=testbed.api_token(ALICE))
    _reserve(api, "rpi-002", int(time.time()) + 86400)
    environment = _raspberry_environment(api)
    refused = alice.post("/configure", [
        ("nodes", "rpi-002"), ("bin", "form-run"), ("prop.environment", environment),
        ("prop.os_password", TOO_SHORT), ("prop.hostname", "exp-host")])
    assert refused.status == 400, refused.text[:500]
    page = refused.text
    # The message names the property, and stands beside its field.
    assert "os_password: must be 8 to 128 characters long" in html.unescape(page)
    field = re.search(r'<input type="password" name="prop.os_password"[^>]*>\s*'
                      r'<small class="error-text field-error"[^>]*data-field-error="os_password">([^<]+)</small>', page)
    assert field is not None and field.group(1) == "must be 8 to 128 characters long", page
    assert 'aria-invalid="true"' in field.group(0)
    # What was typed stays, except the secret, which is never sent back.
    assert TOO_SHORT not in page
    assert 'value="exp-host"' in page and 'value="form-run"' in page
    assert f'<option value="{environment}" selected>' in page
    assert api.get("/api/v1/reservations/rpi-002").json()["status"] == "configuring"

    # A configuration that leaves a required property out names it.
    partial = alice.post("/configure", [("nodes", "rpi-002"), ("prop.hostname", "exp-host")])
    assert partial.status == 303 and partial.location == "/configure?nodes=rpi-002"
    assert "rpi-002 still misses environment." in alice.get(partial.location).text
    assert api.request("POST", "/api/v1/reservations/rpi-002/destroy").status == 200


def test_a_deploy_the_agent_refused_shows_its_last_error_in_the_api_and_on_the_pages(testbed):
    admin = testbed.call(testbed.controller.accounts.get_user(ADMIN))
    testbed.call(testbed.controller.inventory.put_environment(
        admin, "rpi", Environment(name="doomed", image="/srv/doomed.img", size_bytes=1000)))
    # Removed on the agent behind the controller's back: the controller still offers it until its
    # next catalog refresh, and the agent refuses the deploy when it starts.
    [rpi] = [agent for agent in testbed.agents if agent.name == "rpi"]
    with grpc.insecure_channel(f"{rpi.host}:{rpi.port}") as channel:
        pb_grpc.AgentStub(channel).RemoveEnvironment(
            pb.RemoveEnvironmentRequest(name="doomed"), metadata=[("authorization", f"Bearer {rpi.token}")],
            timeout=5)

    api = Client(testbed.url, token=testbed.api_token(ALICE))
    _reserve(api, "rpi-003", int(time.time()))
    configured = api.request("PUT", "/api/v1/reservations/rpi-003", json={"environment": "doomed"})
    assert configured.status == 200 and configured.json()["status"] in ("ready", "configuring")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        reservation = api.get("/api/v1/reservations/rpi-003").json()
        if reservation["last_error"]:
            break
        time.sleep(0.2)
    refusal = "deploy refused: unknown environment 'doomed'; this agent has raspios-lite-arm64, ubuntu-24.04-arm64"
    assert reservation["last_error"] == refusal, reservation
    assert reservation["status"] == "configuring"

    alice = client_for(testbed, ALICE)
    configure_page = html.unescape(alice.get("/configure").text)
    assert f'data-field="error">{refusal}</small>' in configure_page, configure_page
    assert f'data-field="error">{refusal}</small>' in html.unescape(alice.get("/manage").text)
    live = {r["node_name"]: r for r in alice.get("/manage/live").json()["reservations"]}
    assert live["rpi-003"]["last_error"] == refusal
    assert api.request("POST", "/api/v1/reservations/rpi-003/destroy").status == 200
