"""Runs the store on two threads, groups the executor's commits into few transactions, and the
StartAction look-ups into few reads.

A SQLite connection belongs to the thread that opened it and SQLite takes one writer at a time,
so the store's writes go through one worker thread. Reads go through a second one with its own
connection (WAL: a reader sees the last commit and never waits for the writer), so that
GetActionState and StartAction's look-ups never queue behind a large group commit. The
executor's transitions queue up until the committer's next turn (one transaction of every change
queued meanwhile: while the last one ran, or during one pass of the event loop), or until 256
changes are queued, when the write that brings them commits them at once: a transition is
durable when `write` returns, and a thousand nodes cost a few transactions instead of a
thousand. Likewise concurrent StartAction calls share one read (GroupReader).

The group commits themselves, on a SQLite file, run on the event loop's thread through a writer
of their own (agent.store.LoopWriter): they are short, and on the worker thread each one waited
for Python's lock at every statement while the event loop was busy. When that writer finds the
write lock taken (the worker thread adding nodes) the commit goes to the worker thread instead.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from edgebed.agent.errors import DiskFull
from edgebed.ratelog import RateLimitedLog
from edgebed.storage import disk_full_log, disk_full_message, is_disk_full

log = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


class DbWorker:
    """The database thread. `database` is the SQLite file (None: a database server), named when
    the disk holding it is full."""

    def __init__(self, name: str, *, database: Path | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-db")
        self._full_message = disk_full_message(database)
        self._full_line = disk_full_log(database)
        # Every write fails while the disk is full: the executor's commits, the callers' requests.
        # One line a minute says so (the group committer says when its writes succeed again).
        self._full_log = RateLimitedLog(log, 60.0)

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """function(*args) on the database thread. A write that fails for lack of space raises
        DiskFull (RESOURCE_EXHAUSTED to callers): SQLite rolled it back, nothing was written."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, functools.partial(function, *args))
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            raise self._disk_full() from None

    def call_here(self, function: Callable[..., T], *args: Any) -> T:
        """function(*args) on the calling thread, its errors as `call` gives them: for the few
        calls short enough to make on the event loop's thread (LoopWriter)."""
        try:
            return function(*args)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            raise self._disk_full() from None

    def _disk_full(self) -> DiskFull:
        self._full_log.log(logging.ERROR, "full", "%s", self._full_line)
        return DiskFull(self._full_message)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


class GroupReader(Generic[K, V]):
    """Coalesces concurrent look-ups into one call of `lookup` on `worker`.

    `lookup(keys)` runs on the worker thread and returns one value per key, in order. While one
    call runs, new requests queue; the next call takes them all. A burst of a thousand
    StartAction calls thus costs a few reads instead of a thousand trips to the database thread.
    """

    def __init__(self, worker: DbWorker, lookup: Callable[[list[K]], Sequence[V]]) -> None:
        self._worker = worker
        self._lookup = lookup
        self._queue: list[tuple[list[K], asyncio.Future]] = []
        self._task: asyncio.Task | None = None
        self.calls = 0

    async def get_many(self, keys: Sequence[K]) -> list[V]:
        """The values of `keys`, in order; what `lookup` raised, for every caller of its call."""
        future = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._queue.append((list(keys), future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="group-reader")
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            keys = [key for group, _ in batch for key in group]
            try:
                values = await self._worker.call(self._lookup, keys)
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.calls += 1
            start = 0
            for group, future in batch:
                if not future.done():
                    future.set_result(list(values[start : start + len(group)]))
                start += len(group)


class StoreClosed(Exception):
    """A write arrived after the committer was closed."""


class WriterBusy(Exception):
    """A LoopWriter found SQLite's write lock taken by another connection and wrote nothing."""


class LoopWriter(Protocol):
    """Commits on the event loop's thread (agent.store.LoopWriter)."""

    def apply(self, changes: Sequence[Any]) -> None:
        """Commits `changes` in one transaction; WriterBusy, nothing written, when another
        connection holds the write lock."""

    def close(self) -> None: ...


# Real seconds between two checkpoints of a LoopWriter's commits, at most (while it commits).
CHECKPOINT_SECONDS = 1.0
# Changes queued at which a write commits them at once on the loop writer (_commit_early).
EARLY_COMMIT_CHANGES = 256


class GroupCommitter:
    """Commits what `write` and `queue` are given, in their order, in few transactions (those
    queued until the committer's turn, or EARLY_COMMIT_CHANGES of them, whichever comes first):
    with `apply` on the worker thread, or with the writer that
    `open_writer` makes (None: there is none, as for PostgreSQL) on the event loop's thread;
    then `checkpoint` runs on the worker thread at most every `checkpoint_seconds`."""

    def __init__(
        self,
        worker: DbWorker,
        apply: Callable[[Sequence[Any]], None],
        *,
        open_writer: Callable[[], LoopWriter | None] = lambda: None,
        checkpoint: Callable[[], None] | None = None,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ) -> None:
        self._worker = worker
        self._apply = apply
        self._open_writer = open_writer
        self._writer: LoopWriter | None = None
        self._checkpoint = checkpoint
        self._checkpointing: asyncio.Task | None = None
        self._checkpoint_seconds = checkpoint_seconds
        self._checkpointed = 0.0
        # A failing checkpoint is said once a minute, not every second.
        self._checkpoint_log = RateLimitedLog(log, 60.0)
        # A future per awaited write; None for one only queued (`queue`).
        self._queue: list[tuple[Sequence[Any], asyncio.Future | None]] = []
        # Queued groups whose transaction failed for lack of space: the head of the next one.
        self._carried: list[tuple[Sequence[Any], asyncio.Future | None]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self.transactions = 0
        self.changes = 0
        # Set while commits fail for lack of space, to say once when they succeed again.
        self._disk_full = False
        # Changes queued since the last commit; whether the committer's own commit is under way.
        self._queued = 0
        self._flushing = False
        # An early commit failed since the committer last took the queue.
        self._early_failed = False

    def start(self) -> None:
        """Opens the loop writer, if any, and starts committing; on the event loop's thread."""
        self._writer = self._open_writer()
        self._checkpointed = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="group-committer")

    async def write(self, changes: Sequence[Any]) -> None:
        """Returns once `changes` are committed. A caller cancelled meanwhile does not cancel the
        write: what is queued is committed (its future is merely cancelled), and close() waits
        for it."""
        if self._closing:
            raise StoreClosed("the agent is stopping")
        future = asyncio.get_running_loop().create_future()
        self._queue.append((changes, future))
        self._queued += len(changes)
        if self._queued >= EARLY_COMMIT_CHANGES:
            self._commit_early()
        else:
            self._wakeup.set()
        try:
            await future
        except asyncio.CancelledError:
            # Cancelled after its outcome was set: read it, so that a failure nobody waits for
            # any more is not reported as never retrieved. (Not a done callback on every
            # future: that was one more event-loop callback per commit.)
            if future.done() and not future.cancelled():
                future.exception()
            raise

    def queue(self, changes: Sequence[Any]) -> None:
        """Queues `changes` without waiting for them: they are committed in the same transaction
        as, or one before, any write queued after them, so whoever writes next and waits for it
        knows these are durable too. On a full disk they are kept for the next transaction (the
        writes after them fail meanwhile); a change the store refuses is logged and dropped.
        StoreClosed once the committer is closing."""
        if self._closing:
            raise StoreClosed("the agent is stopping")
        self._queue.append((changes, None))
        self._queued += len(changes)
        self._wakeup.set()

    def _commit_early(self) -> None:
        """Commits what is queued now, in the caller's turn of the event loop, on the loop
        writer: a thousand nodes ending a state together then resume a few hundred at a time
        instead of all after one transaction of all of them. Only when nothing can wait: no
        loop writer, a commit of the committer's under way (it may be waiting for the worker
        thread: order first), or a commit that fails (busy, disk full, a bad change) leave the
        queue to the committer's turn, which knows what to do with each."""
        self._wakeup.set()
        if self._writer is None or self._flushing or self._early_failed or self._disk_full:
            return
        batch = self._carried + self._queue
        changes = [change for group, _ in batch for change in group]
        try:
            self._writer.apply(changes)
        except Exception:
            # Not again before the committer's turn: every write after this one would try the
            # whole queue again (a lock held for long, a full disk).
            self._early_failed = True
            return
        self._carried, self._queue, self._queued = [], [], 0
        self._committed(batch, changes)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue, self._queued = self._queue, [], 0
                self._early_failed = False
                self._flushing = True
                try:
                    await self._flush(self._carried + batch)
                finally:
                    self._flushing = False
            if self._closing:
                return

    async def _flush(self, batch: list[tuple[Sequence[Any], asyncio.Future | None]]) -> None:
        changes = [change for group, _ in batch for change in group]
        self._carried = []
        try:
            await self._commit(changes)
        except DiskFull as exc:
            # Every group would fail alike, and the worker has said so in the log already. The
            # queued groups nobody waits for go first into the next transaction: the writes
            # after them (the executor writes again once there is space) land with them.
            self._disk_full = True
            self._carried = [item for item in batch if item[1] is None]
            for _, future in batch:
                if future is not None and not future.done():
                    future.set_exception(exc)
            return
        except Exception as exc:
            if len(batch) > 1:
                # One bad change must not fail the others: commit each group on its own.
                carried = []
                for item in batch:
                    await self._flush([item])
                    carried += self._carried
                self._carried = carried
                return
            # A change the store refuses (a bug, not the disk): said, and not tried again.
            log.error("commit failed: %s", exc)
            future = batch[0][1]
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        self._committed(batch, changes)

    def _committed(self, batch: list[tuple[Sequence[Any], asyncio.Future | None]], changes: list[Any]) -> None:
        if self._disk_full:
            self._disk_full = False
            log.warning("commits succeed again: the disk has space")
        self.transactions += 1
        self.changes += len(changes)
        for _, future in batch:
            if future is not None and not future.done():
                future.set_result(None)
        if self._writer is not None:
            self._checkpoint_now_and_then()

    async def _commit(self, changes: list[Any]) -> None:
        if self._writer is not None:
            try:
                self._worker.call_here(self._writer.apply, changes)
            except WriterBusy:
                pass  # The worker thread is writing: commit there, after it.
            else:
                return
        await self._worker.call(self._apply, changes)

    def _checkpoint_now_and_then(self) -> None:
        if self._checkpoint is None or (self._checkpointing is not None and not self._checkpointing.done()):
            return
        now = time.monotonic()
        if now - self._checkpointed < self._checkpoint_seconds:
            return
        self._checkpointed = now
        self._checkpointing = asyncio.create_task(self._run_checkpoint(), name="wal-checkpoint")

    async def _run_checkpoint(self) -> None:
        assert self._checkpoint is not None
        try:
            await self._worker.call(self._checkpoint)
        except Exception as exc:
            # The next one takes what this one left; commits go on meanwhile.
            self._checkpoint_log.log(logging.WARNING, "checkpoint", "checkpoint failed: %s", exc)

    async def close(self) -> None:
        """Commits everything queued (once started: a committer never started has committed
        nothing and opened nothing), then stops and closes the loop writer."""
        self._closing = True
        self._wakeup.set()
        try:
            if self._task is not None:
                await self._task
            if self._checkpointing is not None:
                await self._checkpointing
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
