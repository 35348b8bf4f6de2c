from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Node(_message.Message):
    __slots__ = ("name", "properties")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    properties: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., properties: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetNodesRequest(_message.Message):
    __slots__ = ("node_names",)
    NODE_NAMES_FIELD_NUMBER: _ClassVar[int]
    node_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_names: _Optional[_Iterable[str]] = ...) -> None: ...

class GetNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...

class StartActionRequest(_message.Message):
    __slots__ = ("node_name", "process", "environment", "properties")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    process: str
    environment: str
    properties: _containers.ScalarMap[str, str]
    def __init__(self, node_name: _Optional[str] = ..., process: _Optional[str] = ..., environment: _Optional[str] = ..., properties: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StartActionResponse(_message.Message):
    __slots__ = ("action",)
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: ActionState
    def __init__(self, action: _Optional[_Union[ActionState, _Mapping]] = ...) -> None: ...

class StartActionsRequest(_message.Message):
    __slots__ = ("actions",)
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedCompositeFieldContainer[StartActionRequest]
    def __init__(self, actions: _Optional[_Iterable[_Union[StartActionRequest, _Mapping]]] = ...) -> None: ...

class StartActionResult(_message.Message):
    __slots__ = ("node_name", "code", "message", "action")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    code: int
    message: str
    action: ActionState
    def __init__(self, node_name: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., action: _Optional[_Union[ActionState, _Mapping]] = ...) -> None: ...

class StartActionsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StartActionResult]
    def __init__(self, results: _Optional[_Iterable[_Union[StartActionResult, _Mapping]]] = ...) -> None: ...

class GetActionStateRequest(_message.Message):
    __slots__ = ("node_names",)
    NODE_NAMES_FIELD_NUMBER: _ClassVar[int]
    node_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_names: _Optional[_Iterable[str]] = ...) -> None: ...

class GetActionStateResponse(_message.Message):
    __slots__ = ("actions",)
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedCompositeFieldContainer[ActionState]
    def __init__(self, actions: _Optional[_Iterable[_Union[ActionState, _Mapping]]] = ...) -> None: ...

class ActionState(_message.Message):
    __slots__ = ("node_name", "node_ip", "environment", "process", "state", "state_idx", "updated_at", "progress", "state_count", "final", "reboots", "action_id", "duration_seconds", "last_error")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    NODE_IP_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_IDX_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    REBOOTS_FIELD_NUMBER: _ClassVar[int]
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    node_ip: str
    environment: str
    process: str
    state: str
    state_idx: int
    updated_at: int
    progress: int
    state_count: int
    final: bool
    reboots: int
    action_id: int
    duration_seconds: float
    last_error: str
    def __init__(self, node_name: _Optional[str] = ..., node_ip: _Optional[str] = ..., environment: _Optional[str] = ..., process: _Optional[str] = ..., state: _Optional[str] = ..., state_idx: _Optional[int] = ..., updated_at: _Optional[int] = ..., progress: _Optional[int] = ..., state_count: _Optional[int] = ..., final: _Optional[bool] = ..., reboots: _Optional[int] = ..., action_id: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., last_error: _Optional[str] = ...) -> None: ...

class DescribeNodeTypeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Process(_message.Message):
    __slots__ = ("name", "states")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    name: str
    states: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., states: _Optional[_Iterable[str]] = ...) -> None: ...

class PropertySpec(_message.Message):
    __slots__ = ("name", "required", "values", "secret", "description", "label", "help", "min_length", "max_length", "pattern")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    HELP_FIELD_NUMBER: _ClassVar[int]
    MIN_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    name: str
    required: bool
    values: _containers.RepeatedScalarFieldContainer[str]
    secret: bool
    description: str
    label: str
    help: str
    min_length: int
    max_length: int
    pattern: str
    def __init__(self, name: _Optional[str] = ..., required: _Optional[bool] = ..., values: _Optional[_Iterable[str]] = ..., secret: _Optional[bool] = ..., description: _Optional[str] = ..., label: _Optional[str] = ..., help: _Optional[str] = ..., min_length: _Optional[int] = ..., max_length: _Optional[int] = ..., pattern: _Optional[str] = ...) -> None: ...

class DescribeNodeTypeResponse(_message.Message):
    __slots__ = ("agent_name", "type", "processes", "properties", "final_states")
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    FINAL_STATES_FIELD_NUMBER: _ClassVar[int]
    agent_name: str
    type: str
    processes: _containers.RepeatedCompositeFieldContainer[Process]
    properties: _containers.RepeatedCompositeFieldContainer[PropertySpec]
    final_states: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_name: _Optional[str] = ..., type: _Optional[str] = ..., processes: _Optional[_Iterable[_Union[Process, _Mapping]]] = ..., properties: _Optional[_Iterable[_Union[PropertySpec, _Mapping]]] = ..., final_states: _Optional[_Iterable[str]] = ...) -> None: ...

class ListEnvironmentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Environment(_message.Message):
    __slots__ = ("name", "description", "image", "size_bytes", "default_user", "properties")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_USER_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    image: str
    size_bytes: int
    default_user: str
    properties: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., image: _Optional[str] = ..., size_bytes: _Optional[int] = ..., default_user: _Optional[str] = ..., properties: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListEnvironmentsResponse(_message.Message):
    __slots__ = ("environments",)
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    environments: _containers.RepeatedCompositeFieldContainer[Environment]
    def __init__(self, environments: _Optional[_Iterable[_Union[Environment, _Mapping]]] = ...) -> None: ...

class PutEnvironmentRequest(_message.Message):
    __slots__ = ("environment",)
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    environment: Environment
    def __init__(self, environment: _Optional[_Union[Environment, _Mapping]] = ...) -> None: ...

class PutEnvironmentResponse(_message.Message):
    __slots__ = ("environment",)
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    environment: Environment
    def __init__(self, environment: _Optional[_Union[Environment, _Mapping]] = ...) -> None: ...

class RemoveEnvironmentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveEnvironmentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AddNodeRequest(_message.Message):
    __slots__ = ("node_name", "properties")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    properties: _containers.ScalarMap[str, str]
    def __init__(self, node_name: _Optional[str] = ..., properties: _Optional[_Mapping[str, str]] = ...) -> None: ...

class AddNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...

class RemoveNodeRequest(_message.Message):
    __slots__ = ("node_name",)
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    def __init__(self, node_name: _Optional[str] = ...) -> None: ...

class RemoveNodeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RenameNodeRequest(_message.Message):
    __slots__ = ("node_name", "new_name")
    NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    NEW_NAME_FIELD_NUMBER: _ClassVar[int]
    node_name: str
    new_name: str
    def __init__(self, node_name: _Optional[str] = ..., new_name: _Optional[str] = ...) -> None: ...

class RenameNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: Node
    def __init__(self, node: _Optional[_Union[Node, _Mapping]] = ...) -> None: ...
