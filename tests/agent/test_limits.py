"""The agent caps what it accepts to what the controller can receive (edgebed/limits.py): names
matched whole, per-field limits, at most 200 environments, and GetNodes and ListEnvironments
kept under the reply budget; a request whose bytes do not parse answers INVALID_ARGUMENT."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgebed import limits
from edgebed.v1 import agent_pb2 as pb
from tests.agent.conftest import AUTH


def environment(name="os", **fields) -> pb.PutEnvironmentRequest:
    values = dict(name=name, description="An OS", image="/img/os.img", size_bytes=10, default_user="pi")
    values.update(fields)
    return pb.PutEnvironmentRequest(environment=pb.Environment(**values))


async def refused(call, request) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request, metadata=AUTH, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return caught.value.details()


BAD_ENVIRONMENTS = [
    (environment(description="d" * 4097), "description has 4097 characters, more than 4096"),
    (environment(description="a\x00b"), "description contains a NUL character"),
    (environment(image="/" + "i" * 1024), "image has 1025 characters, more than 1024"),
    (environment(image="/img/os.img\n"), "image contains control characters"),
    (environment(default_user="u" * 65), "default_user has 65 characters, more than 64"),
    (environment(default_user="pi root"), "default_user contains spaces"),
    (environment(size_bytes=2**53), "size_bytes must be at most 9007199254740991"),
    (environment(name="os\n"), "environment name 'os\\n' is not valid"),
    (environment(properties={f"p{i}": "v" for i in range(65)}), "environment 'os' has 65 properties, more than 64"),
    (environment(properties={"arch\n": "arm64"}), "property name 'arch\\n' is not valid"),
    (environment(properties={"arch": "a" * 4097}), "property 'arch' has 4097 characters, more than 4096"),
    (environment(name="x" * 5000), "environment name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... (5000 characters)"),
]


@pytest.mark.parametrize(("request_message", "message"), BAD_ENVIRONMENTS, ids=[m[:30] for _, m in BAD_ENVIRONMENTS])
async def test_environments_beyond_the_limits_are_refused(stub, request_message, message):
    details = await refused(stub.PutEnvironment, request_message)
    assert message in details
    assert len(details) < 300
    listed = await stub.ListEnvironments(pb.ListEnvironmentsRequest(), metadata=AUTH, timeout=5)
    assert request_message.environment.name not in [e.name for e in listed.environments]


BAD_NODES = [
    (pb.AddNodeRequest(node_name="rpi-001\n", properties={"ip": "10.0.0.1"}), "node name 'rpi-001\\n' is not valid"),
    (pb.AddNodeRequest(node_name="new", properties={"ip\n": "10.0.0.1"}), "property name 'ip\\n' is not valid"),
    (pb.AddNodeRequest(node_name="new", properties={"ip": "10.0.0.1\n"}), "property 'ip' must be an IP address"),
    (pb.AddNodeRequest(node_name="new", properties={"ip": "10.0.0.1", "s": "\x00"}), "property 's' contains a NUL"),
    (
        pb.AddNodeRequest(node_name="new", properties={"ip": "10.0.0.1", **{f"p{i}": "" for i in range(64)}}),
        "node 'new' has 65 properties, more than 64",
    ),
]


@pytest.mark.parametrize(("request_message", "message"), BAD_NODES, ids=[m[:30] for _, m in BAD_NODES])
async def test_nodes_beyond_the_limits_are_refused(stub, request_message, message):
    assert message in await refused(stub.AddNode, request_message)
    nodes = await stub.GetNodes(pb.GetNodesRequest(), metadata=AUTH, timeout=5)
    assert request_message.node_name not in [n.name for n in nodes.nodes]


async def test_renaming_to_a_name_with_a_trailing_newline_is_refused(stub):
    details = await refused(stub.RenameNode, pb.RenameNodeRequest(node_name="rpi-001", new_name="rpi-009\n"))
    assert "new name 'rpi-009\\n' is not valid" in details


@pytest.mark.slow
async def test_the_agent_holds_at_most_200_environments(stub):
    listed = await stub.ListEnvironments(pb.ListEnvironmentsRequest(), metadata=AUTH, timeout=5)
    for i in range(limits.MAX_ENVIRONMENTS - len(listed.environments)):
        await stub.PutEnvironment(environment(f"os-{i:03d}"), metadata=AUTH, timeout=5)
    details = await refused(stub.PutEnvironment, environment("one-too-many"))
    assert "this agent has 200 environments, the most it can hold" in details
    # Replacing one of them is no new environment.
    await stub.PutEnvironment(environment("os-000", description="new"), metadata=AUTH, timeout=5)
    listed = await stub.ListEnvironments(pb.ListEnvironmentsRequest(), metadata=AUTH, timeout=5)
    assert len(listed.environments) == limits.MAX_ENVIRONMENTS


BIG = {f"p{i:02d}": "v" * limits.MAX_PROPERTY_VALUE for i in range(limits.MAX_PROPERTIES - 1)}


async def test_environments_never_grow_past_the_reply_budget(stub):
    accepted = 0
    while True:
        request = environment(f"big-{accepted:02d}", description="d" * 4096, properties=BIG)
        try:
            await stub.PutEnvironment(request, metadata=AUTH, timeout=10)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"environment 'big-{accepted:02d}' would make ListEnvironments take up to" in exc.details()
            assert f"more than the {limits.REPLY_BUDGET_BYTES} a controller receives" in exc.details()
            break
        accepted += 1
        assert accepted < 50
    assert accepted >= 10
    listed = await stub.ListEnvironments(pb.ListEnvironmentsRequest(), metadata=AUTH, timeout=10)
    assert len(listed.environments) > accepted
    assert listed.ByteSize() <= limits.REPLY_BUDGET_BYTES < limits.RECEIVE_LIMIT_BYTES


async def test_nodes_never_grow_past_the_reply_budget(stub):
    accepted = 0
    while True:
        request = pb.AddNodeRequest(node_name=f"big-{accepted:02d}", properties={"ip": "10.9.0.1", **BIG})
        try:
            await stub.AddNode(request, metadata=AUTH, timeout=10)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"node 'big-{accepted:02d}' would make GetNodes take up to" in exc.details()
            break
        accepted += 1
        assert accepted < 50
    assert accepted >= 10
    nodes = await stub.GetNodes(pb.GetNodesRequest(), metadata=AUTH, timeout=10)
    assert nodes.ByteSize() <= limits.REPLY_BUDGET_BYTES


texts = st.text(max_size=100)
properties = st.dictionaries(texts, texts, max_size=8)


@settings(max_examples=50, deadline=None)
@given(name=texts, props=properties, description=texts, image=texts, user=texts, size=st.integers(0, 2**63 - 1))
def test_the_bounds_are_never_below_the_encoded_size(name, props, description, image, user, size):
    node = pb.GetNodesResponse(nodes=[pb.Node(name=name, properties=props)])
    assert node.ByteSize() <= limits.node_bound(name, props)
    env = pb.Environment(
        name=name, description=description, image=image, size_bytes=size, default_user=user, properties=props
    )
    listed = pb.ListEnvironmentsResponse(environments=[env])
    assert listed.ByteSize() <= limits.environment_bound(name, description, image, user, props)


METHODS = [m.name for m in pb.DESCRIPTOR.services_by_name["Agent"].methods]


@pytest.mark.parametrize("method", METHODS)
async def test_a_request_whose_bytes_do_not_parse_answers_invalid_argument(agent, method):
    async with grpc.aio.insecure_channel(agent.address) as channel:
        call = channel.unary_unary(
            f"/edgebed.v1.Agent/{method}", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"\x0a\x05ab", metadata=AUTH, timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == (
            f"the request is not a valid message: Error parsing message with type 'edgebed.v1.{method}Request': "
            "Wire format was corrupt"
        )
        # Without the token, the token is what is wrong.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"\xff\xff\xff", timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
