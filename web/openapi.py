"""The OpenAPI 3.0 description of /api/v1, served at /api/v1/openapi.json.

Written by hand next to web/api.py; a test checks that every route in the router appears here
and that the document validates against the OpenAPI 3.0 schema.
"""

from __future__ import annotations

import copy
from typing import Any

from edgebed.controller.lifecycle import Ended, EndReason, Status
from edgebed.controller.reservations import (
    ADMIN_STATUSES,
    HISTORY_LIMIT,
    MAX_NODES_PER_REQUEST,
    PAGE_DEFAULT,
    PAGE_LIMIT,
)
from edgebed.controller.validation import (
    LATEST_START,
    LATEST_START_TEXT,
    MAX_PASSWORD_LENGTH,
    MIN_DURATION_HOURS,
    MIN_PASSWORD_LENGTH,
    START_SLACK_SECONDS,
)
from edgebed.web.forms import MAX_LIST, MAX_LONG, MAX_SHORT

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_FLAG = {"type": "boolean", "nullable": True}
_USER_UPDATE_FLAGS = ("is_authorized", "is_admin", "authorized", "admin", "confirmed_email")
# A property's value: text, or a number (written out as text).
_PROPERTY_VALUE = {"oneOf": [{"type": "string", "maxLength": MAX_LONG}, {"type": "number"}]}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "what is wrong"},
            "fields": {
                **_STRING_MAP,
                "description": (
                    "when the error is about named inputs (PUT /reservations/{node}: action "
                    "properties): input name -> what is wrong with it; the error names them all"
                ),
            },
        },
    },
    "Node": {
        "type": "object",
        "required": ["name", "agent", "type", "properties", "connected"],
        "properties": {
            "name": {"type": "string"},
            "agent": {"type": "string"},
            "type": {"type": "string", "enum": ["raspberry", "node", "sensor"]},
            "properties": _STRING_MAP,
            "connected": {"type": "boolean"},
            "maintenance": {
                "type": "object",
                "nullable": True,
                "description": "null, or why the node is in maintenance (never given to a new "
                "reservation until an administrator releases it) and since when",
                "required": ["reason", "since"],
                "properties": {
                    "reason": {"type": "string"},
                    "since": {"type": "integer", "format": "int64", "description": "epoch seconds"},
                },
            },
            "retiring": {
                "type": "boolean",
                "description": "an administrator removes the node or its agent once its reservations are "
                "destroyed; it takes no new reservation",
            },
        },
    },
    "Environment": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "description": {"type": "string"},
            "image": {"type": "string"},
            "size_bytes": {"type": "integer", "format": "int64"},
            "default_user": {"type": "string"},
            "properties": _STRING_MAP,
            "agent": {"type": "string"},
        },
    },
    "PropertySpec": {
        "type": "object",
        "required": ["name", "required", "values", "secret"],
        "properties": {
            "name": {"type": "string"},
            "required": {"type": "boolean"},
            "values": {"type": "array", "items": {"type": "string"}},
            "secret": {"type": "boolean", "description": "never shown back or logged (os_password)"},
            "description": {"type": "string"},
            "label": {"type": "string", "description": "the form's name for it; empty: the name"},
            "help": {"type": "string", "description": 'what a valid value looks like, after "must be"'},
            "min_length": {"type": "integer", "minimum": 0, "description": "characters; 0 = no bound"},
            "max_length": {"type": "integer", "minimum": 0, "description": "characters; 0 = no bound"},
            "pattern": {
                "type": "string",
                "description": (
                    "Python regular expression the whole value must match; empty = any. Applied "
                    "when the value is set unless outside the safe subset (then only by the agent)"
                ),
            },
        },
    },
    "NodeType": {
        "type": "object",
        "required": ["processes", "properties"],
        "properties": {
            "processes": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string"}},
                "description": "process name (deploy, reboot, destroy) -> ordered state names",
            },
            "properties": {"type": "array", "items": {"$ref": "#/components/schemas/PropertySpec"}},
            "final_states": {"type": "array", "items": {"type": "string"}},
        },
    },
    "ExtendRequest": {
        "type": "object",
        "properties": {
            "hours": {
                "type": "number",
                "minimum": 0.01,
                "nullable": True,
                "description": "how many hours later the reservation ends (at least 0.01, at most "
                "[reservations] extend_cap_hours); absent or null: the duration doubles",
            },
        },
        "additionalProperties": False,
    },
    "Reserved": {
        "type": "object",
        "required": ["nodes"],
        "properties": {"nodes": {"type": "array", "items": {"type": "string"}}},
    },
    "Reservation": {
        "type": "object",
        "required": [
            "node_name", "bin", "start_date", "end_date", "status", "action_state", "progress",
        ],
        "properties": {
            "node_name": {"type": "string"},
            "bin": {"type": "string"},
            "start_date": {"type": "integer", "format": "int64"},
            "end_date": {"type": "integer", "format": "int64"},
            "status": {"type": "string", "enum": [status.value for status in Status]},
            "action_state": {"type": "string"},
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "process": {"type": "string"},
            "state_idx": {"type": "integer"},
            "state_count": {"type": "integer"},
            "node_ip": {"type": "string"},
            "default_user": {"type": "string"},
            "agent": {"type": "string"},
            "type": {"type": "string"},
            "properties": _STRING_MAP,
            "missing_properties": {
                "type": "array",
                "items": {"type": "string"},
                "description": "required properties not set yet: the reservation stays configuring until none",
            },
            "last_error": {
                "type": "string",
                "description": (
                    "why the last action the controller asked the agent for was refused or failed "
                    "(e.g. a deploy refused for a property); empty once a later one is accepted"
                ),
            },
            "action_error": {
                "type": "string",
                "description": (
                    "the last error the agent's driver reported during the node's current action "
                    "(a failed power switch, a checksum mismatch, an SSH login refused; for a lost "
                    "action, why it was lost), one line of at most 1,024 characters without "
                    "credentials; empty when nothing failed or a new action started"
                ),
            },
            "owner": {"type": "string"},
            "pending": {"type": "string", "description": "the process intended and not yet started"},
            "ending": {"type": "boolean", "description": "the window is over or it was ended: being destroyed"},
            "notice": {"type": "string", "description": "what an administrator did to it (moved, ended)"},
            "node_maintenance": {
                "type": "string",
                "description": "why its node is in maintenance ('' when not): a reservation not started "
                "yet is not deployed until an administrator releases the node or moves it",
            },
        },
    },
    "EndedReservation": {
        "type": "object",
        "description": "an ended reservation, kept as history",
        "required": ["id", "node_name", "owner", "start_date", "end_date", "ended", "end_reason", "ended_at"],
        "properties": {
            "id": {"type": "integer", "format": "int64", "description": "pass as `before` for older ones"},
            "node_name": {"type": "string"},
            "owner": {"type": "string"},
            "bin": {"type": "string"},
            "start_date": {"type": "integer", "format": "int64"},
            "end_date": {"type": "integer", "format": "int64", "description": "when the window closed"},
            "environment": {"type": "string"},
            "outcome": {"type": "string", "description": "final state of its last action ('' none ran)"},
            "ended": {"type": "string", "enum": [e.value for e in Ended], "description": "how it ended"},
            "end_reason": {"type": "string", "enum": [r.value for r in EndReason], "description": "why"},
            "ended_by": {"type": "string", "description": "who ended it ('' its window ended)"},
            "ended_at": {"type": "integer", "format": "int64"},
            "last_error": {"type": "string"},
        },
    },
    "Maintenance": {
        "type": "object",
        "required": ["node_name", "reason", "since", "set_by", "lost_in_a_row"],
        "properties": {
            "node_name": {"type": "string"},
            "reason": {"type": "string"},
            "since": {"type": "integer", "format": "int64"},
            "set_by": {"type": "string", "description": "an administrator's email, or edgebed"},
            "lost_in_a_row": {"type": "integer", "description": "its last actions that ended lost"},
            "agent": {"type": "string", "description": "the agent listing it ('' none does)"},
        },
    },
    "MaintenanceRequest": {
        "type": "object",
        "required": ["reason"],
        "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 500}},
        "additionalProperties": False,
    },
    "Move": {
        "type": "object",
        "description": "{} or no body: the first free node of the same type matching the filter the "
        "reservation was made with",
        "properties": {"to": {"type": "string", "description": "the node to move it to"}},
        "additionalProperties": False,
    },
    "Removal": {
        "type": "object",
        "required": ["kind", "name", "removed", "waiting_for"],
        "properties": {
            "kind": {"type": "string", "enum": ["agent", "node"]},
            "name": {"type": "string"},
            "removed": {"type": "boolean"},
            "waiting_for": {
                "type": "array",
                "description": "the reservations being destroyed first",
                "items": {
                    "type": "object",
                    "properties": {"node_name": {"type": "string"}, "owner": {"type": "string"}},
                },
            },
        },
    },
    "Configuration": {
        "type": "object",
        "description": (
            "bin, environment and the node type's other properties (see /nodetypes); property "
            "names of at most 64 characters; an empty string unsets one. Each value is checked "
            "against its property's constraints: a 400 then names every wrong property in "
            "`fields`, and nothing is changed"
        ),
        "properties": {
            "bin": {"type": "string", "maxLength": 64, "nullable": True, "description": "null: unchanged"},
            "environment": {**_PROPERTY_VALUE, "description": "the environment to deploy"},
        },
        "additionalProperties": _PROPERTY_VALUE,
        "maxProperties": 100,
    },
    "User": {
        "type": "object",
        "required": ["email", "confirmed_email", "is_authorized", "is_admin"],
        "properties": {
            "email": {"type": "string"},
            "ssh_key": {"type": "string"},
            "confirmed_email": {"type": "boolean"},
            "is_authorized": {"type": "boolean"},
            "is_admin": {"type": "boolean"},
            "created_at": {"type": "integer", "format": "int64"},
        },
    },
    "UserCreate": {
        "type": "object",
        "required": ["email", "password"],
        "description": "is_admin and is_authorized are the same as admin and authorized; null is false",
        "properties": {
            "email": {"type": "string", "maxLength": MAX_SHORT},
            "password": {"type": "string", "minLength": MIN_PASSWORD_LENGTH, "maxLength": MAX_PASSWORD_LENGTH},
            **{flag: _FLAG for flag in ("admin", "authorized", "is_admin", "is_authorized")},
        },
        "additionalProperties": False,
    },
    "PasswordChange": {
        "type": "object",
        "required": ["old_password", "new_password"],
        "properties": {
            "old_password": {"type": "string"},
            "new_password": {"type": "string", "minLength": 8},
            "keep_api_tokens": {
                "type": "boolean",
                "default": False,
                "description": "keep the account's API tokens; otherwise all are revoked, this call's too",
            },
        },
        "additionalProperties": False,
    },
    "PasswordChanged": {
        "type": "object",
        "required": ["api_tokens_revoked", "sessions_ended"],
        "properties": {
            "api_tokens_revoked": {"type": "integer", "minimum": 0},
            "sessions_ended": {"type": "boolean", "description": "every login session of the account ended"},
        },
    },
    "UserUpdate": {
        "type": "object",
        "description": (
            "admin and authorized are the same as is_admin and is_authorized (which win when both "
            "are given); null leaves a flag as it is; at least one flag must be true or false. "
            "confirmed_email: an administrator confirms the address (no mail server, lost mail)"
        ),
        "properties": {flag: _FLAG for flag in _USER_UPDATE_FLAGS},
        "additionalProperties": False,
        "anyOf": [{"required": [flag], "properties": {flag: {"type": "boolean"}}} for flag in _USER_UPDATE_FLAGS],
    },
    "Agent": {
        "type": "object",
        "required": ["name", "type", "ip", "port", "status"],
        "properties": {
            "name": {"type": "string"},
            "type": {"type": "string", "enum": ["raspberry", "node", "sensor"]},
            "ip": {"type": "string"},
            "port": {"type": "integer"},
            "status": {"type": "string", "enum": ["connected", "disconnected"]},
            "last_error": {"type": "string"},
            "node_count": {"type": "integer"},
            "tls": {"type": "boolean", "description": "calls go over TLS (a CA is set for the agent)"},
        },
    },
    "AgentCreate": {
        "type": "object",
        "required": ["name", "type", "ip", "port", "token"],
        "properties": {
            "name": {"type": "string", "maxLength": 64},
            "type": {"type": "string", "enum": ["raspberry", "node", "sensor"]},
            "ip": {"type": "string", "maxLength": 255},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "token": {"type": "string", "maxLength": 1024, "description": "the agent's token (never shown back)"},
            "ca_pem": {
                "type": "string",
                "maxLength": 65536,
                "nullable": True,
                "description": (
                    "PEM certificate(s) the agent's TLS certificate must chain to: the CA that issued it "
                    "(edgebed tls ca), or the agent's own certificate, pinned. Calls then go over TLS and "
                    "the certificate must name `ip`; absent, null or empty: plaintext"
                ),
            },
        },
        "additionalProperties": False,
    },
    "ClockStatus": {
        "type": "object",
        "required": ["paused", "offset_seconds", "paused_since", "max_jump_seconds", "wall_time"],
        "description": (
            "The scheduler's clock guard: while paused (the wall clock jumped against the monotonic "
            "clock by more than max_jump_seconds), no reservation starts or ends"
        ),
        "properties": {
            "paused": {"type": "boolean"},
            "offset_seconds": {"type": "number", "description": "positive: the wall clock jumped forward"},
            "paused_since": {"type": "integer", "format": "int64", "nullable": True,
                             "description": "epoch seconds (by the wall clock then); null when not paused"},
            "max_jump_seconds": {"type": "number"},
            "wall_time": {"type": "integer", "format": "int64", "description": "the wall clock, epoch seconds"},
        },
        "additionalProperties": False,
    },
}


def _reservation_request(min_duration_hours: float, max_duration_hours: float) -> dict[str, Any]:
    """POST /reservations: the window's bounds are controller.validation's (and the setting's),
    the same the service checks and the reserve form states."""
    return {
        "type": "object",
        "required": ["start_date", "duration_hours"],
        "description": 'Either "nodes", or "count" with an optional "filter"; never both.',
        "properties": {
            "nodes": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": MAX_LIST},
            "filter": {
                "type": "object",
                "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "number"}]},
                "maxProperties": 100,
                "description": "property -> wanted value; 'type', 'agent' and 'name' match the node's",
            },
            "count": {"type": "integer", "minimum": 1, "maximum": MAX_NODES_PER_REQUEST},
            "start_date": {
                "type": "integer",
                "format": "int64",
                "minimum": 0,
                "maximum": LATEST_START,
                "exclusiveMaximum": True,
                "description": (
                    f"epoch seconds, UTC; before {LATEST_START_TEXT}, and not more than "
                    f"{START_SLACK_SECONDS} s in the past"
                ),
            },
            "duration_hours": {
                "type": "number",
                "minimum": min_duration_hours,
                "maximum": max_duration_hours,
                "description": f"at least {min_duration_hours:g} hours, at most {max_duration_hours:g} "
                "([reservations] min_duration_hours, max_duration_hours)",
            },
        },
        "additionalProperties": False,
        "oneOf": [
            {"required": ["nodes"], "not": {"anyOf": [{"required": ["filter"]}, {"required": ["count"]}]}},
            {"required": ["count"], "not": {"required": ["nodes"]}},
        ],
    }


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _paged(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A 200 of one page of a list, with the Link header to the next."""
    return {**_json(schema, description), "headers": _NEXT}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "bad input; the message says what is wrong",
        401: "missing or wrong bearer token",
        403: "not allowed (account awaiting approval, or not an administrator)",
        404: "no such thing (or not yours)",
        409: "conflict (taken, already exists, or not possible now)",
        502: "the agent in charge answered with a reply the controller refused (see its last_error)",
        503: "unavailable: the agent in charge does not answer, or the disk holding the database is full "
        "(Retry-After); nothing was changed",
    }
    return {str(status): _json(_ref("Error"), text[status]) for status in statuses}


def _body(schema_name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema_name)}}}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_SHORT}}


def _query_param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


_NODE = _path_param("node", "node name")
_EMAIL = _path_param("email", "the user's email")
_AGENT = _path_param("name", "agent name")
_OWNER = _path_param("owner", "the owner's email")
_AUTH = (401, 403)
_STATE = _query_param(
    "state", "current (default): reservations now; ended: the history, newest first",
    {"type": "string", "enum": ["current", "ended"]},
)
_LIMIT = _query_param(
    "limit",
    f"at most this many rows (default {PAGE_DEFAULT}, at most {PAGE_LIMIT}; state=ended: default "
    f"100, at most {HISTORY_LIMIT}); a 400 outside that range",
    {"type": "integer", "minimum": 1, "maximum": PAGE_LIMIT},
)
_LIMIT_NODES = _query_param(
    "limit", f"at most this many nodes (default {PAGE_DEFAULT}, at most {PAGE_LIMIT}); a 400 outside that range",
    {"type": "integer", "minimum": 1, "maximum": PAGE_LIMIT},
)
_LIMIT_ROWS = _query_param(
    "limit", f"at most this many rows (default {PAGE_DEFAULT}, at most {PAGE_LIMIT}); a 400 outside that range",
    {"type": "integer", "minimum": 1, "maximum": PAGE_LIMIT},
)
_CURSOR = _query_param(
    "cursor",
    "the next page: pass back the cursor of the previous response's Link header (rel=\"next\"), "
    "with the same other parameters. Opaque; a malformed cursor or one of another list is a 400. "
    "Pages are in a stable order on keys that do not change (current: by node name for the "
    "caller's, by start date, node and owner for an administrator's; ended: newest first; nodes and "
    "agents by name; users awaiting approval first, then oldest first), so a "
    "row added while a client pages is on a later page when its key is after the cursor and on "
    "none otherwise: no row is ever repeated or skipped",
)
_BEFORE = _query_param("before", "state=ended: only entries older than this entry id (or page with cursor)",
                       {"type": "integer", "minimum": 1})
_NEXT = {
    "Link": {
        "description": (
            "present when more rows follow: '<URL>; rel=\"next\"', URL (relative to the server) "
            "being this request with the next page's cursor; absent on the last page"
        ),
        "schema": {"type": "string"},
    }
}
_FORCE = _query_param(
    "force", "true: end its reservations with a destroy first (202) instead of refusing (409)",
    {"type": "boolean"},
)
# anyOf, not oneOf: an empty list is both (schemathesis found it).
_CURRENT_OR_ENDED = {
    "anyOf": [
        {"type": "array", "items": {"$ref": "#/components/schemas/Reservation"}},
        {"type": "array", "items": {"$ref": "#/components/schemas/EndedReservation"}},
    ]
}


def _paths() -> dict[str, Any]:
    act: dict[str, Any] = {
        action: {
            "post": {
                "operationId": f"{action}Reservation",
                "summary": f"{action} one reserved node",
                "tags": ["reservations"],
                "parameters": [_NODE],
                "responses": {
                    "200": _json(_ref("Reservation"), "the reservation after the request"),
                    **_errors(400, *_AUTH, 404, 409, 502, 503),
                },
            }
        }
        for action in ("reboot", "deploy", "destroy", "extend")
    }
    extend = act["extend"]["post"]
    extend["summary"] = "extend one reserved node: by `hours`, or without a body double its duration"
    extend["description"] = (
        "With {\"hours\": N} the reservation ends N hours later; without a body (or without"
        " hours) its duration doubles, as before. Either way the whole reservation lasts at most"
        " [reservations] extend_cap_hours; 409 says how many hours are left, or that the next"
        " reservation on the node is in the way. The new end is the answer's end_date."
    )
    extend["requestBody"] = {
        "required": False,
        "content": {"application/json": {"schema": _ref("ExtendRequest")}},
    }
    paths: dict[str, Any] = {
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "this document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.0 document",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}},
            }
        },
        "/nodes": {
            "get": {
                "operationId": "listNodes",
                "summary": "every node of the testbed with its properties, by name, a page at a time",
                "tags": ["inventory"],
                "parameters": [_LIMIT_NODES, _CURSOR],
                "responses": {
                    "200": _paged({"type": "array", "items": _ref("Node")}, "one page of nodes, by name"),
                    **_errors(400, *_AUTH),
                },
            }
        },
        "/environments": {
            "get": {
                "operationId": "listEnvironments",
                "summary": "the environments each node type can deploy",
                "tags": ["inventory"],
                "responses": {
                    "200": _json(
                        {"type": "object",
                         "additionalProperties": {"type": "array", "items": _ref("Environment")}},
                        "node type -> environments",
                    ),
                    **_errors(*_AUTH),
                },
            }
        },
        "/nodetypes": {
            "get": {
                "operationId": "listNodeTypes",
                "summary": "each node type's processes and the properties users set",
                "tags": ["inventory"],
                "responses": {
                    "200": _json({"type": "object", "additionalProperties": _ref("NodeType")},
                                 "node type -> description"),
                    **_errors(*_AUTH),
                },
            }
        },
        "/reservations": {
            "get": {
                "operationId": "listReservations",
                "summary": "the caller's reservations, or with state=ended their ended ones",
                "tags": ["reservations"],
                "parameters": [_STATE, _LIMIT, _CURSOR, _BEFORE],
                "responses": {
                    "200": _paged(_CURRENT_OR_ENDED, "one page of Reservation objects by node name, or "
                                  "EndedReservation with state=ended, newest first"),
                    **_errors(400, *_AUTH),
                },
            },
            "post": {
                "operationId": "reserve",
                "summary": "reserve named nodes, or N nodes matching a filter",
                "tags": ["reservations"],
                "requestBody": _body("ReservationRequest"),
                "responses": {
                    "201": _json(_ref("Reserved"), "the reserved node names"),
                    **_errors(400, *_AUTH, 409, 502, 503),
                },
            },
        },
        "/reservations/{node}": {
            "get": {
                "operationId": "getReservation",
                "summary": "one of the caller's reservations",
                "tags": ["reservations"],
                "parameters": [_NODE],
                "responses": {
                    "200": _json(_ref("Reservation"), "the reservation"),
                    **_errors(400, *_AUTH, 404),
                },
            },
            "put": {
                "operationId": "configureReservation",
                "summary": "set the bin and the properties for the deploy",
                "tags": ["reservations"],
                "parameters": [_NODE],
                "requestBody": _body("Configuration"),
                "responses": {
                    "200": _json(
                        _ref("Reservation"),
                        "the reservation: ready when complete, else configuring with missing_properties",
                    ),
                    **_errors(400, *_AUTH, 404, 409, 503),
                },
            },
        },
        **{f"/reservations/{{node}}/{action}": item for action, item in act.items()},
        "/account/password": {
            "post": {
                "operationId": "changePassword",
                "summary": (
                    "change the caller's password; ends every login session and revokes the "
                    "API tokens unless kept"
                ),
                "tags": ["account"],
                "requestBody": _body("PasswordChange"),
                "responses": {
                    "200": _json(_ref("PasswordChanged"), "the password was changed"),
                    **_errors(400, *_AUTH, 409, 503),
                },
            }
        },
        "/admin/users": {
            "get": {
                "operationId": "listUsers",
                "summary": "every account, pending sign-ups first, then oldest first, a page at a time",
                "tags": ["admin"],
                "parameters": [_LIMIT_ROWS, _CURSOR],
                "responses": {
                    "200": _paged({"type": "array", "items": _ref("User")}, "one page of users"),
                    **_errors(400, *_AUTH),
                },
            },
            "post": {
                "operationId": "createUser",
                "summary": "create an account",
                "tags": ["admin"],
                "requestBody": _body("UserCreate"),
                "responses": {
                    "201": _json(_ref("User"), "the new account"),
                    **_errors(400, *_AUTH, 409, 503),
                },
            },
        },
        "/admin/users/{email}": {
            "patch": {
                "operationId": "updateUser",
                "summary": "authorize or revoke, promote or demote",
                "tags": ["admin"],
                "parameters": [_EMAIL],
                "requestBody": _body("UserUpdate"),
                "responses": {
                    "200": _json(_ref("User"), "the account after the change"),
                    **_errors(400, *_AUTH, 404, 409, 503),
                },
            },
            "delete": {
                "operationId": "deleteUser",
                "summary": "delete an account and its reservations",
                "tags": ["admin"],
                "parameters": [_EMAIL],
                "responses": {"204": {"description": "deleted"}, **_errors(400, *_AUTH, 404, 409, 503)},
            },
        },
        "/admin/agents": {
            "get": {
                "operationId": "listAgents",
                "summary": "the registered agents (never their tokens), by name, a page at a time",
                "tags": ["admin"],
                "parameters": [_LIMIT_ROWS, _CURSOR],
                "responses": {
                    "200": _paged({"type": "array", "items": _ref("Agent")}, "one page of agents, by name"),
                    **_errors(400, *_AUTH),
                },
            },
            "post": {
                "operationId": "addAgent",
                "summary": "register an agent (kept disconnected when it does not answer)",
                "tags": ["admin"],
                "requestBody": _body("AgentCreate"),
                "responses": {
                    "201": _json(_ref("Agent"), "the agent"),
                    **_errors(400, *_AUTH, 409, 503),
                },
            },
        },
        "/admin/agents/{name}/reconnect": {
            "post": {
                "operationId": "reconnectAgent",
                "summary": "call a disconnected agent again",
                "tags": ["admin"],
                "parameters": [_AGENT],
                "responses": {
                    "200": _json(_ref("Agent"), "the agent, connected or with its last error"),
                    **_errors(400, *_AUTH, 404, 503),
                },
            }
        },
        "/admin/agents/{name}": {
            "delete": {
                "operationId": "deleteAgent",
                "summary": "forget an agent; refused (409, saying which) while its nodes have reservations",
                "tags": ["admin"],
                "parameters": [_AGENT, _FORCE],
                "responses": {
                    "204": {"description": "deleted"},
                    "202": _json(_ref("Removal"), "force: its reservations are being destroyed; the agent is "
                                 "removed once they are gone"),
                    **_errors(400, *_AUTH, 404, 409, 503),
                },
            }
        },
        "/admin/nodes/{node}": {
            "delete": {
                "operationId": "deleteNode",
                "summary": "remove a node on its agent; refused (409, saying which) while it has reservations",
                "tags": ["admin"],
                "parameters": [_NODE, _FORCE],
                "responses": {
                    "204": {"description": "removed"},
                    "202": _json(_ref("Removal"), "force: its reservations are being destroyed; the node is "
                                 "removed once they are gone"),
                    **_errors(400, *_AUTH, 404, 409, 503),
                },
            }
        },
        "/admin/maintenance": {
            "get": {
                "operationId": "listMaintenance",
                "summary": "the nodes in maintenance",
                "tags": ["admin"],
                "responses": {
                    "200": _json({"type": "array", "items": _ref("Maintenance")}, "nodes in maintenance"),
                    **_errors(*_AUTH),
                },
            }
        },
        "/admin/nodes/{node}/maintenance": {
            "put": {
                "operationId": "enterMaintenance",
                "summary": "put a node in maintenance: no new reservation gets it until it is released",
                "tags": ["admin"],
                "parameters": [_NODE],
                "requestBody": _body("MaintenanceRequest"),
                "responses": {
                    "200": _json(_ref("Maintenance"), "the node's maintenance"),
                    **_errors(400, *_AUTH, 404, 503),
                },
            },
            "delete": {
                "operationId": "releaseMaintenance",
                "summary": "take a node out of maintenance",
                "tags": ["admin"],
                "parameters": [_NODE],
                "responses": {"204": {"description": "released"}, **_errors(400, *_AUTH, 404, 503)},
            },
        },
        "/admin/reservations": {
            "get": {
                "operationId": "listAllReservations",
                "summary": "every current reservation (filtered), or with state=ended everyone's history",
                "tags": ["admin"],
                "parameters": [
                    _STATE,
                    _query_param("owner", "only this owner's"),
                    _query_param("node", "only on this node"),
                    _query_param("agent", "state=current: only on this agent's nodes"),
                    _query_param("status", "state=current: only these (ending: being destroyed)",
                                 {"type": "string", "enum": list(ADMIN_STATUSES)}),
                    _LIMIT,
                    _CURSOR,
                    _BEFORE,
                ],
                "responses": {
                    "200": _paged(_CURRENT_OR_ENDED, "one page of Reservation objects by start date, node "
                                  "and owner, or EndedReservation with state=ended, newest first"),
                    **_errors(400, *_AUTH),
                },
            }
        },
        "/admin/reservations/{node}/{owner}/end": {
            "post": {
                "operationId": "endReservation",
                "summary": "end anyone's reservation now, with destroy (cancelled if nothing ran)",
                "tags": ["admin"],
                "parameters": [_NODE, _OWNER],
                "responses": {
                    "200": _json(_ref("Reservation"), "the reservation, ending"),
                    **_errors(400, *_AUTH, 404, 409, 503),
                },
            }
        },
        "/admin/reservations/{node}/{owner}/move": {
            "post": {
                "operationId": "moveReservation",
                "summary": "move anyone's reservation to another free node of the same type; a started one "
                "is destroyed here and deployed there",
                "tags": ["admin"],
                "parameters": [_NODE, _OWNER],
                "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("Move")}}},
                "responses": {
                    "200": _json(_ref("Reservation"), "the reservation on its new node"),
                    **_errors(400, *_AUTH, 404, 409, 503),
                },
            }
        },
        "/admin/clock": {
            "get": {
                "operationId": "getClock",
                "summary": "whether a wall clock jump pauses starting and ending reservations",
                "tags": ["admin"],
                "responses": {"200": _json(_ref("ClockStatus"), "the clock guard"), **_errors(*_AUTH)},
            }
        },
        "/admin/clock/confirm": {
            "post": {
                "operationId": "confirmClock",
                "summary": "confirm that the wall clock is right: reservations start and end by it again",
                "tags": ["admin"],
                "responses": {"200": _json(_ref("ClockStatus"), "the clock guard, not paused"), **_errors(*_AUTH)},
            }
        },
    }
    return paths


def openapi_document(
    *, min_duration_hours: float = MIN_DURATION_HOURS, max_duration_hours: float = 168.0
) -> dict[str, Any]:
    """The document for a controller whose reservations last from `min_duration_hours` to
    `max_duration_hours` (its settings); a fresh copy each call, so a caller changing it cannot
    change the next answer."""
    return copy.deepcopy(
        {
            "openapi": "3.0.3",
            "info": {
                "title": "edgebed",
                "version": "1",
                "description": (
                    "Reserve, configure, deploy and manage testbed nodes. Authenticate with "
                    "'Authorization: Bearer <api token>' (settings page or `edgebed admin "
                    "api-token`). Dates are epoch seconds, UTC. Errors are {\"error\": ...} "
                    "with a 4xx status (and \"fields\": {name: problem} when inputs are named)."
                ),
            },
            "servers": [{"url": "/api/v1"}],
            "security": [{"bearer": []}],
            "tags": [
                {"name": "inventory"},
                {"name": "reservations"},
                {"name": "account", "description": "the caller's own account"},
                {"name": "admin", "description": "administrators only"},
            ],
            "paths": _paths(),
            "components": {
                "schemas": {
                    **_SCHEMAS,
                    "ReservationRequest": _reservation_request(min_duration_hours, max_duration_hours),
                },
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
        }
    )
