"""The real sensor driver's parts without the lab: its [real] table, the command templates, the
AddNode check, the serial liveness watch (over a TCP socket, as pyserial's socket:// URL), and the
board jobs that outlive the agent (real child processes: slow)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from edgebed.agent.settings import load_settings
from edgebed.config import ConfigError
from edgebed.nodetypes.base import NodeRef
from edgebed.nodetypes.drivers import DriverOptions
from edgebed.nodetypes.real.boardjobs import DEAD, FINISHED, RUNNING, BoardJobs
from edgebed.nodetypes.real.boards import SensorRealConfig, TemplateError, fill_argv, placeholders
from edgebed.nodetypes.real.sensor import check_node
from edgebed.nodetypes.real.serialwatch import SerialWatch

GDB = ["gdb-multiarch", "-batch", "-ex", "target remote {port}"]


def board(**overrides: object) -> dict[str, object]:
    table: dict[str, object] = {
        "model": "microbit",
        "flash": [*GDB, "-ex", "load", "{firmware}"],
        "verify": [*GDB, "-ex", "compare-sections", "{firmware}"],
        "erase": [*GDB, "-ex", "monitor erase"],
        "reset": [*GDB, "-ex", "monitor system_reset"],
        "power_on": ["uhubctl", "--location", "{hub}", "--ports", "{hub_port}", "--action", "on"],
        "power_off": ["uhubctl", "--location", "{hub}", "--ports", "{hub_port}", "--action", "off"],
        "alive_pattern": "ready$",
    }
    table.update(overrides)
    return table


def toml(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(toml(item) for item in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def sensor_toml(tmp_path: Path, boards: list[dict[str, object]], real: dict[str, object] | None = None,
                type: str = "sensor") -> Path:
    lines = ['name = "sns"', f'type = "{type}"', 'listen = "127.0.0.1:0"', 'token = "a-token-for-tests"',
             f'database = "{tmp_path / "a.sqlite"}"', 'driver = "real"', "[real]"]
    lines += [f"{key} = {toml(value)}" for key, value in {"image_dir": str(tmp_path), **(real or {})}.items()]
    for table in boards:
        lines.append("[[real.boards]]")
        lines += [f"{key} = {toml(value)}" for key, value in table.items()]
    path = tmp_path / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_sensor_table_loads_with_its_defaults(tmp_path) -> None:
    settings = load_settings(sensor_toml(tmp_path, [board()]), env={})
    real = settings.real
    assert isinstance(real, SensorRealConfig)
    assert (real.image_dir, real.image_url, real.work_dir) == (str(tmp_path), "", "/var/lib/edgebed/boards")
    assert (real.power_off_seconds, real.timeout_scale) == (1.0, 1.0)
    (model,) = real.boards
    assert model.flash == ("gdb-multiarch", "-batch", "-ex", "target remote {port}", "-ex", "load", "{firmware}")
    assert (model.serial, model.alive_timeout, model.baudrate, model.command_timeout) == ("{console}", 10.0, 115200, 120.0)
    assert model.properties_needed() == ["console", "hub", "hub_port", "port"]
    # Every key can be overridden from the environment, as everywhere.
    settings = load_settings(sensor_toml(tmp_path, [board()]), env={"EDGEBED_REAL_BOARDS_1_ALIVE_TIMEOUT": "2.5"})
    assert settings.real is not None and settings.real.boards[0].alive_timeout == 2.5  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("boards", "real", "expected"),
    [
        ([], {}, "key 'real.boards' is missing: at least 1 [[real.boards]] table needed"),
        ([board(flash="gdb-multiarch -batch")], {}, "key 'real.boards[1].flash' must be an array, got 'gdb-multiarch -batch'"),
        ([board(verify=[])], {}, "key 'real.boards[1].verify' must be a non-empty array of strings"),
        ([board(reset=["gdb", 3])], {}, "key 'real.boards[1].reset' must be an array of strings"),
        ([board(erase=["gdb", "{port.x}"])], {}, "key 'real.boards[1].erase' has a malformed template element '{port.x}': placeholder {port.x} must be a plain name"),
        ([board(erase=["gdb", "{port"])], {}, "key 'real.boards[1].erase' has a malformed template element '{port'"),
        ([board(erase=["gdb", "{firmware}"])], {}, "key 'real.boards[1].erase' names {firmware}, which only flash and verify have"),
        ([board(verify=["gdb", "{radio_channel}"])], {}, "key 'real.boards[1].verify' names {radio_channel}, which only flash has"),
        ([board(), board()], {}, "key 'real.boards[2].model' is 'microbit', which an earlier board already has"),
        ([board(alive_pattern="ready(")], {}, "key 'real.boards[1].alive_pattern' is not a regular expression"),
        ([board(alive_timeout=0)], {}, "key 'real.boards[1].alive_timeout' must be between 0.1 and 3600"),
        ([board(model="a b")], {}, "key 'real.boards[1].model' must be letters, digits"),
        ([board(probe="x")], {}, "unknown key 'real.boards[1].probe'"),
        ([board()], {"ssh_key": "/k"}, "unknown key 'real.ssh_key'"),
        ([board()], {"image_dir": "firmware"}, "key 'real.image_dir' must be an absolute path"),
        ([board()], {"image_url": "not a url"}, "key 'real.image_url' must be a URL"),
        ([board(power_off=[])], {}, "key 'real.boards[1].power_off' is missing: power_on and power_off go together"),
    ],
)
def test_a_bad_sensor_key_is_named_with_the_file(tmp_path, boards, real, expected) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(sensor_toml(tmp_path, boards, real), env={})
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "agent.toml")) and "\n" not in message
    assert expected in message, message


SWITCH = {"name": "sw1", "address": "127.0.0.1:1161", "community": "secret-community"}


def poe_toml(tmp_path: Path) -> Path:
    path = sensor_toml(tmp_path, [board(model="poe-board", power_on=[], power_off=[])])
    lines = ["[[real.switches]]", *(f"{key} = {toml(value)}" for key, value in SWITCH.items())]
    path.write_text(path.read_text() + "\n".join(lines) + "\n")
    return path


def test_a_model_without_power_commands_is_powered_from_a_poe_switch(tmp_path) -> None:
    real = load_settings(poe_toml(tmp_path), env={}).real
    assert isinstance(real, SensorRealConfig)
    (model,) = real.boards
    assert not model.power_templates and model.properties_needed() == ["console", "port"]
    assert real.switch("sw1") is not None and "secret-community" not in repr(real)
    poe = DriverOptions(real=real)
    base = {"model": "poe-board", "port": "1", "console": "/dev/ttyACM0"}
    assert check_node(poe, {**base, "switch": "sw1", "switch_port": "3"}) is None
    assert check_node(poe, base) == ("property 'switch' is missing: model poe-board has no power_on and "
                                      "power_off, so its boards are powered from a PoE switch port")
    assert check_node(poe, {**base, "switch": "sw9", "switch_port": "3"}) == (
        "property 'switch' names an unknown switch 'sw9'; this agent has sw1")
    assert check_node(poe, {**base, "switch": "sw1", "switch_port": "x"}) == (
        "property 'switch_port' must be a port number (1, 2, ...), got 'x'")


def test_the_labs_agent_configuration_loads_and_its_nodes_pass_the_check(tmp_path) -> None:
    """`python -m edgebed.lab.boards agent-config` writes a sensor agent that loads, whose board
    nodes pass AddNode's check."""
    from edgebed.lab.boards import Board, BoardsDescription

    lab = BoardsDescription(directory=str(tmp_path), firmware_dir=str(tmp_path), erased=str(tmp_path / "erased.bin"),
                            boards=(Board(1, "board1", str(tmp_path / "b1"), 4001, 4002, 4003),))
    path = tmp_path / "agent.toml"
    path.write_text(lab.agent_config().replace("lab-token-change-me", "a-token-for-tests"))
    settings = load_settings(path, env={})
    assert isinstance(settings.real, SensorRealConfig) and settings.type == "sensor"
    assert settings.real.boards[0].properties_needed() == ["console", "lab_board", "port"]
    assert check_node(DriverOptions(real=settings.real), lab.node_properties(lab.boards[0])) is None


def test_a_template_element_is_one_argument_and_values_are_never_parsed_again() -> None:
    values = {"port": "host:3333; rm -rf / 'quoted' $HOME", "firmware": "/srv/fw {port}.elf", "node": "n1"}
    argv = fill_argv(("gdb", "-ex", "target remote {port}", "{firmware}", "{{literal}} {node}"), values)
    assert argv == ["gdb", "-ex", "target remote host:3333; rm -rf / 'quoted' $HOME", "/srv/fw {port}.elf",
                    "{literal} n1"]
    with pytest.raises(TemplateError, match=r"\{hub\} has no value"):
        fill_argv(("uhubctl", "{hub}"), values)
    assert placeholders("a {b} {{c}} {d}") == ["b", "d"]
    for bad in ("{0}", "{a!r}", "{a:>4}", "{a[1]}", "}"):
        with pytest.raises(TemplateError):
            placeholders(bad)


def options(tmp_path: Path) -> DriverOptions:
    return DriverOptions(real=load_settings(sensor_toml(tmp_path, [board()]), env={}).real)


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"model": "microbit", "port": "1", "console": "/dev/ttyACM0", "hub": "1-1", "hub_port": "2"}, None),
        ({"port": "1"}, "property 'model' is missing: a real sensor node needs model, port"),
        ({"model": "microbit"}, "property 'port' is missing"),
        ({"model": "nrf52", "port": "1"}, "property 'model' names an unknown board model 'nrf52'; this agent has microbit"),
        ({"model": "microbit", "port": "1", "console": "c", "hub": "1-1"},
         "property 'hub_port' is missing: the commands of model microbit name {hub_port}"),
        ({"model": "microbit", "port": "--erase-all", "console": "c", "hub": "1", "hub_port": "2"},
         "property 'port' must not start with '-'"),
    ],
)
def test_a_node_is_checked_against_its_models_templates(tmp_path, properties, expected) -> None:
    found = check_node(options(tmp_path), properties)
    assert found == expected if expected is None else (found or "").startswith(expected), found


# Liveness over a TCP "serial port".


class FakeUart:
    """A TCP server sending `chunks` (with `pause` seconds between them) to the one client."""

    def __init__(self, chunks: list[bytes], pause: float = 0.05) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self.server.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, args=(chunks, pause), daemon=True)
        self.thread.start()

    def _serve(self, chunks: list[bytes], pause: float) -> None:
        connection, _ = self.server.accept()
        with connection:
            for chunk in chunks:
                time.sleep(pause)
                connection.sendall(chunk)
            time.sleep(1)

    def close(self) -> None:
        self.server.close()


def wait_for(condition, within: float = 3.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_serial_watch_sees_the_line_and_keeps_what_came_before() -> None:
    uart = FakeUart([b"\x00boot rom v1\r\n", b"edgebed-sensor he", b"llo ready\r\nmore\r\n"])
    watch = SerialWatch(uart.url, r"^edgebed-sensor \S+ ready$")
    try:
        watch.open()
        assert wait_for(lambda: watch.matched)
        assert watch.matched_line == "edgebed-sensor hello ready"
        assert list(watch.last_lines)[-1] == "edgebed-sensor hello ready"
    finally:
        watch.close()
        uart.close()


def test_the_serial_watch_matches_a_prompt_without_a_newline_and_misses_a_wrong_line() -> None:
    uart = FakeUart([b"RIOT booting\r\n", b"> "])
    prompt = SerialWatch(uart.url, r"^> $")
    try:
        prompt.open()
        assert wait_for(lambda: prompt.matched)
    finally:
        prompt.close()
        uart.close()
    uart = FakeUart([b"edgebed-sensor hello starting\r\n"])
    wrong = SerialWatch(uart.url, r"ready$")
    try:
        wrong.open()
        assert not wait_for(lambda: wrong.matched, within=0.5)
        assert list(wrong.last_lines) == ["edgebed-sensor hello starting"]
    finally:
        wrong.close()
        uart.close()


def test_a_serial_port_that_cannot_be_opened_says_which() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    watch = SerialWatch(f"socket://127.0.0.1:{port}", "ready")
    with pytest.raises(Exception, match=f"cannot open serial port socket://127.0.0.1:{port}"):
        watch.open()


# Jobs.

NODE = NodeRef("board-1", {"serial": "MB0001"})


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def wait_over(jobs: BoardJobs, within: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while (status := await jobs.status(NODE)).alive:
        assert time.monotonic() < deadline, status
        await asyncio.sleep(0.05)
    return status


@pytest.mark.slow  # child processes
async def test_board_jobs_report_exit_codes_output_and_timeouts(tmp_path) -> None:
    jobs = BoardJobs(str(tmp_path / "jobs"))
    jobs.prepare()
    done = await jobs.run(NODE, "verify", python("print('Section .text: matched.')"), timeout=30)
    assert (done.state, done.exit_code, done.output.strip()) == (FINISHED, 0, "Section .text: matched.")
    failed = await jobs.run(NODE, "verify", python("import sys; print('MIS-MATCHED'); sys.exit(3)"), timeout=30)
    assert failed.problem() == "verify exited 3: MIS-MATCHED"
    slow = await jobs.run(NODE, "flash", python("import time; time.sleep(30)"), timeout=0.5)
    assert slow.exit_code == 124 and slow.problem().startswith("flash exited 124 (timed out)")
    absent = await jobs.run(NODE, "reset", ["/nonexistent/probe-tool"], timeout=5)
    assert absent.problem() == "reset exited 127 (could not be started): cannot run /nonexistent/probe-tool: No such file or directory"
    with pytest.raises(Exception, match="the program 'no-such-probe-tool' is not installed on the gateway"):
        await jobs.run(NODE, "reset", ["no-such-probe-tool"], timeout=5)
    assert (tmp_path / "jobs").stat().st_mode & 0o777 == 0o700


@pytest.mark.slow  # child processes
async def test_a_board_job_outlives_its_agent_and_a_new_command_stops_it(tmp_path) -> None:
    first = BoardJobs(str(tmp_path / "jobs"))
    first.prepare()
    await first.start(NODE, "flash fw.elf", "flash", python("import time; time.sleep(1.5); print('loaded')"), 30)
    assert (await first.status(NODE)).state == RUNNING
    # A restarted agent: a new BoardJobs over the same folder finds the job running, then over.
    second = BoardJobs(str(tmp_path / "jobs"))
    found = await second.status(NODE)
    assert (found.state, found.job_id) == (RUNNING, "flash fw.elf")
    over = await wait_over(second)
    assert (over.state, over.exit_code, over.output.strip(), over.job_id) == (FINISHED, 0, "loaded", "flash fw.elf")
    # One command at a time per board: a new one stops the one still running, group and all.
    await second.start(NODE, "flash long", "flash", python("import time; time.sleep(60)"), 120)
    assert (await second.status(NODE)).alive
    await wait_for_pid(second)
    pid = int((second.folder(NODE) / "pid").read_text().split()[0])
    await second.start(NODE, "erase", "erase", python("print('erased')"), 30)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert (await wait_over(second)).output.strip() == "erased"
    # A wrapper killed outright leaves no exit code: the job is dead, never finished.
    await second.start(NODE, "flash again", "flash", python("import time; time.sleep(60)"), 120)
    await wait_for_pid(second)
    os.killpg(int((second.folder(NODE) / "pid").read_text().split()[0]), signal.SIGKILL)
    assert (await wait_over(second)).state == DEAD


async def wait_for_pid(jobs: BoardJobs) -> None:
    deadline = time.monotonic() + 10
    while not (jobs.folder(NODE) / "pid").exists():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


@pytest.mark.slow  # snmpsim
async def test_a_board_on_a_poe_port_is_switched_and_read_back_over_snmp(tmp_path) -> None:
    from edgebed.nodetypes.real.images import ImageCatalog
    from edgebed.nodetypes.real.sensor import BoardPower, Boards, BoardSystem
    from edgebed.nodetypes.real.snmp import PoePower
    from tests.agent.real.peers import read_port, require, snmp_switch

    require("snmpsim", "snmpget")
    with snmp_switch(tmp_path / "switch") as switch:
        real = load_settings(poe_toml(tmp_path), env={"EDGEBED_REAL_SWITCHES_1_ADDRESS": switch.address,
                                                      "EDGEBED_REAL_SWITCHES_1_COMMUNITY": switch.community}).real
        assert isinstance(real, SensorRealConfig)
        boards = Boards(real, BoardJobs(str(tmp_path / "jobs")), ImageCatalog(str(tmp_path), "", load_state=_none, save_state=_nowhere))
        poe = PoePower({item.name: item for item in real.switches}, min_off_seconds=0.1)
        power = BoardPower(boards, BoardSystem(boards), min_off_seconds=0.1, load_state=_none,
                           save_state=_nowhere, poe=poe)
        node = NodeRef("board-poe", {"model": "poe-board", "port": "1", "switch": "sw1", "switch_port": "4",
                                     "console": f"socket://127.0.0.1:{closed_port()}"})
        try:
            await power.set_power(node, True)
            assert read_port(switch, 4) == "1" and await power.is_powered(node)
            await power.set_power(node, False)
            assert read_port(switch, 4) == "2" and not await power.is_powered(node)
        finally:
            poe.close()


async def _none(key: str) -> str | None:
    return None


async def _nowhere(key: str, value: str) -> None:
    return None


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
