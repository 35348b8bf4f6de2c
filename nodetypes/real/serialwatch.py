"""A board's liveness: a line matching a pattern on its serial port, within a time of its reset.

A firmware prints its banner once, when it starts, so the port is opened before the driver resets
or powers the board on (`SerialWatch.open`), and read by a thread of its own from then on; the
check succeeds when a line (or the unfinished last line: a prompt) matches the pattern. The port
is a device (`/dev/ttyACM0`) or any pyserial URL (`socket://127.0.0.1:7000`, `rfc2217://...`).
pyserial is imported on first use: the agent's other drivers never need it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from typing import Any

from edgebed.nodetypes.base import DriverError

log = logging.getLogger(__name__)

# Seconds per read: how soon a closed watch's thread notices.
READ_TIMEOUT = 0.1
# Lines kept for the error message of a board that never printed its line.
KEPT_LINES = 5
# The longest line kept; a board printing binary noise without newlines is cut there.
MAX_LINE = 1024


def _serial() -> Any:
    try:
        import serial  # type: ignore[import-untyped]
    except ImportError:
        raise DriverError(
            "pyserial is not installed on the gateway: pip install 'edgebed[sensor]'"
        ) from None
    return serial


class SerialWatch:
    """Reads `url` from `open()` until `close()`, looking for a line `pattern` searches. Times
    are on the monotonic clock, in real seconds."""

    def __init__(self, url: str, pattern: str, *, baudrate: int = 115200) -> None:
        self.url = url
        self.pattern = re.compile(pattern)
        self.baudrate = baudrate
        # When the board was started (its reset or power on done): alive_timeout counts from
        # there, not from the opening, which comes before the command that starts it.
        self.since = 0.0
        self.matched_line: str | None = None
        self.error: str | None = None
        self.last_lines: deque[str] = deque(maxlen=KEPT_LINES)
        self._port: Any = None
        self._stop = threading.Event()
        self._found = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        """Opens the port (blocking: run it in a thread) and starts reading. Raises DriverError
        when the port cannot be opened."""
        serial = _serial()
        try:
            self._port = serial.serial_for_url(self.url, baudrate=self.baudrate, timeout=READ_TIMEOUT)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise DriverError(f"cannot open serial port {self.url}: {exc}") from None
        self.since = time.monotonic()
        self._thread = threading.Thread(target=self._read, name=f"serial {self.url}", daemon=True)
        self._thread.start()

    @property
    def matched(self) -> bool:
        return self._found.is_set()

    def _check(self, line: str) -> bool:
        if self.pattern.search(line):
            self.matched_line = line
            self._found.set()
            return True
        return False

    def _read(self) -> None:
        serial = _serial()
        pending = b""
        try:
            while not self._stop.is_set():
                chunk = self._port.read(256)
                if not chunk:
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                pending = pending[-MAX_LINE:]
                for raw in lines:
                    line = raw.decode(errors="replace").strip("\r")
                    if line.strip():
                        self.last_lines.append(line[:200])
                    if self._check(line):
                        return
                if pending and self._check(pending.decode(errors="replace")):
                    return
        except (serial.SerialException, OSError) as exc:
            if not self._stop.is_set():
                self.error = f"serial port {self.url} failed: {exc}"
        finally:
            self._close_port()

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception as exc:  # pyserial's own errors too: closing must not raise
                log.debug("closing %s: %s", self.url, exc)

    def close(self) -> None:
        """Stops reading and closes the port (blocking up to a read timeout)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2 * READ_TIMEOUT + 1)
        self._close_port()

    def started(self) -> None:
        """The board was just started: count from now."""
        self.since = time.monotonic()

    def waited(self) -> float:
        """Seconds since the board was started (or the port opened)."""
        return time.monotonic() - self.since
