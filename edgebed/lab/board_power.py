"""A lab board's power switch (edgebed.lab.boards): what a USB hub port or a relay is to a real
sensor board, done through the board's QEMU monitor.

    python3 -I -S board_power.py BOARD_FOLDER on|off

off: the monitor's `stop` (the CPU halts, the UART goes quiet); on: `system_reset` then `cont`
(the firmware in flash starts). The state is also written to BOARD_FOLDER/power, which the lab
reads. Exit 0 when done; 1 with one line on stderr when the board's monitor does not answer.

The standard library only, and run as a file (`-I -S`): a driver's power_on template starts it
at every power on, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

PROMPT = b"(qemu) "


class PowerError(RuntimeError):
    """The board's monitor did not answer."""


def monitor(port: int, commands: list[str], within: float = 5.0) -> str:
    """Sends HMP `commands` to the monitor at 127.0.0.1:`port`, each after the prompt; returns
    what it answered. Retries the connection for `within` seconds (the lab may be starting the
    board's QEMU again). Raises PowerError."""
    deadline = time.monotonic() + within
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise PowerError(f"the board's monitor on port {port} does not answer: {exc}") from None
            time.sleep(0.05)
    answer = b""
    with sock:
        try:
            for command in [None, *commands]:
                if command is not None:
                    sock.sendall(command.encode() + b"\n")
                got = b""
                while not got.endswith(PROMPT):
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise PowerError(f"the board's monitor on port {port} closed the connection")
                    got += chunk
                answer += got
        except OSError as exc:
            raise PowerError(f"the board's monitor on port {port} failed: {exc}") from None
    return answer.decode(errors="replace")


def switch(folder: Path, on: bool) -> None:
    """Switches the board in `folder` on or off. Raises PowerError, OSError."""
    port = int(json.loads((folder / "board.json").read_text())["monitor_port"])
    (folder / "power").write_text("on\n" if on else "off\n")
    with (folder / "qemu.log").open("a") as out:
        out.write(f"[{time.strftime('%H:%M:%S')} lab] power {'on' if on else 'off'}\n")
    monitor(port, ["system_reset", "cont"] if on else ["stop"])
    if on:
        # A board with nothing runnable in its flash makes QEMU end at once: wait until that
        # happened and the lab's next QEMU answers, so that the next command finds a board.
        time.sleep(0.1)
        monitor(port, ["info status"])


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("on", "off"):
        print("usage: board_power.py BOARD_FOLDER on|off", file=sys.stderr)
        return 2
    try:
        switch(Path(argv[0]), argv[1] == "on")
    except (PowerError, OSError, ValueError, KeyError) as exc:
        print(f"board_power: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
