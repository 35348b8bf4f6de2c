"""Action property constraints: declared by the node types (nodetypes/base.py), sent through
DescribeNodeType, applied by the controller when a user sets a value (every wrong property
named at once), and an agent's pattern the controller cannot run safely ignored and reported."""

from __future__ import annotations

import re

import grpc
import pytest

from edgebed.constraints import UnsafePattern, compile_pattern, value_problem
from edgebed.controller import validation
from edgebed.controller.domain import PropertySpec as ControllerSpec
from edgebed.controller.errors import InvalidProperties
from edgebed.controller.inventory import CONSTRAINTS_PREFIX
from edgebed.nodetypes import base
from edgebed.nodetypes.base import PropertySpec
from edgebed.nodetypes.node import NODE_TYPE as NODE
from edgebed.nodetypes.raspberry import NODE_TYPE as RASPBERRY
from edgebed.nodetypes.sensor import NODE_TYPE as SENSOR
from edgebed.v1 import agent_pb2 as pb
from tests.controller.conftest import controller_for, make_settings
from tests.controller.fake_agent import PROCESSES, FakeAgent, ServedAgent

HOUR = 3600

# -- the pattern subset ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "max_length"),
    [
        (base.HOSTNAME_PATTERN, 63),
        (base.NO_CONTROL_CHARACTERS, 128),
        (r"[a-z]+-\d{1,3}", 0),
        (r"(?i)(?:full|\d+G)", 0),
        (r"([a-z]{2})*", 0),
        (r".*.*", 128),  # 129 * 129 ways: fine for short values
        (r"\b[a-z]*+x", 0),
    ],
)
def test_patterns_whose_matching_time_is_bounded_are_accepted(pattern, max_length):
    assert compile_pattern(pattern, max_length).pattern == pattern


@pytest.mark.parametrize(
    ("pattern", "max_length", "reason"),
    [
        (r"(a+)+$", 0, "repeats a part that itself repeats"),
        (r"(a|ab)*c", 0, "repeats a part that itself repeats or has alternatives"),
        (r"(?:x?)*y", 0, "repeats a part"),
        (r".*.*", 0, "could take too long on a value of 16384 characters"),
        (r"[a-z]*" * 20, 10, "could take too long on a value of 10 characters"),
        (r"(\w)\1", 0, "backreference"),
        (r"a(?=b)", 0, "lookahead or lookbehind"),
        (r"(?<!a)b", 0, "lookahead or lookbehind"),
        (r"(a)?(?(1)b|c)", 0, "conditional"),
        (r"(", 0, "is not a regular expression"),
        ("a" * 257, 0, "longer than 256 characters"),
    ],
)
def test_patterns_that_could_backtrack_without_bound_are_refused(pattern, max_length, reason):
    with pytest.raises(UnsafePattern, match=re.escape(reason)):
        compile_pattern(pattern, max_length)


def test_value_problems_are_phrases_that_never_repeat_a_secret():
    pattern = compile_pattern(base.NO_CONTROL_CHARACTERS, 128)
    kwargs = {"min_length": 8, "max_length": 128, "pattern": pattern, "help": "8 to 128 characters"}
    assert value_problem("short", **kwargs) == "must be 8 to 128 characters long"
    assert value_problem("x" * 129, **kwargs) == "must be 8 to 128 characters long"
    assert value_problem("long enough\x01", secret=True, **kwargs) == "must be 8 to 128 characters"
    assert value_problem("long enough", **kwargs) is None
    assert value_problem("3T", values=("full", "8G")) == "must be one of full, 8G; got '3T'"
    assert "hunter" not in value_problem("hunter2", values=("a",), secret=True)
    assert value_problem("ab", min_length=3) == "must be at least 3 characters long"
    assert value_problem("abcd", max_length=3) == "must be at most 3 characters long"
    assert value_problem("a-", pattern=re.compile("[a-z]+")) == "does not match the pattern [a-z]+"


# -- the agent's declarations -----------------------------------------------------------------------


def test_the_node_types_declare_their_constraints_and_the_agent_applies_them():
    specs = {spec.name: spec for spec in RASPBERRY.properties}
    password = specs["os_password"]
    assert (password.min_length, password.max_length, password.secret) == (8, 128, True)
    assert password.label and password.help and password.pattern
    assert password.problem("short") == "property 'os_password' must be 8 to 128 characters long"
    assert "hunter" not in (password.problem("hunter\x01\x02x") or "hunter")
    assert specs["hostname"].problem("-bad-").startswith("property 'hostname' must be a host name")
    assert specs["hostname"].problem("exp-1") is None
    assert "OpenSSH" in specs["ssh_key"].problem("not a key")  # the custom check still runs
    for node_type in (RASPBERRY, NODE, SENSOR):
        for spec in node_type.properties:
            assert spec.label, f"{node_type.name}.{spec.name} has no label"


def test_a_node_type_cannot_declare_a_pattern_the_controller_would_refuse():
    with pytest.raises(ValueError, match="property 'code': pattern repeats a part"):
        PropertySpec("code", pattern=r"(a+)+")
    with pytest.raises(ValueError, match="min_length 9 > max_length 8"):
        PropertySpec("code", min_length=9, max_length=8)


# -- the controller: applying what an agent sends -----------------------------------------------------

# What the agent below declares: one property per kind of constraint, and two the controller
# must not apply (a backtracking pattern, contradicting lengths).
SPECS = [
    pb.PropertySpec(name="environment", required=True, values=["raspios-lite"], label="Environment"),
    pb.PropertySpec(name="os_password", secret=True, label="Password", help="8 to 64 characters",
                    min_length=8, max_length=64, pattern=r"[^\x00-\x1f]*"),
    pb.PropertySpec(name="hostname", label="Host name", help="a host name", max_length=63,
                    pattern=r"[a-z0-9]([a-z0-9-]*[a-z0-9])?"),
    pb.PropertySpec(name="partition_size", values=["full", "8G"]),
    pb.PropertySpec(name="token", help="letters twice", pattern=r"(a+)+b"),
    pb.PropertySpec(name="motd", min_length=10, max_length=5),
]


class ConstrainedAgent(FakeAgent):
    """A fake agent whose node type carries constraints, and which refuses at StartAction a
    `token` that fails its own (unsafe) pattern, as an agent is the last line."""

    specs = SPECS

    def DescribeNodeType(self, request, context):
        self._enter("DescribeNodeType", context)
        return pb.DescribeNodeTypeResponse(
            agent_name=self.name, type=self.type, properties=self.specs,
            processes=[pb.Process(name=k, states=v) for k, v in PROCESSES.items()],
            final_states=["deployed", "rebooted", "destroyed", "lost"],
        )

    def _start(self, request):
        token = request.properties.get("token", "")
        if token and not re.fullmatch(r"a+b", token):
            return grpc.StatusCode.INVALID_ARGUMENT, "property 'token' must be letters twice", None
        return super()._start(request)


@pytest.fixture
def constrained():
    served = ServedAgent(ConstrainedAgent("rpi", nodes=2))
    yield served
    served.stop()


async def _setup(ctl, served):
    admin = await ctl.accounts.create_user("admin@example.org", "admin-password", admin=True, authorized=True)
    await ctl.agents.add_agent(admin, "rpi", "raspberry", "127.0.0.1", served.port, served.fake.token)
    alice = await ctl.accounts.create_user("alice@example.org", "user-password", authorized=True)
    return admin, alice


async def test_configure_names_every_wrong_property_and_sets_none(tmp_path, clock, constrained):
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        _, alice = await _setup(ctl, constrained)
        await ctl.reservations.reserve(alice, nodes=["rpi-000"], start_date=int(clock()) + HOUR, duration_hours=1)
        with pytest.raises(InvalidProperties) as refused:
            await ctl.reservations.configure(alice, "rpi-000", bin="b", properties={
                "environment": "raspios-lite", "os_password": "short", "hostname": "-Bad-",
                "partition_size": "3T", "colour": "red",
            })
        assert refused.value.fields == {
            "os_password": "must be 8 to 64 characters long",
            "hostname": "must be a host name",
            "partition_size": "must be one of full, 8G; got '3T'",
            "colour": "raspberry nodes have no such property (known: environment, os_password, hostname, "
                      "partition_size, token, motd)",
        }
        assert refused.value.message.startswith("os_password: must be 8 to 64 characters long; hostname: ")
        reservation = await ctl.reservations.get_reservation(alice, "rpi-000")
        assert (reservation.status, reservation.bin, reservation.properties) == ("configuring", "", {})
        assert reservation.missing == ["environment"]

        # The constraints the controller cannot apply are left to the agent: accepted here.
        done = await ctl.reservations.configure(alice, "rpi-000", properties={
            "environment": "raspios-lite", "os_password": "long enough", "hostname": "exp-1",
            "token": "not letters", "motd": "hi",
        })
        assert done.status == "ready" and done.missing == []


async def test_an_unsafe_pattern_is_ignored_and_said_on_the_agent_and_a_late_refusal_is_the_last_error(
    tmp_path, clock, constrained
):
    async with controller_for(make_settings(tmp_path), clock) as ctl:
        admin, alice = await _setup(ctl, constrained)
        [agent] = await ctl.agents.list_agents(admin)
        assert agent.status == "connected"
        assert agent.last_error.startswith(CONSTRAINTS_PREFIX)
        assert "token: pattern repeats a part that itself repeats" in agent.last_error
        assert "motd: min_length 10 is above max_length 5" in agent.last_error

        # Accepted at configure (the controller could not check it), refused by the agent when
        # the deploy starts: the reservation goes back to configuring and says why.
        await ctl.reservations.reserve(alice, nodes=["rpi-001"], start_date=int(clock()), duration_hours=1)
        await ctl.reservations.configure(alice, "rpi-001", properties={"environment": "raspios-lite", "token": "zz"})
        await ctl.scheduler.poll()
        refused = await ctl.reservations.get_reservation(alice, "rpi-001")
        assert refused.status == "configuring"
        assert refused.last_error == "deploy refused: property 'token' must be letters twice"

        # An agent that fixes its description clears the note at the next catalog refresh.
        constrained.fake.specs = SPECS[:4]
        await ctl.inventory.refresh(catalogs=True)
        [agent] = await ctl.agents.list_agents(admin)
        assert agent.last_error == ""


def test_the_controller_ignores_what_it_cannot_apply_and_applies_the_rest():
    unsafe = ControllerSpec("x", False, [], False, "", pattern=r"(a|a)*b", max_length=4)
    assert validation.ignored_constraints(unsafe) == ["pattern repeats a part that itself repeats or has alternatives"]
    assert validation.property_problem(unsafe, "aaaaa") == "must be at most 4 characters long"
    assert validation.property_problem(unsafe, "zz") is None
    contradiction = ControllerSpec("y", False, [], False, "", min_length=5, max_length=2, pattern="[0-9]*")
    assert validation.ignored_constraints(contradiction) == ["min_length 5 is above max_length 2"]
    assert validation.property_problem(contradiction, "123456") is None
    assert validation.property_problem(contradiction, "12a") == "does not match the pattern [0-9]*"
