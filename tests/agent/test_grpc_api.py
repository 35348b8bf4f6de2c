"""The agent's gRPC service on a real grpc.aio server: reflection, health, token, status codes."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from edgebed.agent.app import open_agent
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from tests.agent.conftest import AUTH, TOKEN, make_settings

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIh7Wd3pOX7sK0m7v6kq5r3cQ1bGxY0d0m4a2o8mYfJq user@lab"


async def test_reflection_lists_agent_service(agent) -> None:
    async with grpc.aio.insecure_channel(agent.address) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = [r async for r in reflection.ServerReflectionInfo(iter([request]), timeout=5)]
    names = {s.name for s in responses[0].list_services_response.service}
    assert "edgebed.v1.Agent" in names
    assert "grpc.health.v1.Health" in names


async def test_health_answers_without_token(agent) -> None:
    async with grpc.aio.insecure_channel(agent.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service="edgebed.v1.Agent"), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_get_nodes_lists_the_simulated_nodes(stub) -> None:
    reply = await stub.GetNodes(pb.GetNodesRequest(), metadata=AUTH, timeout=5)
    assert [node.name for node in reply.nodes] == [f"rpi-{i:03d}" for i in range(1, 7)]
    first = dict(reply.nodes[0].properties)
    assert {"ip", "model", "serial", "switch", "switch_port"} <= set(first)
    assert len({dict(node.properties)["ip"] for node in reply.nodes}) == 6


async def test_get_nodes_by_name(stub) -> None:
    reply = await stub.GetNodes(
        pb.GetNodesRequest(node_names=["rpi-003", "rpi-001"]), metadata=AUTH, timeout=5
    )
    assert [node.name for node in reply.nodes] == ["rpi-001", "rpi-003"]


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer wrong-token"),),
        (("authorization", f"Basic {TOKEN}"),),
        (("authorization", TOKEN),),
        (("authorization", "Bearer "),),
        (("authorization", f"Bearer {TOKEN}x"),),
    ],
    ids=["none", "wrong", "basic-scheme", "no-scheme", "empty", "longer"],
)
async def test_calls_without_the_token_are_unauthenticated(stub, metadata) -> None:
    for call in (
        stub.GetNodes(pb.GetNodesRequest(), metadata=metadata, timeout=5),
        stub.StartAction(
            pb.StartActionRequest(node_name="rpi-001", process="reboot"), metadata=metadata, timeout=5
        ),
        stub.GetActionState(pb.GetActionStateRequest(), metadata=metadata, timeout=5),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert TOKEN not in (caught.value.details() or "")
    # Nothing was started by the refused calls.
    state = await stub.GetActionState(pb.GetActionStateRequest(), metadata=AUTH, timeout=5)
    assert list(state.actions) == []


def _deploy(node="rpi-001", environment="raspios-lite-arm64", **properties):
    return pb.StartActionRequest(
        node_name=node, process="deploy", environment=environment, properties=properties
    )


MALFORMED = [
    ("StartAction", _deploy(node=""), "node name is empty"),
    ("StartAction", _deploy(node="bad name!"), "is not valid"),
    ("StartAction", pb.StartActionRequest(node_name="rpi-001", process="format"), "unknown process 'format'"),
    ("StartAction", pb.StartActionRequest(node_name="rpi-001", process=""), "unknown process ''"),
    ("StartAction", _deploy(environment=""), "deploy needs one"),
    ("StartAction", _deploy(environment="windows-95"), "unknown environment 'windows-95'"),
    ("StartAction", _deploy(partition_size="3T"), "partition_size"),
    ("StartAction", _deploy(ssh_key="not a key"), "OpenSSH public keys"),
    ("StartAction", _deploy(os_password="short"), "8 to 128"),
    ("StartAction", _deploy(hostname="-bad-"), "host name"),
    ("StartAction", _deploy(colour="blue"), "unknown property 'colour'"),
    (
        "StartAction",
        pb.StartActionRequest(
            node_name="rpi-001", process="deploy", environment="raspios-lite-arm64",
            properties={"environment": "ubuntu-24.04-arm64"},
        ),
        "disagree",
    ),
    ("GetNodes", pb.GetNodesRequest(node_names=[""]), "node name is empty"),
    ("GetActionState", pb.GetActionStateRequest(node_names=["rpi-001", ""]), "node name is empty"),
    ("AddNode", pb.AddNodeRequest(node_name="", properties={"ip": "10.0.0.1"}), "node name is empty"),
    ("AddNode", pb.AddNodeRequest(node_name="a/b", properties={"ip": "10.0.0.1"}), "is not valid"),
    ("AddNode", pb.AddNodeRequest(node_name="x" * 65, properties={"ip": "10.0.0.1"}), "is not valid"),
    ("AddNode", pb.AddNodeRequest(node_name="rpi-100"), "'ip' is missing"),
    ("AddNode", pb.AddNodeRequest(node_name="rpi-100", properties={"ip": "10.0.0.300"}), "IP address"),
    ("AddNode", pb.AddNodeRequest(node_name="rpi-100", properties={"ip": "10.0.0.1", "": "x"}), "property name"),
    ("RemoveNode", pb.RemoveNodeRequest(node_name=""), "node name is empty"),
    ("RenameNode", pb.RenameNodeRequest(node_name="rpi-001", new_name=""), "new name is empty"),
    ("RenameNode", pb.RenameNodeRequest(node_name="rpi-001", new_name="a b"), "is not valid"),
    ("RenameNode", pb.RenameNodeRequest(node_name="rpi-001", new_name="rpi-001"), "is the current name"),
    ("RenameNode", pb.RenameNodeRequest(node_name="", new_name="rpi-100"), "node name is empty"),
    ("PutEnvironment", pb.PutEnvironmentRequest(), "environment is missing"),
    ("PutEnvironment", pb.PutEnvironmentRequest(environment=pb.Environment(name="", image="/x")), "environment name is empty"),
    ("PutEnvironment", pb.PutEnvironmentRequest(environment=pb.Environment(name="e", image="/x", size_bytes=-1)), "negative"),
    ("PutEnvironment", pb.PutEnvironmentRequest(environment=pb.Environment(name="e")), "image is empty"),
    ("RemoveEnvironment", pb.RemoveEnvironmentRequest(name=""), "environment name is empty"),
]


@pytest.mark.parametrize(
    ("method", "request_message", "message"), MALFORMED,
    ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(MALFORMED)],
)
async def test_malformed_requests_give_invalid_argument(stub, method, request_message, message) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(stub, method)(request_message, metadata=AUTH, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert message in caught.value.details()


async def test_secret_values_are_not_echoed_in_errors(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartAction(_deploy(os_password="hunter\x01"), metadata=AUTH, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "hunter" not in caught.value.details()


@pytest.mark.parametrize(
    ("method", "request_message"),
    [
        ("StartAction", _deploy(node="rpi-999")),
        ("StartAction", pb.StartActionRequest(node_name="nope", process="reboot")),
        ("GetNodes", pb.GetNodesRequest(node_names=["rpi-001", "rpi-999"])),
        ("RemoveNode", pb.RemoveNodeRequest(node_name="rpi-999")),
        ("RenameNode", pb.RenameNodeRequest(node_name="rpi-999", new_name="rpi-998")),
        ("RemoveEnvironment", pb.RemoveEnvironmentRequest(name="no-such-image")),
    ],
)
async def test_unknown_names_give_not_found(stub, method, request_message) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(stub, method)(request_message, metadata=AUTH, timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no " in caught.value.details()


async def test_busy_node_gives_failed_precondition(tmp_path) -> None:
    # Realistic durations: the deploy lasts minutes, so it is surely unfinished below.
    async with open_agent(make_settings(tmp_path, sim_time_scale=1.0)) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            started = await stub.StartAction(_deploy(), metadata=AUTH, timeout=5)
            assert started.action.state == "netboot_on" and started.action.state_idx == 0
            for method, request_message in [
                ("StartAction", _deploy()),
                ("StartAction", pb.StartActionRequest(node_name="rpi-001", process="destroy")),
                ("RemoveNode", pb.RemoveNodeRequest(node_name="rpi-001")),
                ("RenameNode", pb.RenameNodeRequest(node_name="rpi-001", new_name="rpi-100")),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await getattr(stub, method)(request_message, metadata=AUTH, timeout=5)
                assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "busy" in caught.value.details()
            # Other nodes are not affected.
            other = await stub.StartAction(_deploy(node="rpi-002"), metadata=AUTH, timeout=5)
            assert other.action.process == "deploy"


async def test_concurrent_starts_on_one_node_start_one_action(tmp_path) -> None:
    import asyncio

    async with open_agent(make_settings(tmp_path, sim_time_scale=1.0)) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            calls = [stub.StartAction(_deploy(), metadata=AUTH, timeout=5) for _ in range(8)]
            results = await asyncio.gather(*calls, return_exceptions=True)
    started = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(started) == 1
    assert len(refused) == 7
    assert {r.code() for r in refused} == {grpc.StatusCode.FAILED_PRECONDITION}


async def test_add_rename_remove_nodes(stub) -> None:
    added = await stub.AddNode(
        pb.AddNodeRequest(node_name="rpi-extra", properties={"ip": "10.9.0.1", "model": "Pi 5"}),
        metadata=AUTH, timeout=5,
    )
    assert added.node.name == "rpi-extra"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.AddNode(
            pb.AddNodeRequest(node_name="rpi-001", properties={"ip": "10.9.0.2"}), metadata=AUTH, timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RenameNode(
            pb.RenameNodeRequest(node_name="rpi-extra", new_name="rpi-002"), metadata=AUTH, timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    renamed = await stub.RenameNode(
        pb.RenameNodeRequest(node_name="rpi-extra", new_name="rpi-pi5"), metadata=AUTH, timeout=5
    )
    assert renamed.node.name == "rpi-pi5" and renamed.node.properties["model"] == "Pi 5"
    await stub.RemoveNode(pb.RemoveNodeRequest(node_name="rpi-pi5"), metadata=AUTH, timeout=5)
    names = [n.name for n in (await stub.GetNodes(pb.GetNodesRequest(), metadata=AUTH, timeout=5)).nodes]
    assert "rpi-pi5" not in names and "rpi-extra" not in names and len(names) == 6


async def test_environments_are_listed_put_and_removed(stub) -> None:
    listed = await stub.ListEnvironments(pb.ListEnvironmentsRequest(), metadata=AUTH, timeout=5)
    names = [env.name for env in listed.environments]
    assert names == sorted(names) and {"raspios-lite-arm64", "ubuntu-24.04-arm64"} <= set(names)
    assert all(env.size_bytes > 0 and env.default_user for env in listed.environments)
    custom = pb.Environment(
        name="alpine-3.20", image="/srv/alpine.img", size_bytes=200_000_000, default_user="alpine",
        properties={"sha256": "ab" * 32},
    )
    await stub.PutEnvironment(pb.PutEnvironmentRequest(environment=custom), metadata=AUTH, timeout=5)
    described = await stub.DescribeNodeType(pb.DescribeNodeTypeRequest(), metadata=AUTH, timeout=5)
    environment_spec = next(p for p in described.properties if p.name == "environment")
    assert "alpine-3.20" in environment_spec.values
    started = await stub.StartAction(_deploy(environment="alpine-3.20"), metadata=AUTH, timeout=5)
    assert started.action.environment == "alpine-3.20"
    await stub.RemoveEnvironment(pb.RemoveEnvironmentRequest(name="alpine-3.20"), metadata=AUTH, timeout=5)
    listed = await stub.ListEnvironments(pb.ListEnvironmentsRequest(), metadata=AUTH, timeout=5)
    assert "alpine-3.20" not in [env.name for env in listed.environments]


@pytest.mark.parametrize("node_type", ["raspberry", "node", "sensor"])
async def test_describe_node_type(tmp_path, node_type) -> None:
    from edgebed.nodetypes import load_node_type

    async with open_agent(make_settings(tmp_path, node_type)) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            described = await stub.DescribeNodeType(pb.DescribeNodeTypeRequest(), metadata=AUTH, timeout=5)
            environments = await stub.ListEnvironments(pb.ListEnvironmentsRequest(), metadata=AUTH, timeout=5)
    expected = load_node_type(node_type)
    assert described.type == node_type and described.agent_name == agent.settings.name
    assert {p.name: list(p.states) for p in described.processes} == {
        name: proc.state_names for name, proc in expected.processes.items()
    }
    assert {"deploy", "reboot", "destroy"} <= {p.name for p in described.processes}
    properties = {p.name: p for p in described.properties}
    assert properties["environment"].required
    assert list(properties["environment"].values) == [e.name for e in environments.environments]
    assert set(described.final_states) == {"deployed", "rebooted", "destroyed", "lost"}
    if node_type in ("raspberry", "node"):
        assert properties["os_password"].secret and not properties["os_password"].required
        assert properties["partition_size"].values and not properties["ssh_key"].required
    else:
        assert list(properties["radio_channel"].values)[:2] == ["11", "12"]


async def test_get_action_state_is_batched(agent, stub) -> None:
    for name in ("rpi-001", "rpi-002", "rpi-003"):
        await stub.StartAction(_deploy(node=name, ssh_key=SSH_KEY), metadata=AUTH, timeout=5)
    await agent.executor.wait_idle()
    everything = await stub.GetActionState(pb.GetActionStateRequest(), metadata=AUTH, timeout=5)
    assert [a.node_name for a in everything.actions] == ["rpi-001", "rpi-002", "rpi-003"]
    some = await stub.GetActionState(
        pb.GetActionStateRequest(node_names=["rpi-002", "rpi-005", "gone-node"]), metadata=AUTH, timeout=5
    )
    assert [a.node_name for a in some.actions] == ["rpi-002"]
    action = some.actions[0]
    assert action.state == "deployed" and action.final and action.process == "deploy"
    assert action.state_count == 13 and action.state_idx == 12
    assert action.node_ip == "10.10.0.2" and action.environment == "raspios-lite-arm64"
    assert action.updated_at > 1_700_000_000 and action.reboots == 0
    # Every action gets a new, larger id, which tells it from the previous one on the node.
    reboot = await stub.StartAction(
        pb.StartActionRequest(node_name="rpi-002", process="reboot"), metadata=AUTH, timeout=5
    )
    assert reboot.action.action_id > action.action_id > 0


async def test_random_requests_never_give_unknown_or_internal(stub) -> None:
    import random

    rng = random.Random(2024)
    pieces = [
        "", "rpi-001", "rpi-002", "rpi-999", "deploy", "reboot", "destroy", "format",
        "raspios-lite-arm64", "x" * 70, "é", "a b", "-lead", "../etc", "\x7f", "0" * 5000,
        "ssh-ed25519 AAAA", "full", "8G", "os_password", "ssh_key", "partition_size",
        "environment", "hostname",
    ]

    def pick() -> str:
        return rng.choice(pieces)

    allowed = {
        grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS,
    }
    many_names = [f"n{i}" for i in range(40_000)]
    requests = [("GetActionState", pb.GetActionStateRequest(node_names=many_names[:-1] + ["rpi-001"]))]
    for _ in range(300):
        properties = {pick(): pick() for _ in range(rng.randint(0, 3))}
        requests.append(rng.choice([
            ("StartAction", pb.StartActionRequest(
                node_name=pick(), process=pick(), environment=pick(), properties=properties)),
            ("GetNodes", pb.GetNodesRequest(node_names=[pick() for _ in range(rng.randint(0, 3))])),
            ("GetActionState", pb.GetActionStateRequest(node_names=[pick() for _ in range(2)])),
            ("AddNode", pb.AddNodeRequest(node_name=pick(), properties=properties)),
            ("RenameNode", pb.RenameNodeRequest(node_name=pick(), new_name=pick())),
            ("RemoveNode", pb.RemoveNodeRequest(node_name=pick())),
            ("PutEnvironment", pb.PutEnvironmentRequest(environment=pb.Environment(
                name=pick(), image=pick(), size_bytes=rng.randint(-5, 10**10), properties=properties))),
            ("RemoveEnvironment", pb.RemoveEnvironmentRequest(name=pick())),
        ]))
    outcomes = set()
    for method, request_message in requests:
        try:
            await getattr(stub, method)(request_message, metadata=AUTH, timeout=5)
            outcomes.add("OK")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() in allowed, (method, request_message, exc.code(), exc.details())
            assert exc.details()
            outcomes.add(exc.code())
    assert "OK" in outcomes and grpc.StatusCode.INVALID_ARGUMENT in outcomes
