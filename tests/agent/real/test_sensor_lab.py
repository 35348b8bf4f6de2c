"""The real sensor driver end to end with the lab's boards (edgebed.lab.boards, docs/lab.md):
real agent processes with driver = "real" flash, verify, reset, power and erase QEMU micro:bits
through gdb-multiarch and the lab's power command, and watch their UART for the firmware's line.

One set of 4 boards serves the module, each test its own boards. Figures are printed as
`FIGURE ...` lines (pytest -s shows them).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.agent.real.boards import SensorAgentConfig, boards_process, elf_words, flash_words
from tests.agent.real.lab import Watch
from tests.processes import start_all, stop_all

pytestmark = [pytest.mark.slow, pytest.mark.lab]


def figure(text: str) -> None:
    print(f"\nFIGURE {text}", flush=True)


@pytest.fixture(scope="module")
def boards(tmp_path_factory):
    with boards_process(tmp_path_factory.mktemp("boards") / "boards", boards=4) as description:
        yield description


def enters(agent, node: str) -> list[str]:
    """The states the node's last action entered, from the stopped agent's transition log."""
    rows = [row for row in agent.transitions() if row.node_name == node]
    last = rows[-1].action_id
    return [row.state for row in rows if row.action_id == last and row.event == "enter"]


async def test_sensor_deploy_reboot_destroy_end_to_end(boards, tmp_path) -> None:
    """Deploy flashes the environment's firmware, verifies it, resets the board and sees its line;
    reboot power-cycles it and sees the line again; destroy erases the flash and powers it off."""
    board = boards.board(1)
    firmware = Path(boards.firmware_dir) / "hello.elf"
    agent = SensorAgentConfig(boards, tmp_path, name="e2e", timeout_scale=0.3).agent().start()
    watch = Watch(agent.address)
    took: dict[str, float] = {}
    try:
        await watch.add_node("lab-board1", boards.node_properties(board))
        await watch.put_environment("hello", "hello.elf", default_user="")
        for process, environment, final in (("deploy", "hello", "deployed"), ("reboot", "", "rebooted")):
            began = time.monotonic()
            await watch.start("lab-board1", process, environment, radio_channel="15")
            action = await watch.final("lab-board1", within=120)
            took[process] = time.monotonic() - began
            assert action.state == final, (watch.seen["lab-board1"], agent.log()[-3000:])
            assert action.reboots == 0, agent.log()[-3000:]
            if process == "deploy":
                # The board holds the environment's firmware, read back through its own gdb server.
                assert flash_words(board.port) == elf_words(firmware)
        began = time.monotonic()
        await watch.start("lab-board1", "destroy")
        destroyed = await watch.final("lab-board1", within=120)
        took["destroy"] = time.monotonic() - began
        assert destroyed.state == "destroyed", (watch.seen["lab-board1"], agent.log()[-3000:])
        assert flash_words(board.port) != elf_words(firmware)
    finally:
        await watch.close()
        agent.terminate()
    log = agent.log()
    assert log.count("lab-board1: alive: edgebed-sensor hello ready") == 2, log[-3000:]
    assert "lab-board1: verified hello.elf" in log
    assert "lab-board1: flash erased" in log
    assert (Path(board.folder) / "power").read_text().strip() == "off"
    assert enters(agent, "lab-board1")[-1] == "destroyed"
    figure("sensor lab (QEMU micro:bit, gdb-multiarch): "
           + ", ".join(f"{process} {seconds:.1f} s" for process, seconds in took.items()))


async def test_sensor_failures_end_lost_with_a_clear_error(boards, tmp_path) -> None:
    """A firmware whose verify fails (a UICR word the board does not take) and a board that never
    prints its line (a firmware waiting for a radio QEMU lacks): each says why in the log and in
    its action's last_error, and ends lost, never deployed. Two agents, side by side: the silent
    board's reset (a power cycle through the lab, then gdb) needs a timeout_scale under which it
    fits in the reset state's before_reboot."""
    configs = {
        "verify": SensorAgentConfig(boards, tmp_path, name="verify", timeout_scale=0.05),
        "silent": SensorAgentConfig(boards, tmp_path, name="silent", timeout_scale=0.15,
                                    models=[boards.board_table(alive_timeout=1.0)]),
    }
    # Started side by side: each waits for the other's start-up only once.
    agents = {name: config.agent() for name, config in configs.items()}
    start_all(list(agents.values()))
    watches = {name: Watch(agent.address) for name, agent in agents.items()}
    # node -> (agent, board, environment)
    nodes = {"lab-board2": ("verify", boards.board(2), "uicr"),
             "lab-board3": ("silent", boards.board(3), "silent")}
    try:
        for node, (agent, board, environment) in nodes.items():
            await watches[agent].add_node(node, boards.node_properties(board))
            await watches[agent].put_environment(environment, f"{environment}.elf", default_user="")
        began = time.monotonic()
        for node, (agent, _, environment) in nodes.items():
            await watches[agent].start(node, "deploy", environment)
        actions = await asyncio.gather(*(watches[agent].final(node, within=120)
                                         for node, (agent, _, _) in nodes.items()))
        finals = dict(zip(nodes, actions, strict=True))
        took = time.monotonic() - began
    finally:
        for watch in watches.values():
            await watch.close()
        stop_all(agents.values())
    seen = {node: watches[agent].seen[node] for node, (agent, _, _) in nodes.items()}
    verifying, silent = agents["verify"].log(), agents["silent"].log()
    for node, final in finals.items():
        assert final.state == "lost", (node, seen[node], verifying[-2000:], silent[-2000:])
        assert "deployed" not in seen[node], (node, seen[node])
    assert "check_alive" not in seen["lab-board2"], seen["lab-board2"]
    verify_error = "lab-board2: the board does not hold firmware uicr.elf: verify exited 1: "
    silent_error = r"lab-board3: no line matching '^edgebed-sensor \S+ ready$' on socket://127.0.0.1:"
    assert verify_error in verifying, verifying[-3000:]
    # The tool's last lines: gdb's own words on the mismatch.
    assert "AssertionError: the board does not hold the firmware / Error while executing Python code." in verifying
    assert "lab-board2: deploy lost: state verify_firmware timed out" in verifying
    assert silent_error in silent, silent[-3000:]
    assert "within 1 s of its reset (last lines: nothing)" in silent
    assert "lab-board3: deploy lost: state check_alive timed out" in silent
    # The agent's error on the action (ActionState.last_error:
    # "lost: state ... timed out ...; last error: <state>: <the driver's error>").
    for node, expected in (("lab-board2", verify_error), ("lab-board3", silent_error)):
        assert expected in finals[node].last_error, finals[node].last_error
    figure(f"sensor failures: failed verify and silent board both lost in {took:.1f} s "
           "(timeout_scale 0.05 and 0.15)")


async def test_sensor_agent_killed_during_a_flash_resumes_and_finishes(boards, tmp_path) -> None:
    """SIGKILL while the flash runs (a probe that takes 4 s): the flash job runs on without the
    agent; the restarted agent finds it, waits for it instead of starting another, verifies and
    ends deployed."""
    board = boards.board(4)
    slow = boards.board_table(flash_extra=("python import time; time.sleep(4)",))
    config = SensorAgentConfig(boards, tmp_path, name="kill", timeout_scale=0.3, models=[slow])
    agent = config.agent().start()
    try:
        watch = Watch(agent.address)
        await watch.add_node("lab-board4", boards.node_properties(board))
        await watch.put_environment("other", "other.elf", default_user="")
        await watch.start("lab-board4", "deploy", "other")
        await watch.until("lab-board4", lambda action: action.state == "flash_firmware", within=60)
        # Killed once the flash job runs (the state is committed a moment before it starts).
        deadline = time.monotonic() + 30
        while "lab-board4: flashing other.elf" not in agent.log():
            assert time.monotonic() < deadline, agent.log()[-2000:]
            await asyncio.sleep(0.05)
        await watch.close()
        agent.kill()
        job = Path(config.folder, "kill-jobs", "MICROBIT0004")
        assert not (job / "rc").exists(), "the flash was over before the agent was killed"

        agent.start()
        watch = Watch(agent.address)
        try:
            deployed = await watch.final("lab-board4", within=120)
        finally:
            await watch.close()
            agent.terminate()
    finally:
        agent.stop()
    log = agent.log()
    assert deployed.state == "deployed", log[-3000:]
    assert log.count("lab-board4: flashing other.elf") == 1, log[-3000:]
    # Found running (or, on a slow restart, over already), never started again.
    assert ("lab-board4: the flash of other.elf is still running; waiting for it" in log
            or "lab-board4: the flash of other.elf is over already (exit 0)" in log), log[-3000:]
    assert "resumed 1 unfinished action" in log
    assert enters(agent, "lab-board4").count("flash_firmware") == 1
    assert "lab-board4: alive: edgebed-sensor other ready" in log
    assert flash_words(board.port) == elf_words(Path(boards.firmware_dir) / "other.elf")
