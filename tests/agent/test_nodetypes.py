"""Node types from declared states and shared steps; drivers from entry points, checked against
the interfaces the type's steps use."""

from __future__ import annotations

import grpc
import pytest

from edgebed.agent import app
from edgebed.agent.app import open_agent, start_agent
from edgebed.config import ConfigError
from edgebed.nodetypes import TYPE_NAMES, load_node_type, steps
from edgebed.nodetypes.base import (
    DEPLOYED,
    DriverError,
    DriverUnavailable,
    NodeRef,
    NodeType,
    State,
    StepContext,
    process,
)
from edgebed.nodetypes.drivers import DriverOptions, DriverPlugin, driver_names, load_driver
from edgebed.nodetypes.interfaces import INSTALLED, NETWORK, Driver
from edgebed.nodetypes.raspberry import states as raspberry
from edgebed.nodetypes.sim import raspberry as sim_raspberry
from edgebed.nodetypes.sim.hardware import SimHardware, SimOptions
from edgebed.nodetypes.sim.interfaces import SimPower
from edgebed.v1 import agent_pb2 as pb
from edgebed.v1 import agent_pb2_grpc
from tests.agent.conftest import AUTH, make_settings


def _type(*states: State, deploy: tuple[State, ...] | None = None) -> NodeType:
    return NodeType(
        name="raspberry",
        states=states,
        processes={"deploy": process("deploy", *(deploy or states), DEPLOYED)},
        properties=(),
        default_environments=(),
    )


def test_a_process_naming_a_state_by_its_name_is_refused() -> None:
    with pytest.raises(TypeError, match="'copy_image' is not a State"):
        process("deploy", raspberry.NETBOOT_ON, "copy_image", DEPLOYED)  # type: ignore[arg-type]


def test_a_process_using_an_undeclared_state_is_refused() -> None:
    # The misspelling that a TIMEOUTS dict let through, now a State of its own: refused.
    misspelt = State("copy_imgae", steps.write_image(), before_reboot=180, lost=3600)
    with pytest.raises(ValueError, match="'copy_imgae', which is not one of the type's declared"):
        _type(raspberry.COPY_IMAGE, deploy=(raspberry.COPY_IMAGE, misspelt))


def test_a_state_redeclared_with_other_timeouts_is_refused() -> None:
    other = State("copy_image", steps.write_image(), before_reboot=0, lost=0)
    with pytest.raises(ValueError, match="not one of the type's declared"):
        _type(raspberry.COPY_IMAGE, deploy=(raspberry.COPY_IMAGE, other))


def test_a_state_declared_twice_or_in_no_process_is_refused() -> None:
    twin = State("wipe_card", steps.WIPE)
    with pytest.raises(ValueError, match="declared twice"):
        _type(raspberry.WIPE_CARD, twin, deploy=(raspberry.WIPE_CARD,))
    with pytest.raises(ValueError, match="wipe_card are in no process"):
        _type(raspberry.COPY_IMAGE, raspberry.WIPE_CARD, deploy=(raspberry.COPY_IMAGE,))


def test_states_need_a_step_unless_final() -> None:
    with pytest.raises(ValueError, match="has no step"):
        State("copy_image", before_reboot=180)
    with pytest.raises(ValueError, match="cannot have a step"):
        State("deployed", steps.WIPE)
    with pytest.raises(ValueError, match="must end with one of"):
        process("deploy", raspberry.COPY_IMAGE)


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_every_process_state_is_a_declared_state_with_its_timeouts(type_name) -> None:
    node_type = load_node_type(type_name)
    declared = {id(state) for state in node_type.states}
    for proc in node_type.processes.values():
        assert all(id(state) in declared for state in proc.states[:-1]), proc.name
    # The timeouts travel with the state object: one of raspberry's, checked by value.
    if type_name == "raspberry":
        copy = node_type.processes["deploy"].states[4]
        assert (copy.name, copy.before_reboot, copy.lost) == ("copy_image", 180, 3600)


def test_raspberry_and_node_share_their_steps_under_their_own_state_names() -> None:
    from edgebed.nodetypes.node import states as node

    assert raspberry.PARTITION.step is node.PARTITION.step is steps.PARTITION
    assert raspberry.WIPE_CARD.step is node.WIPE_DISK.step is steps.WIPE
    assert load_node_type("raspberry").needs == load_node_type("node").needs


@pytest.mark.parametrize("type_name", TYPE_NAMES)
def test_the_sim_driver_of_each_type_is_an_entry_point(type_name) -> None:
    assert "sim" in driver_names(type_name)
    plugin = load_driver(type_name, "sim")
    assert (plugin.node_type, plugin.name) == (type_name, "sim")
    assert plugin.node_properties is not None and plugin.node_properties(1)["ip"]


def test_an_uninstalled_driver_is_unavailable() -> None:
    assert "real" in driver_names("node") and "bare" not in driver_names("node")
    with pytest.raises(DriverUnavailable, match="no 'bare' driver for node"):
        load_driver("node", "bare")


def test_missing_names_unknown_interfaces() -> None:
    driver = Driver(power=SimPower(SimHardware(sim_raspberry.PROFILE, SimOptions())))
    assert driver.missing(["power", "image"]) == ["image"]
    with pytest.raises(ValueError, match="no such driver interface: flash"):
        driver.missing(["flash"])


async def test_a_step_on_a_driver_without_its_interface_raises_driver_error() -> None:
    driver = Driver(power=SimPower(SimHardware(sim_raspberry.PROFILE, SimOptions(time_scale=0))))
    ctx = StepContext(
        node=NodeRef("rpi-001", {}), process="deploy", environment=None, properties={},
        driver=driver,
    )
    boot = steps.boot_from(NETWORK).exec
    assert boot is not None
    with pytest.raises(DriverError, match="no boot interface"):
        await boot(ctx)
    # And an image step without an environment says so, instead of handing None to the driver.
    full = sim_raspberry.create(SimOptions(time_scale=0))
    write = steps.write_image().exec
    assert write is not None
    with pytest.raises(DriverError, match="deploy has no environment"):
        await write(StepContext(ctx.node, "deploy", None, {}, full))


async def test_an_agent_refuses_a_driver_lacking_an_interface_its_type_needs(tmp_path, monkeypatch) -> None:
    """A real driver written one interface at a time is refused at start-up, by name, rather
    than failing in the middle of the first deploy; the database is left usable."""

    def power_only(options: DriverOptions) -> Driver:
        return Driver(power=SimPower(SimHardware(sim_raspberry.PROFILE, options.sim)))

    partial = DriverPlugin("raspberry", "sim", create=power_only)
    monkeypatch.setattr(app, "load_driver", lambda node_type, name: partial)
    settings = make_settings(tmp_path, source="agent.toml")
    with pytest.raises(ConfigError) as caught:
        await start_agent(settings)
    assert str(caught.value) == (
        "agent.toml: key 'driver' is 'sim', but that raspberry driver has no boot, image, "
        "system, setup interface, which raspberry steps use"
    )
    monkeypatch.undo()
    # The lock and the database were released: the complete driver starts on them. The partial
    # plugin has no inventory, so the first start created no nodes.
    async with open_agent(settings) as agent:
        async with grpc.aio.insecure_channel(agent.address) as channel:
            stub = agent_pb2_grpc.AgentStub(channel)
            nodes = await stub.GetNodes(pb.GetNodesRequest(), metadata=AUTH, timeout=5)
    assert list(nodes.nodes) == []


def test_a_type_needs_the_interfaces_of_its_steps() -> None:
    wait = State("wait", steps.wait_for_system(INSTALLED))
    assert _type(wait).needs == {"system"}
    assert _type(wait, raspberry.COPY_IMAGE, raspberry.POE_ON).needs == {"system", "image", "power"}
