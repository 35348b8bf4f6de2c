"""The servicer maps the service's errors to status codes by class hierarchy: a subclass of a
mapped error answers its ancestor's code, on a real grpc.aio server."""

from __future__ import annotations

import grpc
import pytest

from edgebed.agent import errors
from edgebed.agent.server import build_server, status_code
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc

TOKEN = "error-codes-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


class NodeGone(errors.NotFound):
    """A more precise error a service might add: no entry of its own in the server's table."""


class LockedByOperator(errors.Busy):
    pass


class Unclassified(errors.AgentError):
    pass


class RaisingService:
    """Stands in for AgentService: get_nodes raises whatever the test puts in `error`."""

    def __init__(self) -> None:
        self.error: errors.AgentError | None = None

    async def get_nodes(self, names: list[str]):
        assert self.error is not None
        raise self.error


@pytest.fixture
async def raising():
    service = RaisingService()
    server, port, _ = await build_server(service, TOKEN, "127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield service, agent_pb2_grpc.AgentStub(channel)
    await channel.close()
    await server.stop(None)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("no node named x"), grpc.StatusCode.NOT_FOUND),
        (NodeGone("node x went away"), grpc.StatusCode.NOT_FOUND),
        (errors.Busy("busy"), grpc.StatusCode.FAILED_PRECONDITION),
        (LockedByOperator("locked"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.AlreadyExists("taken"), grpc.StatusCode.ALREADY_EXISTS),
        (Unclassified("odd"), grpc.StatusCode.UNKNOWN),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else value.name,
)
async def test_errors_answer_the_code_of_their_nearest_mapped_class(raising, error, code):
    service, stub = raising
    service.error = error
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetNodes(pb.GetNodesRequest(), metadata=AUTH, timeout=5)
    assert caught.value.code() == code
    assert caught.value.details() == error.message


def test_every_error_class_of_the_agent_has_a_precise_code():
    classes = [
        cls for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.AgentError) and cls is not errors.AgentError
    ]
    assert len(classes) >= 4
    for cls in classes:
        assert status_code(cls("x")) not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK), cls
