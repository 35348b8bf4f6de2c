"""The gRPC side of the agent: the servicer, the token interceptor, reflection and health.

The servicer only converts protobuf messages to domain types and back and calls AgentService;
AgentError and its subclasses become status codes by class hierarchy (status_code). The token is
checked in one interceptor; a request whose bytes do not parse is answered INVALID_ARGUMENT by a
second one (MalformedRequests).
"""

from __future__ import annotations

import functools
import hmac
import logging

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edgebed.agent.domain import ActionView, Environment, NodeRecord
from edgebed.agent.errors import AgentError, AlreadyExists, Busy, DiskFull, InvalidArgument, NotFound
from edgebed.agent.service import AgentService, StartItem, StartResult
from edgebed.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name
# Open without a token, so that operators' grpcurl and load balancers' health checks work.
_OPEN_PREFIXES = ("/grpc.reflection.", "/grpc.health.v1.")

# The status code of each error class; a subclass gets the code of its nearest listed ancestor
# (status_code), so a new, more precise error needs no entry of its own.
_CODES: dict[type[AgentError], grpc.StatusCode] = {
    AgentError: grpc.StatusCode.UNKNOWN,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Busy: grpc.StatusCode.FAILED_PRECONDITION,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    DiskFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_code(error: AgentError) -> grpc.StatusCode:
    """The status code for a service error: that of the first class in its MRO listed in _CODES
    (AgentError itself answers UNKNOWN)."""
    for cls in type(error).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.UNKNOWN


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Lets a call through when its metadata holds 'authorization: Bearer <token>'."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

        async def refuse(request, context: grpc.aio.ServicerContext):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, context_message(context))

        self._refusal = grpc.unary_unary_rpc_method_handler(refuse)

    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(_OPEN_PREFIXES):
            return await continuation(handler_call_details)
        presented = None
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                presented = value if isinstance(value, str) else value.decode("latin-1")
        if presented is not None:
            scheme, _, token = presented.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                token.strip().encode(), self._expected
            ):
                return await continuation(handler_call_details)
        log.info(
            "refused %s: %s", handler_call_details.method,
            "no token" if presented is None else "wrong token",
        )
        return self._refusal


class CallLog(grpc.aio.ServerInterceptor):
    """Logs one line per call, `call METHOD from USER-AGENT` (setting `log_calls`): with several
    controllers sharing the agents, which controller asked what, and when."""

    async def intercept_service(self, continuation, handler_call_details):
        caller = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "user-agent":
                caller = value if isinstance(value, str) else value.decode("latin-1")
        # The user-agent is the caller's to choose: only its first word, printable, bounded.
        word = caller.split(" ", 1)[0][:120]
        log.info("call %s from %s", handler_call_details.method, word if word.isprintable() else "?")
        return await continuation(handler_call_details)


class _Malformed:
    """Stands for a request whose bytes did not parse, so the handler can refuse it."""

    def __init__(self, message: str) -> None:
        self.message = message


def _tolerant(deserialize):
    """The handler's request deserializer, returning _Malformed instead of raising: grpc.aio
    answers a deserializer's exception with UNKNOWN and the exception's class name."""

    def parse(data: bytes):
        try:
            return deserialize(data)
        except DecodeError as exc:
            return _Malformed(str(exc))

    return parse


def _refusing_malformed(behavior):
    async def handle(request, context: grpc.aio.ServicerContext):
        if isinstance(request, _Malformed):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid message: {request.message}"
            )
        return await behavior(request, context)

    return handle


class MalformedRequests(grpc.aio.ServerInterceptor):
    """Answers a unary request whose bytes fail to parse with INVALID_ARGUMENT and the parser's
    message (e.g. "Error parsing message with type 'edgebed.v1.GetNodesRequest': Wire format
    was corrupt"). Placed after the token check, so an unauthenticated caller learns nothing."""

    def __init__(self) -> None:
        # method -> (the registered handler, its wrapped copy): handlers never change.
        self._wrapped: dict[str, tuple[object, object]] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        known = self._wrapped.get(handler_call_details.method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = handler._replace(
            request_deserializer=_tolerant(handler.request_deserializer),
            unary_unary=_refusing_malformed(handler.unary_unary),
        )
        self._wrapped[handler_call_details.method] = (handler, wrapped)
        return wrapped


def context_message(context: grpc.aio.ServicerContext) -> str:
    metadata = dict(context.invocation_metadata() or ())
    if "authorization" not in metadata:
        return "missing token: send metadata 'authorization: Bearer <token>'"
    return "wrong token"


def _maps_errors(method):
    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except AgentError as exc:
            await context.abort(status_code(exc), exc.message)

    return wrapper


# Conversions.


def node_to_pb(node: NodeRecord) -> agent_pb2.Node:
    return agent_pb2.Node(name=node.name, properties=dict(node.properties))


def action_to_pb(view: ActionView) -> agent_pb2.ActionState:
    record = view.record
    return agent_pb2.ActionState(
        node_name=record.node_name,
        node_ip=record.node_ip,
        environment=record.environment,
        process=record.process,
        state=record.state,
        state_idx=record.state_idx,
        updated_at=record.updated_at,
        progress=view.progress,
        state_count=view.state_count,
        final=view.final,
        reboots=record.reboots,
        action_id=record.action_id,
        duration_seconds=record.elapsed,
        last_error=record.last_error,
    )


def start_result_to_pb(result: StartResult) -> agent_pb2.StartActionResult:
    """An item of StartActions: code 0 and the action, or StartAction's status code and message."""
    if result.error is not None:
        return agent_pb2.StartActionResult(
            node_name=result.node_name,
            code=status_code(result.error).value[0],
            message=result.error.message,
        )
    assert result.view is not None, "a result without an error has a view"
    return agent_pb2.StartActionResult(node_name=result.node_name, action=action_to_pb(result.view))


def environment_to_pb(env: Environment) -> agent_pb2.Environment:
    return agent_pb2.Environment(
        name=env.name,
        description=env.description,
        image=env.image,
        size_bytes=env.size_bytes,
        default_user=env.default_user,
        properties=dict(env.properties),
    )


def environment_from_pb(message: agent_pb2.Environment) -> Environment:
    return Environment(
        name=message.name,
        description=message.description,
        image=message.image,
        size_bytes=message.size_bytes,
        default_user=message.default_user,
        properties=dict(message.properties),
    )


class AgentServicer(agent_pb2_grpc.AgentServicer):
    def __init__(self, service: AgentService) -> None:
        self._service = service

    @_maps_errors
    async def GetNodes(self, request, context):
        nodes = await self._service.get_nodes(list(request.node_names))
        return agent_pb2.GetNodesResponse(nodes=[node_to_pb(node) for node in nodes])

    @_maps_errors
    async def StartAction(self, request, context):
        view = await self._service.start_action(
            request.node_name, request.process, request.environment, dict(request.properties)
        )
        return agent_pb2.StartActionResponse(action=action_to_pb(view))

    @_maps_errors
    async def StartActions(self, request, context):
        results = await self._service.start_actions([
            StartItem(item.node_name, item.process, item.environment, dict(item.properties))
            for item in request.actions
        ])
        return agent_pb2.StartActionsResponse(results=[start_result_to_pb(r) for r in results])

    @_maps_errors
    async def GetActionState(self, request, context):
        views = await self._service.get_action_states(list(request.node_names))
        return agent_pb2.GetActionStateResponse(actions=[action_to_pb(view) for view in views])

    @_maps_errors
    async def DescribeNodeType(self, request, context):
        description = await self._service.describe()
        return agent_pb2.DescribeNodeTypeResponse(
            agent_name=description.agent_name,
            type=description.type,
            processes=[
                agent_pb2.Process(name=name, states=states)
                for name, states in description.processes.items()
            ],
            properties=[
                agent_pb2.PropertySpec(
                    name=spec.name,
                    required=spec.required,
                    values=list(spec.values),
                    secret=spec.secret,
                    description=spec.description,
                    label=spec.label,
                    help=spec.help,
                    min_length=spec.min_length,
                    max_length=spec.max_length,
                    pattern=spec.pattern,
                )
                for spec in description.properties
            ],
            final_states=list(description.final_states),
        )

    @_maps_errors
    async def ListEnvironments(self, request, context):
        environments = await self._service.list_environments()
        return agent_pb2.ListEnvironmentsResponse(
            environments=[environment_to_pb(env) for env in environments]
        )

    @_maps_errors
    async def PutEnvironment(self, request, context):
        if not request.HasField("environment"):
            raise InvalidArgument("environment is missing")
        env = await self._service.put_environment(environment_from_pb(request.environment))
        return agent_pb2.PutEnvironmentResponse(environment=environment_to_pb(env))

    @_maps_errors
    async def RemoveEnvironment(self, request, context):
        await self._service.remove_environment(request.name)
        return agent_pb2.RemoveEnvironmentResponse()

    @_maps_errors
    async def AddNode(self, request, context):
        node = await self._service.add_node(request.node_name, dict(request.properties))
        return agent_pb2.AddNodeResponse(node=node_to_pb(node))

    @_maps_errors
    async def RemoveNode(self, request, context):
        await self._service.remove_node(request.node_name)
        return agent_pb2.RemoveNodeResponse()

    @_maps_errors
    async def RenameNode(self, request, context):
        node = await self._service.rename_node(request.node_name, request.new_name)
        return agent_pb2.RenameNodeResponse(node=node_to_pb(node))


async def build_server(
    service: AgentService,
    token: str,
    listen: str,
    credentials: grpc.ServerCredentials | None = None,
    *,
    log_calls: bool = False,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Creates and binds the server (not started); returns it, the bound port and the health
    servicer (set to NOT_SERVING when the agent stops). With `credentials` (server_credentials)
    the port speaks TLS only; without, plaintext. With `log_calls`, one log line per call
    (CallLog)."""
    # Without SO_REUSEPORT a second agent configured on the same port fails to start instead of
    # silently sharing the port with the first.
    server = grpc.aio.server(
        interceptors=[*([CallLog()] if log_calls else []), TokenInterceptor(token), MalformedRequests()],
        options=[("grpc.so_reuseport", 0)],
    )
    agent_pb2_grpc.add_AgentServicer_to_server(AgentServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
         reflection.SERVICE_NAME),
        server,
    )
    if credentials is None:
        port = server.add_insecure_port(listen)
    else:
        port = server.add_secure_port(listen, credentials)
    return server, port, health_servicer


def server_credentials(
    certificate_chain: bytes, private_key: bytes, client_ca: bytes | None = None
) -> grpc.ServerCredentials:
    """TLS credentials from PEM bytes; with `client_ca`, mutual TLS: a caller without a
    certificate that client_ca signed is refused during the handshake, before any call (and so
    before the token is even read)."""
    return grpc.ssl_server_credentials(
        [(private_key, certificate_chain)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
