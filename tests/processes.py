"""The one harness for edgebed child processes: `edgebed agent`, the headless controller,
`edgebed controller`, `edgebed demo` and the hardware lab's `up`, started as an operator starts
them.

Every process writes its stdout to `<name>.out` and its stderr (the log) to `<name>.log` in its
directory, both appended across restarts, so a test can read the whole story after a failure.
Nothing is read through a pipe: a child that prints more than a pipe holds never blocks.

    agent = AgentProcess(tmp_path, "rack", nodes=20, time_scale=0.03).start()
    ...
    agent.kill()                   # SIGKILL
    agent.start()                  # restart: the same config, database and log (port 0: a new port)
    agent.terminate()              # SIGTERM, returns the exit code
    agent.started("deploy")        # deploys started per node, from the transition log (once stopped)
"""

from __future__ import annotations

import abc
import atexit
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.conftest import component_missing

REPO = Path(__file__).resolve().parents[1]
READY_SECONDS = 30.0


def edgebed_command(*args: str) -> list[str]:
    """The installed console script next to the interpreter, as users run it (`python -m
    edgebed.cli` would load edgebed.cli twice, as __main__ and as itself, with two distinct
    UsageError classes)."""
    script = Path(sys.executable).with_name("edgebed")
    if not script.exists():
        component_missing("the `edgebed` console script (pip install -e .)")
    return [str(script), *args]


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without EDGEBED_* overrides (they would change the child's
    configuration behind the config file's back), unbuffered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEBED_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def toml_value(value: Any) -> str:
    """One TOML value: a bool, a number, a string or a path (a basic string), or a list of
    these (an array). TypeError for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string: quotes, backslashes and control characters
        # escaped the same way; other characters as they are (TOML files are UTF-8).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, Mapping) for item in value)


def toml_lines(keys: Mapping[str, Any], table: str = "") -> list[str]:
    """The lines of `keys` as the body of `table` (top level: ""): values first, then a [table]
    for each dict value and a [[table]] for each list of dicts, named with dots below `table`."""
    lines = [f"{k} = {toml_value(v)}" for k, v in keys.items() if not isinstance(v, Mapping) and not _is_tables(v)]
    for key, value in keys.items():
        name = f"{table}.{key}" if table else key
        if isinstance(value, Mapping):
            lines += ["", f"[{name}]", *toml_lines(value, name)]
        elif _is_tables(value):
            for item in value:
                lines += ["", f"[[{name}]]", *toml_lines(item, name)]
    return lines


def write_toml(path: Path, keys: Mapping[str, Any]) -> Path:
    """`keys` as a TOML file at `path` (its folder made): values, tables for dict values
    (`{"sim": {"nodes": 3}}`) and arrays of tables for lists of dicts (`{"real": {"switches":
    [{...}, {...}]}}`). Returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(toml_lines(keys)) + "\n", encoding="utf-8")
    return path


_children: list[ChildProcess] = []


@atexit.register
def _kill_leftovers() -> None:
    # A test that failed between start and stop must not leave an agent running after pytest.
    for child in _children:
        if child.running:
            child.process.kill()


class ChildProcess(abc.ABC):
    """A child process whose stdout goes to a file that `wait_output` reads. It runs in `cwd`
    (the project's root unless set: `edgebed demo` keeps its data under the directory it is
    started from)."""

    name: str
    directory: Path
    cwd: Path = REPO

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = name
        self.out_path = directory / f"{name}.out"
        self.log_path = directory / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self._out_offset = 0
        _children.append(self)

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The argument list that starts this process."""

    def environment(self) -> dict[str, str]:
        return child_environment()

    # -- life cycle ------------------------------------------------------------------------

    def spawn(self) -> ChildProcess:
        """Starts the process without waiting for it to be ready (see `wait_ready`)."""
        assert not self.running, f"{self.name} is already running"
        self._out_offset = self.out_path.stat().st_size if self.out_path.exists() else 0
        with open(self.out_path, "ab") as out, open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=out, stderr=log, stdin=subprocess.DEVNULL,
                cwd=self.cwd, env=self.environment(),
            )
        return self

    def wait_ready(self, timeout: float = READY_SECONDS) -> ChildProcess:
        return self

    def start(self, timeout: float = READY_SECONDS) -> ChildProcess:
        self.spawn()
        try:
            return self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL: nothing runs after this, no handler, no flush."""
        if self.running:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait: returns the exit code (the process is killed if it overstays)."""
        return self._signal_and_wait(signal.SIGTERM, timeout)

    def interrupt(self, timeout: float = 30.0) -> int:
        """SIGINT (Ctrl-C) and wait: returns the exit code."""
        return self._signal_and_wait(signal.SIGINT, timeout)

    def _signal_and_wait(self, signum: signal.Signals, timeout: float) -> int:
        # The exit code once the process is gone; SIGKILL and AssertionError after `timeout` s.
        assert self.process is not None, f"{self.name} was never started"
        if self.running:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not stop within {timeout} s of {signum.name}") from None

    def stop(self, timeout: float = 10.0) -> None:
        """Clean-up: SIGTERM, then SIGKILL after `timeout` s; never raises for a slow child."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self):
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- output ----------------------------------------------------------------------------

    def output(self) -> str:
        """What this run (since the last spawn) printed on stdout."""
        if not self.out_path.exists():
            return ""
        with open(self.out_path, "rb") as out:
            out.seek(self._out_offset)
            return out.read().decode("utf-8", "replace")

    def log(self) -> str:
        """Everything every run of this process logged (stderr)."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_output(self, pattern: re.Pattern[str], count: int = 1, timeout: float = READY_SECONDS) -> list[re.Match]:
        """Waits until this run printed `count` whole lines matching `pattern`."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.output().splitlines(keepends=True)
            matches = [m for line in lines if line.endswith("\n") and (m := pattern.match(line.rstrip("\n")))]
            if len(matches) >= count:
                return matches[:count]
            if not self.running or time.monotonic() > deadline:
                status = "still running" if self.running else f"exit code {self.process.poll()}"
                raise AssertionError(
                    f"{self.name} did not print {pattern.pattern!r} ({status}); stdout:\n"
                    f"{self.output()[-2000:]}\nlog:\n{self.log()[-3000:]}"
                )
            time.sleep(0.02)


def start_all(processes: Sequence[ChildProcess], timeout: float = READY_SECONDS) -> list[ChildProcess]:
    """Spawns all, then waits for each: they start side by side. On failure every one is stopped."""
    try:
        for child in processes:
            child.spawn()
        for child in processes:
            child.wait_ready(timeout)
    except BaseException:
        stop_all(processes)
        raise
    return list(processes)


def stop_all(processes: Iterable[ChildProcess]) -> None:
    processes = list(processes)
    for child in processes:
        if child.running:
            child.process.send_signal(signal.SIGTERM)
    for child in processes:
        child.stop()


# -- agents --------------------------------------------------------------------------------------

AGENT_READY = re.compile(r"^edgebed agent (\S+) listening on (\S+):(\d+)$")


class AgentProcess(ChildProcess):
    """`edgebed agent --config FILE` with the sim driver; the config, the SQLite database, the
    log and stdout live in `directory` under the agent's name. `from_config` runs a config file
    written elsewhere instead (the real drivers' tests)."""

    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        type: str = "raspberry",
        nodes: int = 8,
        time_scale: float = 0.0,
        failure_rate: float = 0.0,
        seed: int = 1,
        token: str | None = None,
        listen: str = "127.0.0.1:0",
        sim: Mapping[str, Any] | None = None,
        **keys: Any,
    ) -> None:
        keys = {
            "name": name,
            "type": type,
            "listen": listen,
            "token": token or secrets.token_urlsafe(16),
            "database": str(directory / f"{name}.sqlite"),
            "driver": "sim",
            **keys,
            # `sim` adds [sim] keys (hang_commands = "wipe": every destroy ends lost).
            "sim": {
                "nodes": nodes, "time_scale": time_scale, "failure_rate": failure_rate, "seed": seed, **(sim or {})
            },
        }
        self._adopt(write_toml(directory / f"{name}.toml", keys), keys)

    @classmethod
    def from_config(cls, config: Path) -> AgentProcess:
        """An agent that runs a config file written elsewhere as it is (driver = "real", say):
        its name, type, token and database are the file's; its log and stdout go beside it."""
        agent = cls.__new__(cls)
        agent._adopt(config, tomllib.loads(config.read_text(encoding="utf-8")))
        return agent

    def _adopt(self, config: Path, keys: Mapping[str, Any]) -> None:
        # The one place an agent process learns its configuration, whoever wrote the file.
        super().__init__(config.parent, keys["name"])
        self.type = keys["type"]
        self.token = keys["token"]
        self.database = Path(keys["database"])
        self.config_path = config
        self.keys = dict(keys)
        self.host = ""
        self.port = 0

    def command(self) -> list[str]:
        return edgebed_command("agent", "--config", str(self.config_path))

    def wait_ready(self, timeout: float = READY_SECONDS) -> AgentProcess:
        (match,) = self.wait_output(AGENT_READY, timeout=timeout)
        assert match.group(1) == self.name, match.group(0)
        self.host, self.port = match.group(2), int(match.group(3))
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- the agent's durable records, read once it is stopped --------------------------------

    def _store(self):
        from edgebed.agent.store import Store

        assert not self.running, "read the agent's records once it is stopped"
        store = Store(str(self.database))
        store.open()
        return store

    def transitions(self) -> list:
        """The agent's append-only transition log (edgebed.agent.store.TransitionRecord)."""
        store = self._store()
        try:
            return store.transitions()
        finally:
            store.close()

    def actions(self) -> dict[str, Any]:
        """The agent's action rows by node name (edgebed.agent.domain.ActionRecord)."""
        store = self._store()
        try:
            return {action.node_name: action for action in store.list_actions()}
        finally:
            store.close()

    def started(self, process: str) -> Counter[str]:
        """How many `process` actions the agent started on each node: actions (by action_id)
        whose first state was entered, from the durable transition log."""
        return started_actions(self.transitions(), process)


def start_agents(directory: Path, wanted: Iterable[tuple[str, str, int]], **keys: Any) -> list[AgentProcess]:
    """One agent per (name, type, nodes), started side by side; `keys` go to every AgentProcess
    (time_scale=0.002, ...)."""
    agents = [AgentProcess(directory, name, type=type, nodes=nodes, **keys) for name, type, nodes in wanted]
    start_all(agents)
    return agents


def started_actions(transitions: Iterable, process: str) -> Counter[str]:
    seen = {(t.node_name, t.action_id) for t in transitions if t.process == process and t.event == "enter" and t.state_idx == 0}
    return Counter(node for node, _ in seen)


def final_states(transitions: Iterable, process: str) -> dict[str, list[str]]:
    """For each node, the final state(s) its `process` actions reached (entered or lost), in order."""
    from edgebed.nodetypes.base import FINAL_STATES

    reached: dict[str, list[str]] = {}
    for t in transitions:
        if t.process == process and (t.event == "lost" or (t.event == "enter" and t.state in FINAL_STATES)):
            reached.setdefault(t.node_name, []).append(t.state)
    return reached


# -- the controller ------------------------------------------------------------------------------

SCHEDULER_READY = re.compile(r"^edgebed controller scheduler running$")


def write_controller_config(directory: Path, **keys: Any) -> Path:
    """A controller TOML file: listen on port 0, a SQLite file and a key file in `directory`;
    `keys` adds or replaces keys and tables (`scheduler={"poll_seconds": 0.2}`)."""
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "database": str(directory / "controller.sqlite"),
        "secret_key_file": str(directory / "secret.key"),
    }
    values.update(keys)
    return write_toml(directory / "controller.toml", values)


class HeadlessController(ChildProcess):
    """`python -m edgebed.controller.headless --config FILE`: the scheduler without the web
    server, for tests that SIGKILL it."""

    def __init__(self, config: Path, name: str = "controller") -> None:
        super().__init__(config.parent, name)
        self.config_path = config

    def command(self) -> list[str]:
        return [sys.executable, "-m", "edgebed.controller.headless", "--config", str(self.config_path)]

    def wait_ready(self, timeout: float = READY_SECONDS) -> HeadlessController:
        self.wait_output(SCHEDULER_READY, timeout=timeout)
        return self


class CommandProcess(ChildProcess):
    """Any `edgebed ...` command line (`edgebed controller`, `edgebed demo`)."""

    def __init__(self, directory: Path, name: str, *args: str) -> None:
        super().__init__(directory, name)
        self.args = args

    def command(self) -> list[str]:
        return edgebed_command(*self.args)


WEB_READY = re.compile(r" controller serving on (http://\S+)$", re.M)


class ControllerProcess(ChildProcess):
    """`edgebed controller --config FILE`: the pages, the JSON API, /metrics and the scheduler,
    as an operator runs each of several controllers behind a load balancer. `url` once ready
    (the log's "controller serving on" line of this run)."""

    def __init__(self, config: Path, name: str = "controller") -> None:
        super().__init__(config.parent, name)
        self.config_path = config
        self.url = ""
        self._log_offset = 0

    def command(self) -> list[str]:
        return edgebed_command("controller", "--config", str(self.config_path))

    def spawn(self) -> ControllerProcess:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        super().spawn()
        return self

    def wait_ready(self, timeout: float = READY_SECONDS) -> ControllerProcess:
        deadline = time.monotonic() + timeout
        while not (match := WEB_READY.search(self._this_run_log())):
            if not self.running or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not start serving; log:\n{self.log()[-3000:]}")
            time.sleep(0.05)
        self.url = match.group(1).rstrip("/")
        return self

    def _this_run_log(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[self._log_offset :].decode("utf-8", "replace")

    def pause(self) -> None:
        """SIGSTOP: frozen as by a stalled VM or a network cut, its sockets kept open."""
        assert self.running
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


# -- the hardware lab ----------------------------------------------------------------------------

LAB_READY = re.compile(r"^ready:")


class LabUp(ChildProcess):
    """`python -m MODULE up --dir DIRECTORY ARGS...` (edgebed.lab, edgebed.lab.boards): ready once
    it printed its `ready:` line. Its stdout and log go beside `directory`, as `<directory
    name>-up.out` and `-up.log`. It runs with the test's whole environment (the lab marks its own
    children with EDGEBED_LAB_DIR, and reads no EDGEBED_* key of ours)."""

    def __init__(self, module: str, directory: Path, *args: str) -> None:
        super().__init__(directory.parent, f"{directory.name}-up")
        self.module = module
        self.lab_directory = directory
        self.args = args

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "up", "--dir", str(self.lab_directory), *self.args]

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def wait_ready(self, timeout: float = READY_SECONDS) -> LabUp:
        self.wait_output(LAB_READY, timeout=timeout)
        return self

    def printed_before_ready(self) -> str:
        """The last line this run printed before its `ready:` line (the lab's timings)."""
        lines = self.output().splitlines()
        ready = next(index for index, line in enumerate(lines) if LAB_READY.match(line))
        return lines[ready - 1] if ready else ""


CALL_LINE = re.compile(r"call /edgebed\.v1\.Agent/(\w+) from edgebed-controller/(\S+)")


def agent_calls(agent: ChildProcess) -> list[tuple[str, str]]:
    """(method, controller instance) of every call the agent logged (`log_calls = true`), in
    the order the agent received them."""
    return [(m.group(1), m.group(2)) for m in CALL_LINE.finditer(agent.log())]
