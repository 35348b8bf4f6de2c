"""How every long-running edgebed process (controller, scheduler, agent, demo, lab) learns to stop.

`stop_on_signals(stop)` sets the asyncio event `stop` on SIGTERM or SIGINT. The handlers are
installed with `signal.signal`, not `loop.add_signal_handler`, on purpose: asyncio puts the default
disposition back when its loop closes, so a second SIGTERM that arrives while the process is
shutting down (a supervisor or a test sending it again, a user pressing Ctrl-C twice) would kill
it half-way through its clean-up, with exit status -15 instead of 0. Here a signal after the first
one, even after the loop closed, is ignored until the process exits; SIGKILL remains the way to
stop it at once.
"""

from __future__ import annotations

import asyncio
import atexit
import signal
import socket
from collections.abc import Iterable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# The wake-up socket pairs live as long as the process: the C-level handler writes to the wake-up
# fd, so a closed (and reused) descriptor would receive stray bytes.
_wakeups: list[tuple[socket.socket, socket.socket]] = []


def stop_on_signals(stop: asyncio.Event, signals: Iterable[signal.Signals] = STOP_SIGNALS) -> None:
    """Sets `stop` (an event of the running loop) when one of `signals` arrives, for the rest of the
    process's life. Must be called from the main thread, inside the running loop."""
    loop = asyncio.get_running_loop()

    def _handler(signum: int, frame: object) -> None:
        # A Python-level handler runs in the main thread between bytecodes; it only hands the
        # request to the loop (which wakes through its self-pipe). Nothing is logged here: the
        # interrupted code may hold the logging lock.
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:
            pass  # the loop is closed: the process is already on its way out

    # The kernel may deliver the signal to a thread other than the loop's while the loop sleeps in
    # epoll; the wake-up fd makes the loop return to Python code so that the handler runs.
    receive, send = socket.socketpair()
    receive.setblocking(False)
    send.setblocking(False)
    _wakeups.append((receive, send))
    signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
    loop.add_reader(receive.fileno(), _drain, receive)
    signals = tuple(signals)
    for signum in signals:
        signal.signal(signum, _handler)
    atexit.register(_ignore, signals)


def _ignore(signals: tuple[signal.Signals, ...]) -> None:
    for signum in signals:
        signal.signal(signum, signal.SIG_IGN)


def _drain(receive: socket.socket) -> None:
    try:
        while receive.recv(4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass
