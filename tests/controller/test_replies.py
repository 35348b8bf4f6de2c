"""The checks of agent replies (controller/replies.py) on their own: what every real node type
and the sim driver produce passes; each kind of bad value is refused with a message naming the
field, never echoing a long value; the limits agree with the store's columns; names must match
whole, on both sides."""

from __future__ import annotations

import dataclasses

import peewee as pw
import pytest

from edgebed import limits
from edgebed.agent.errors import InvalidArgument
from edgebed.agent.service import check_name
from edgebed.controller import replies, validation
from edgebed.controller.domain import ActionState, Environment, PropertySpec
from edgebed.controller.errors import BadReply, InvalidInput
from edgebed.controller.store.models import define_models
from edgebed.nodetypes import TYPE_NAMES, load_node_type
from edgebed.nodetypes.base import FINAL_STATES
from edgebed.nodetypes.drivers import load_driver

FINALS = list(FINAL_STATES)


def described(type_name: str):
    """What the agent's DescribeNodeType gives for a real node type, checked."""
    node_type = load_node_type(type_name)
    specs = [
        PropertySpec(
            s.name, s.required, list(s.values), s.secret, s.description,
            label=s.label, help=s.help, min_length=s.min_length, max_length=s.max_length, pattern=s.pattern,
        )
        for s in node_type.property_specs([e.name for e in node_type.default_environments])
    ]
    processes = [(name, proc.state_names) for name, proc in node_type.processes.items()]
    return replies.node_type(type_name, processes, specs, FINALS)


def action(**changes) -> ActionState:
    base = ActionState(
        node_name="rpi-001", node_ip="10.10.0.1", environment="raspios-lite-arm64", process="deploy",
        state="", state_idx=1, updated_at=1_700_000_000, progress=40, state_count=0, final=False,
        reboots=0, action_id=12,
    )
    info = described("raspberry")
    states = info.processes["deploy"]
    base = dataclasses.replace(base, state=states[1], state_count=len(states))
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_what_every_real_node_type_and_the_sim_driver_report_passes(type_name):
    info = described(type_name)
    node_type = load_node_type(type_name)
    assert set(info.processes) == set(node_type.processes)
    envs = [
        Environment(e.name, e.description, e.image, e.size_bytes, e.default_user, dict(e.properties))
        for e in node_type.default_environments
    ]
    assert replies.environments(envs) == envs
    plugin = load_driver(type_name, "sim")
    nodes = [(f"sim-{i:03d}", plugin.node_properties(i)) for i in range(1, 50)]
    assert replies.nodes(nodes) == dict(nodes)
    for name, states in info.processes.items():
        for index, state in enumerate(states):
            report = ActionState(
                node_name="sim-001", node_ip="10.0.0.1", environment="", process=name, state=state,
                state_idx=index, updated_at=1_700_000_000, progress=100 if state in FINALS else 0,
                state_count=len(states), final=state in FINALS, action_id=1,
            )
            assert replies.actions([report], info, {"sim-001"}) == {"sim-001": report}
        # An action is lost in whatever state it was.
        lost = ActionState("sim-001", "", "", name, "lost", 0, 1, 0, len(states), True)
        assert replies.action(lost, info) == lost


BAD_ACTIONS = [
    ({"progress": -5}, "action of node rpi-001: progress is -5, not between 0 and 100"),
    ({"progress": 101}, "progress is 101, not between 0 and 100"),
    ({"state_idx": -1}, "state_idx is -1, not between 0 and"),
    ({"state_idx": 99}, "state_idx is 99, not between 0 and"),
    ({"state_count": 10**6}, "state_count is 1000000, but deploy has"),
    ({"state": "x" * 100}, "action of node rpi-001: state has 100 characters, more than 64"),
    ({"state": "wipe_card"}, "state wipe_card is not state 1 of deploy"),
    ({"state": "deployed\n"}, "is not a name"),
    ({"final": True}, "final is True, but"),
    ({"process": "explode"}, "process explode is not one of its node type's (deploy, reboot, destroy)"),
    ({"process": "p" * 40}, "process has 40 characters, more than 32"),
    ({"updated_at": -1}, "updated_at is -1"),
    ({"updated_at": 2**62}, "updated_at is 4611686018427387904"),
    ({"reboots": -1}, "reboots is -1"),
    ({"action_id": -3}, "action_id is -3"),
    ({"duration_seconds": -1.0}, "duration_seconds is -1.0, not between 0 and"),
    ({"duration_seconds": float("nan")}, "duration_seconds is nan"),
    ({"duration_seconds": float("inf")}, "duration_seconds is inf"),
    ({"node_ip": "10.0.0.1 evil"}, "node_ip '10.0.0.1 evil' contains spaces"),
    ({"node_ip": "1" * 300}, "node_ip has 300 characters, more than 255"),
    ({"node_name": "n" * 100}, "action: node name has 100 characters, more than 64"),
    ({"environment": "e\x00"}, "environment 'e\\x00' is not a name"),
    ({"last_error": "e" * 1025}, "last_error has 1025 characters, more than 1024"),
    ({"last_error": "copy failed\nroot password: x"}, "last_error 'copy failed\\nroot password: x' contains control"),
    ({"last_error": "bell\x07"}, "contains control characters"),
    ({"last_error": "nul\x00"}, "last_error contains a NUL character"),
]


@pytest.mark.parametrize(("changes", "message"), BAD_ACTIONS, ids=[m[:30] for _, m in BAD_ACTIONS])
def test_a_bad_action_is_refused_with_the_field_and_its_problem(changes, message):
    info = described("raspberry")
    report = action(**changes)
    with pytest.raises(BadReply) as raised:
        replies.actions([report], info, {report.node_name})
    assert message in raised.value.message


def test_an_actions_last_error_is_kept_with_what_looks_like_a_credential_scrubbed():
    info = described("raspberry")
    fine = action(last_error="lost: state copy_image timed out after 1800 s; last error: checksum mismatch")
    assert replies.actions([fine], info, {fine.node_name})[fine.node_name] is fine
    leaky = action(last_error="curl http://u:hunter2@mirror/x failed; password=hunter2 Bearer abc.def")
    [(_, kept)] = replies.actions([leaky], info, {leaky.node_name}).items()
    assert kept.last_error == "curl http://***@mirror/x failed; password=*** Bearer ***"
    assert "hunter2" not in kept.last_error and kept.fingerprint() == leaky.fingerprint()


def test_an_action_report_for_a_node_not_asked_for_or_twice_is_refused():
    info = described("raspberry")
    with pytest.raises(BadReply, match="action of node rpi-001: that node was not asked for"):
        replies.actions([action()], info, {"rpi-002"})
    with pytest.raises(BadReply, match="action of node 'rpi-001' appears twice"):
        replies.actions([action(), action()], info, set())
    with pytest.raises(BadReply, match="it is of node rpi-001, not of rpi-002"):
        replies.started(action(), info, "rpi-002", "deploy")


BAD_NODES = [
    ([("n" * 100, {})], "node 1: name has 100 characters, more than 64"),
    ([("rpi-001", {}), ("rpi-001\n", {})], "node 2: name 'rpi-001\\n' is not a name"),
    ([("rpi-001", {}), ("rpi-001", {})], "node 'rpi-001' appears twice"),
    ([("rpi-001", {"ip": "10.0.0.1\x00"})], "node rpi-001: property ip contains a NUL character"),
    ([("rpi-001", {"ip": "1" * 5000})], "node rpi-001: property ip has 5000 characters, more than 4096"),
    ([("rpi-001", {f"p{i}": "" for i in range(65)})], "node rpi-001: properties: 65 of them, more than 64"),
    ([("rpi-001", {"p" * 70: ""})], "property name has 70 characters"),
    ([(f"n{i}", {}) for i in range(limits.MAX_NODES + 1)], "nodes: 10001 of them, more than 10000"),
]


@pytest.mark.parametrize(("items", "message"), BAD_NODES, ids=[m[:30] for _, m in BAD_NODES])
def test_bad_nodes_are_refused(items, message):
    with pytest.raises(BadReply) as raised:
        replies.nodes(items)
    assert message in raised.value.message


def env(**changes) -> Environment:
    return dataclasses.replace(Environment("os", "An OS", "/img/os.img", 10, "pi", {"arch": "arm64"}), **changes)


BAD_ENVIRONMENTS = [
    ([env(description="d" * 10240)], "environment os: description has 10240 characters, more than 4096"),
    ([env(image="/img/\n")], "environment os: image '/img/\\n' contains control characters"),
    ([env(size_bytes=-1)], "environment os: size_bytes is -1, not between 0 and"),
    ([env(default_user="u" * 65)], "default_user has 65 characters, more than 64"),
    ([env(name="os\n")], "environment name 'os\\n' is not a name"),
    ([env(), env()], "environment 'os' appears twice"),
    ([env(name=f"os{i}") for i in range(201)], "environments: 201 of them, more than 200"),
    ([env(properties={f"p{i}": "" for i in range(65)})], "environment os: properties: 65 of them"),
]


@pytest.mark.parametrize(("envs", "message"), BAD_ENVIRONMENTS, ids=[m[:30] for _, m in BAD_ENVIRONMENTS])
def test_bad_environments_are_refused(envs, message):
    with pytest.raises(BadReply) as raised:
        replies.environments(envs)
    assert message in raised.value.message


def test_bad_node_type_descriptions_are_refused():
    spec = PropertySpec("environment", True, ["os"], False, "what to deploy")
    good = [("deploy", ["netboot", "deployed"])]
    cases = [
        (("t" * 40, good, [spec], FINALS), "type has 40 characters, more than 32"),
        (("raspberry", [], [spec], FINALS), "processes: there are none"),
        (("raspberry", [("deploy", ["s" * 100, "deployed"])], [spec], FINALS), "process deploy: state has 100"),
        (("raspberry", [("deploy", ["netboot"])], [spec], FINALS), "its last state netboot is not a final state"),
        (("raspberry", [("deploy", [])], [spec], FINALS), "process deploy: it has no states"),
        (("raspberry", good * 2, [spec], FINALS), "process 'deploy' appears twice"),
        (("raspberry", good, [spec, spec], FINALS), "property 'environment' appears twice"),
        (("raspberry", good, [PropertySpec("e\n", False, [], False, "")], FINALS), "is not a name"),
        (("raspberry", good, [dataclasses.replace(spec, values=["v"] * 300)], FINALS), "values: 300 of them"),
        (("raspberry", good, [dataclasses.replace(spec, description="d" * 2000)], FINALS), "description has 2000"),
        (("raspberry", good, [dataclasses.replace(spec, label="L\n")], FINALS), "label 'L\\n' contains control"),
        (("raspberry", good, [dataclasses.replace(spec, help="h" * 2000)], FINALS), "help has 2000 characters"),
        (("raspberry", good, [dataclasses.replace(spec, pattern="a" * 5000)], FINALS), "pattern has 5000 characters"),
        (("raspberry", good, [dataclasses.replace(spec, max_length=2**32 - 1)], FINALS), "max_length is 4294967295"),
    ]
    for args, message in cases:
        with pytest.raises(BadReply) as raised:
            replies.node_type(*args)
        assert message in raised.value.message, (message, raised.value.message)


def test_a_message_never_echoes_a_long_value():
    huge = "A" * 5_000_000
    for check in (
        lambda: replies.nodes([("rpi-001", {}), (huge + "\n", {})]),
        lambda: replies.nodes([("x" * 70 + "\n" + huge, {})]),
        lambda: replies.environments([env(image=huge[:1000] + "\n")]),
        lambda: replies.actions([action(node_ip=huge[:200] + " ")], described("raspberry"), set()),
    ):
        with pytest.raises(BadReply) as raised:
            check()
        assert len(raised.value.message) < 200, raised.value.message


def test_the_reply_limits_match_the_store_columns():
    m = define_models(pw.DatabaseProxy())
    assert replies.MAX_NODE_NAME == m.Node.name.max_length == m.Schedule.node_name.max_length
    assert replies.MAX_TYPE_NAME == m.Catalog.type.max_length == m.Agent.type.max_length
    assert replies.MAX_PROCESS_NAME == m.Schedule.process.max_length == m.Schedule.pending.max_length
    assert replies.MAX_STATE_NAME == m.Schedule.action_state.max_length
    assert replies.MAX_NODE_IP == m.Schedule.node_ip.max_length
    assert replies.MAX_PROPERTY_NAME == m.ActionProp.prop_name.max_length
    assert limits.MAX_NAME == m.Node.name.max_length
    for column in (m.Schedule.state_idx, m.Schedule.state_count, m.Schedule.progress):
        assert type(column) is pw.IntegerField  # int4 on PostgreSQL: INT32_MAX bounds it
    # What an agent accepts the controller accepts back.
    assert replies.MAX_SPEC_VALUES >= limits.MAX_ENVIRONMENTS


@pytest.mark.parametrize("name", ["pi-001\n", "pi-001\r\n", "\npi-001", "pi 001", "", "p" * 65])
def test_names_with_a_trailing_newline_or_other_junk_are_refused_on_both_sides(name):
    with pytest.raises(InvalidInput):
        validation.name(name, "node")
    with pytest.raises(InvalidArgument):
        check_name(name)
    with pytest.raises(BadReply):
        replies.nodes([(name, {})])
    assert validation.name("pi-001", "node") == "pi-001"
    with pytest.raises(InvalidInput):
        validation.email("alice@example.org\nbcc@evil.example")


PRODUCT = ["agent", "controller", "nodetypes", "web", "edgebed"]


def test_no_product_code_matches_a_pattern_from_the_start_only():
    """`re.match`/`Pattern.match` with a `$` anchor lets a trailing newline through, and without
    one accepts any suffix: product code uses fullmatch (or search on purpose, never match)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    found = []
    for folder in PRODUCT:
        for path in sorted((root / folder).rglob("*.py")):
            if "v1" in path.parts:
                continue  # generated protobuf code
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "match":
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not found, f"use fullmatch: {found}"


def test_the_real_drivers_names_are_matched_whole():
    from edgebed.nodetypes.real import config

    assert config._check_switch_name("poe-1") is None
    assert config._check_switch_name("poe-1 and more") is not None
    assert config._check_switch_name("poe-1\n") is not None
