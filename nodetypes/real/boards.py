"""The `[real]` settings of the real sensor driver: board models whose flash, verify, erase,
reset and power commands are argument-list templates, and the liveness check on the serial port.

    driver = "real"
    [real]
    image_dir = "/srv/firmware"              # environments name firmware files here
    image_url = ""                           # optional: where a flashing tool fetches image_dir
    work_dir = "/var/lib/edgebed/boards"     # the gateway's job files, one folder per board
    power_off_seconds = 1.0                  # least time a board stays off in a power cycle
    timeout_scale = 1.0
    [[real.boards]]
    model = "nrf52840dk"
    flash = ["nrfjprog", "--snr", "{port}", "--program", "{firmware}", "--sectorerase"]
    verify = ["nrfjprog", "--snr", "{port}", "--verify", "{firmware}"]
    erase = ["nrfjprog", "--snr", "{port}", "--eraseall"]
    reset = ["nrfjprog", "--snr", "{port}", "--reset"]
    power_on = ["uhubctl", "--location", "{hub}", "--ports", "{hub_port}", "--action", "on"]
    power_off = ["uhubctl", "--location", "{hub}", "--ports", "{hub_port}", "--action", "off"]
    serial = "{console}"                      # a device (/dev/ttyACM0) or a pyserial URL
    alive_pattern = "RIOT|Contiki"
    alive_timeout = 10.0

A template is a list of strings; each element becomes exactly one argument after its
`{placeholders}` are replaced (`{{` and `}}` are literal braces), and no shell ever reads it, so a
value with spaces or quotes stays one argument. Placeholders: `{node}` (the node's name), any
property of the node (`{port}`, `{console}`, ...), and for flash and verify `{firmware}` (the
firmware file's absolute path on the gateway) and `{firmware_url}` (image_url + its name, when
image_url is set); flash also gets the options written with the firmware (`{radio_channel}`).
A node naming a model must have every property its templates name (checked at AddNode).

A model without power_on and power_off has its boards powered from PoE switch ports: each node
names a `[[real.switches]]` table (the raspberry driver's keys) in its `switch` property and its
port in `switch_port`, and the raspberry driver's SNMP code switches it (and reads it back).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgebed.config import Array, Key, KeyProblem, Schema, in_range
from edgebed.nodetypes.base import NAME_PATTERN
from edgebed.nodetypes.real.config import SWITCH_SCHEMA, SwitchConfig, _check_absolute

# Placeholders the driver fills; every other placeholder names a node property.
FIRMWARE = "firmware"
FIRMWARE_URL = "firmware_url"
NODE = "node"
BUILTINS = (FIRMWARE, FIRMWARE_URL, NODE)
# The options written with a firmware (nodetypes/sensor/states.py), for flash only.
FLASH_OPTIONS = ("radio_channel",)

COMMANDS = ("flash", "verify", "erase", "reset", "power_on", "power_off")
# The commands that have a firmware to name.
WITH_FIRMWARE = ("flash", "verify")

# Used with fullmatch: `$` also matches before a final newline.
_PLACEHOLDER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FORMATTER = string.Formatter()


class TemplateError(ValueError):
    """A template that cannot be filled: malformed braces, or a placeholder without a value."""


def placeholders(text: str) -> list[str]:
    """The placeholder names in `text`, in order. Raises TemplateError for malformed braces, a
    placeholder that is no plain name (`{0}`, `{a.b}`, `{a[1]}`), or one with a conversion or
    format spec (`{a!r}`, `{a:>4}`)."""
    try:
        parts = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise TemplateError(f"{text!r}: {exc}") from None
    names = []
    for _literal, field, spec, conversion in parts:
        if field is None:
            continue
        if not _PLACEHOLDER.fullmatch(field) or spec or conversion:
            raise TemplateError(
                f"{text!r}: placeholder {{{field}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}} must be a plain name such as {{port}}"
            )
        names.append(field)
    return names


def fill(text: str, values: Mapping[str, str]) -> str:
    """`text` with each placeholder replaced by its value (literal, never re-parsed). Raises
    TemplateError naming a placeholder that has no value."""
    out = []
    for literal, field, _spec, _conversion in _FORMATTER.parse(text):
        out.append(literal)
        if field is None:
            continue
        if field not in values:
            raise TemplateError(f"{{{field}}} has no value")
        out.append(values[field])
    return "".join(out)


def fill_argv(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """One argument per template element, placeholders replaced. Raises TemplateError."""
    return [fill(element, values) for element in template]


def _check_argv(value: list[Any]) -> str | None:
    if not value:
        return "must be a non-empty array of strings, the program first"
    if not all(isinstance(element, str) for element in value):
        return "must be an array of strings"
    if not value[0].strip():
        return "must name a program first"
    for element in value:
        if "\0" in element:
            return "must not contain NUL"
        try:
            placeholders(element)
        except TemplateError as exc:
            return f"has a malformed template element {exc}"
    return None


def _check_power_argv(value: list[Any]) -> str | None:
    # Empty: the model's boards are powered through PoE switch ports (their `switch` property).
    return None if value == [] else _check_argv(value)


def _check_serial(value: str) -> str | None:
    if not value.strip():
        return "must name a serial device or a pyserial URL (socket://host:port)"
    try:
        placeholders(value)
    except TemplateError as exc:
        return f"is a malformed template {exc}"
    return None


def _check_pattern(value: str) -> str | None:
    if not value:
        return "must not be empty: every line would match"
    try:
        re.compile(value)
    except re.error as exc:
        return f"is not a regular expression: {exc}"
    return None


def _check_model(value: str) -> str | None:
    if not NAME_PATTERN.fullmatch(value):
        return f"must be letters, digits, '-', '_' or '.', got {value!r}"
    return None


def _check_optional_url(value: str) -> str | None:
    if not value:
        return None
    if not re.fullmatch(r"(https?|ftp|tftp|file)://\S+", value):
        return f"must be a URL (http://, https://, ftp://, tftp://, file://) or empty, got {value!r}"
    return None


BOARD_SCHEMA: Schema = {
    "model": Key(str, check=_check_model, help="the board model nodes name in their 'model' property"),
    "flash": Key(list, check=_check_argv, help="writes {firmware} to the board"),
    "verify": Key(list, check=_check_argv, help="exits 0 only when the board holds {firmware}"),
    "erase": Key(list, check=_check_argv, help="erases the board's flash"),
    "reset": Key(list, check=_check_argv, help="resets the board into its firmware"),
    "power_on": Key(list, default=[], check=_check_power_argv,
                    help="switches the board's power on; [] = through the node's PoE switch port"),
    "power_off": Key(list, default=[], check=_check_power_argv,
                     help="switches the board's power off; [] = through the node's PoE switch port"),
    "serial": Key(str, default="{console}", check=_check_serial,
                  help="the board's serial port: a device or a pyserial URL, a template"),
    "alive_pattern": Key(str, check=_check_pattern,
                         help="a regular expression a line of the running firmware matches"),
    "alive_timeout": Key(float, default=10.0, check=in_range(0.1, 3600),
                         help="seconds after a reset or power on within which that line comes"),
    "baudrate": Key(int, default=115200, check=in_range(50, 20_000_000),
                    help="the serial port's speed (devices; a socket:// URL ignores it)"),
    "command_timeout": Key(float, default=120.0, check=in_range(1, 86_400),
                           help="seconds any one command may run before it is killed"),
}

SENSOR_REAL_SCHEMA: Schema = {
    "image_dir": Key(str, check=_check_absolute, help="folder of the firmware files environments name"),
    "image_url": Key(str, default="", check=_check_optional_url,
                     help="base URL a flashing tool fetches image_dir from ({firmware_url}); '' = none"),
    "work_dir": Key(str, default="/var/lib/edgebed/boards", check=_check_absolute,
                    help="the gateway's folder for the board commands' job files"),
    "power_off_seconds": Key(float, default=1.0, check=in_range(0, 600),
                             help="least time a board stays off in a power cycle"),
    "timeout_scale": Key(float, default=1.0, check=in_range(0.001, 100),
                         help="multiplies every state timeout (before_reboot, lost)"),
    "boards": Array(BOARD_SCHEMA, min_items=1),
    # PoE switches for boards powered from a switch port (a node's `switch` and `switch_port`),
    # driven by the raspberry driver's SNMP code (snmp.py).
    "switches": Array(SWITCH_SCHEMA, min_items=0),
}


@dataclass(frozen=True)
class BoardModel:
    """One `[[real.boards]]` table: the command templates (tuples of template elements) and the
    liveness check of a board model."""

    model: str
    flash: tuple[str, ...]
    verify: tuple[str, ...]
    erase: tuple[str, ...]
    reset: tuple[str, ...]
    power_on: tuple[str, ...]
    power_off: tuple[str, ...]
    serial: str
    alive_pattern: str
    alive_timeout: float = 10.0
    baudrate: int = 115200
    command_timeout: float = 120.0

    @property
    def power_templates(self) -> bool:
        """Whether the model has power commands (else its boards need a PoE switch port)."""
        return bool(self.power_on)

    def template(self, command: str) -> tuple[str, ...]:
        if command not in COMMANDS:
            raise ValueError(f"no command {command!r}")
        value: tuple[str, ...] = getattr(self, command)
        return value

    def properties_needed(self) -> list[str]:
        """The node properties the templates name (sorted): what a node of this model must have."""
        names: set[str] = set(placeholders(self.serial))
        for command in COMMANDS:
            for element in self.template(command):
                names.update(placeholders(element))
        return sorted(names - set(BUILTINS) - set(FLASH_OPTIONS))

    @classmethod
    def from_table(cls, table: Mapping[str, Any], key: str) -> BoardModel:
        """Raises KeyProblem (under `key`, "real.boards[N]") for a placeholder a command cannot
        fill: {firmware} outside flash and verify, an option outside flash."""
        for command in COMMANDS:
            for element in table[command]:
                for name in placeholders(element):
                    if name in (FIRMWARE, FIRMWARE_URL) and command not in WITH_FIRMWARE:
                        raise KeyProblem(f"{key}.{command}", f"names {{{name}}}, which only flash and verify have")
                    if name in FLASH_OPTIONS and command != "flash":
                        raise KeyProblem(f"{key}.{command}", f"names {{{name}}}, which only flash has")
        if bool(table["power_on"]) != bool(table["power_off"]):
            missing = "power_off" if table["power_on"] else "power_on"
            raise KeyProblem(f"{key}.{missing}", "is missing: power_on and power_off go together "
                                                 "(neither: the boards' PoE switch ports)")
        for name in placeholders(table["serial"]):
            if name in (FIRMWARE, FIRMWARE_URL, *FLASH_OPTIONS):
                raise KeyProblem(f"{key}.serial", f"names {{{name}}}, which the serial port has not")
        return cls(
            model=table["model"],
            **{command: tuple(table[command]) for command in COMMANDS},
            serial=table["serial"], alive_pattern=table["alive_pattern"],
            alive_timeout=table["alive_timeout"], baudrate=table["baudrate"],
            command_timeout=table["command_timeout"],
        )


@dataclass(frozen=True)
class SensorRealConfig:
    """The checked `[real]` table of a sensor agent."""

    image_dir: str
    boards: tuple[BoardModel, ...]
    image_url: str = ""
    work_dir: str = "/var/lib/edgebed/boards"
    power_off_seconds: float = 1.0
    timeout_scale: float = 1.0
    switches: tuple[SwitchConfig, ...] = ()

    def switch(self, name: str) -> SwitchConfig | None:
        for switch in self.switches:
            if switch.name == name:
                return switch
        return None

    def board(self, model: str) -> BoardModel | None:
        for board in self.boards:
            if board.model == model:
                return board
        return None

    @property
    def models(self) -> Iterable[str]:
        return (board.model for board in self.boards)

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> SensorRealConfig:
        """`table` as the schema loaded it. Raises KeyProblem for what the schema cannot see:
        two boards of one model, a placeholder a command cannot fill."""
        boards = tuple(BoardModel.from_table(item, f"real.boards[{index}]")
                       for index, item in enumerate(table["boards"], start=1))
        seen: set[str] = set()
        for index, board in enumerate(boards, start=1):
            if board.model in seen:
                raise KeyProblem(f"real.boards[{index}].model",
                                 f"is {board.model!r}, which an earlier board already has")
            seen.add(board.model)
        switches = tuple(SwitchConfig.from_table(item) for item in table["switches"])
        names: set[str] = set()
        for index, switch in enumerate(switches, start=1):
            if switch.name in names:
                raise KeyProblem(f"real.switches[{index}].name",
                                 f"is {switch.name!r}, which an earlier switch already has")
            names.add(switch.name)
        return cls(
            image_dir=table["image_dir"], boards=boards, image_url=table["image_url"],
            work_dir=table["work_dir"], power_off_seconds=table["power_off_seconds"],
            timeout_scale=table["timeout_scale"], switches=switches,
        )
