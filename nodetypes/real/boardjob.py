"""Runs one board command for the real sensor driver, detached from the agent, and leaves its
outcome in files (nodetypes/real/boardjobs.py reads them).

    python3 -I boardjob.py DIR TIMEOUT PROGRAM [ARG...]

Started as a session leader, so that the whole command can be stopped as one process group and
an agent killed meanwhile does not take it along. Writes, in DIR: `pid` ("<pid> <start time in
clock ticks since boot>", the wrapper itself, first of all), `log` (the command's stdout and
stderr), and once the command is over `rc` (its exit code; 124 when TIMEOUT seconds passed and it
was killed, 127 when it could not be started, 128+N when signal N ended it), written to a
temporary file and renamed, so that an `rc` file is always whole.

Run with `python3 -I` as a file: it imports the standard library only, never edgebed, so it
starts in milliseconds and does not depend on the agent's import path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

KILL_GRACE = 2.0


def _start_ticks(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[-1].split()[19]


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(KILL_GRACE)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: boardjob.py DIR TIMEOUT PROGRAM [ARG...]", file=sys.stderr)
        return 2
    folder, timeout, command = argv[0], float(argv[1]), argv[2:]
    _write(os.path.join(folder, "pid"), f"{os.getpid()} {_start_ticks(os.getpid())}\n")
    rc_path = os.path.join(folder, "rc")
    with open(os.path.join(folder, "log"), "ab") as log:
        try:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT)
        except OSError as exc:
            log.write(f"cannot run {command[0]}: {exc.strerror or exc}\n".encode())
            log.flush()
            _write(rc_path, "127\n")
            return 0

        def stop_on_signal(signum: int, _frame: object) -> None:
            _stop(child)
            _write(rc_path, f"{128 + signum}\n")
            os._exit(0)

        signal.signal(signal.SIGTERM, stop_on_signal)
        signal.signal(signal.SIGINT, stop_on_signal)
        began = time.monotonic()
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            _stop(child)
            log.write(f"\n{command[0]}: killed after {time.monotonic() - began:.0f} s "
                      f"(command_timeout {timeout:g} s)\n".encode())
            log.flush()
            _write(rc_path, "124\n")
            return 0
    _write(rc_path, f"{128 - code if code < 0 else code}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
