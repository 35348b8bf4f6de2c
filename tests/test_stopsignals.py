"""Stopping on SIGTERM: the first signal stops the process cleanly; later ones never kill it half-way
through its clean-up (CI once saw a scheduler end with -15 when a second SIGTERM arrived after its
loop closed); a signal caught by another thread still wakes a sleeping loop."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.processes import REPO, AgentProcess, child_environment

pytestmark = pytest.mark.slow

# A process that stops on the first signal, then lingers after its loop closed (as an interpreter
# does while it finalises), printing where it is.
LINGERING = textwrap.dedent("""
    import asyncio, time
    from edgebed.stopsignals import stop_on_signals

    async def main():
        stop = asyncio.Event()
        stop_on_signals(stop)
        print("ready", flush=True)
        await stop.wait()
        print("stopping", flush=True)

    asyncio.run(main())
    print("closed", flush=True)
    time.sleep(1.0)
    print("exiting", flush=True)
""")

# The loop sleeps with nothing scheduled; a worker thread receives the signal.
OTHER_THREAD = textwrap.dedent("""
    import asyncio, signal, threading, time
    from edgebed.stopsignals import stop_on_signals

    def worker():
        time.sleep(0.3)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

    async def main():
        stop = asyncio.Event()
        stop_on_signals(stop)
        threading.Thread(target=worker).start()
        await stop.wait()
        print("stopped", flush=True)

    asyncio.run(main())
""")


def _wait_line(process: subprocess.Popen, line: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = process.stdout.readline()
        if got.strip() == line:
            return
        assert got and time.monotonic() < deadline, f"no {line!r} line (exit code {process.poll()})"


def _python(script: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=child_environment(),
                            stdout=subprocess.PIPE, text=True)


def test_a_signal_after_the_loop_closed_does_not_kill_the_process():
    process = _python(LINGERING)
    try:
        _wait_line(process, "ready")
        process.send_signal(signal.SIGTERM)
        _wait_line(process, "stopping")
        _wait_line(process, "closed")
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGINT)
        _wait_line(process, "exiting")
        assert process.wait(20) == 0
    finally:
        process.kill()
        process.wait()


def test_a_signal_caught_by_another_thread_wakes_the_sleeping_loop():
    process = _python(OTHER_THREAD)
    try:
        out, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError("the loop slept through a SIGTERM caught by a worker thread") from None
    assert (process.returncode, out.strip()) == (0, "stopped")


def test_an_agent_sent_sigterm_again_and_again_while_it_stops_exits_0(tmp_path):
    agent = AgentProcess(tmp_path, "rack", nodes=4).start()
    try:
        deadline = time.monotonic() + 20
        while agent.process.poll() is None and time.monotonic() < deadline:
            agent.process.send_signal(signal.SIGTERM)
            time.sleep(0.002)
        assert agent.process.wait(20) == 0, agent.log()[-2000:]
    finally:
        agent.kill()
