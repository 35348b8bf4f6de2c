"""The group committer as the agent runs it on a SQLite file: commits on the event loop's thread
(LoopWriter), queued changes ordered with awaited ones, the worker thread taking over while
another connection holds the write lock, and the WAL checkpointed on the worker thread."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from edgebed.agent import store as agent_store
from edgebed.agent.dbworker import EARLY_COMMIT_CHANGES, DbWorker, GroupCommitter, WriterBusy
from edgebed.agent.domain import ActionRecord, TransitionRecord
from edgebed.agent.store import MAX_ROWS, LogTransition, SaveAction, SaveMachine, Store, UpdateState, _sizes


def _record(name: str, state: str = "netboot_on", idx: int = 0) -> ActionRecord:
    return ActionRecord(
        node_name=name, node_ip="10.0.0.1", environment="env", process="deploy", state=state,
        state_idx=idx, updated_at=1_700_000_000,
    )


def _entry(record: ActionRecord) -> TransitionRecord:
    return TransitionRecord(record.node_name, 0, "deploy", record.state, record.state_idx, "enter", 1.0)


class _Agent:
    """A store, its worker thread and a committer wired as agent.app wires them."""

    def __init__(self, path: Path, **committer_options) -> None:
        self.store = Store(str(path))
        self.worker = DbWorker("test", database=path)
        self.checkpoints = 0

        def checkpoint() -> None:
            self.checkpoints += 1
            self.store.checkpoint()

        self.committer = GroupCommitter(
            self.worker, self.store.apply, open_writer=self.store.loop_writer, checkpoint=checkpoint,
            **committer_options,
        )

    async def __aenter__(self) -> _Agent:
        await self.worker.call(self.store.open)
        self.committer.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.committer.close()
        await self.worker.call(self.store.close)
        self.worker.shutdown()


async def test_commits_run_on_the_loop_thread_and_a_queued_change_lands_with_the_next_write(tmp_path) -> None:
    threads: list[str] = []
    async with _Agent(tmp_path / "a.sqlite") as agent:
        writer_apply = agent.committer._writer.apply  # type: ignore[union-attr]

        def spy(changes) -> None:
            threads.append(threading.current_thread().name)
            writer_apply(changes)

        agent.committer._writer.apply = spy  # type: ignore[union-attr,method-assign]
        record = _record("n1")
        agent.committer.queue([SaveAction(record)])
        agent.committer.queue([SaveMachine("hw-1", {"powered": True})])
        await agent.committer.write([UpdateState(record.but(state="poe_off", state_idx=1))])
        # Durable when write returns: read on the worker's own connection.
        assert [a.state for a in await agent.worker.call(agent.store.list_actions)] == ["poe_off"]
        assert await agent.worker.call(agent.store.sim_machines) == {"hw-1": {"powered": True}}
    assert threads and set(threads) == {threading.main_thread().name}


async def test_while_another_connection_holds_the_write_lock_the_worker_commits_and_the_loop_runs_on(
    tmp_path,
) -> None:
    async with _Agent(tmp_path / "a.sqlite") as agent:
        holding, release = threading.Event(), threading.Event()

        def hold_the_lock() -> None:
            # As the worker thread does when it adds nodes: a write transaction of its own.
            with agent.store._write():
                holding.set()
                release.wait(5)

        held = asyncio.ensure_future(agent.worker.call(hold_the_lock))
        await asyncio.to_thread(holding.wait, 5)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticking = asyncio.ensure_future(tick())
        committed = asyncio.ensure_future(agent.committer.write([SaveAction(_record("n1"))]))
        # The commit waits for the lock on the worker thread, not on the event loop's: the loop
        # goes on meanwhile (blocked in SQLite's busy wait, it would not tick at all).
        before = ticks
        while ticks < before + 5:
            await asyncio.sleep(0.01)
        assert not committed.done()
        release.set()
        await asyncio.wait_for(committed, 5)
        await held
        ticking.cancel()
        assert [a.node_name for a in await agent.worker.call(agent.store.list_actions)] == ["n1"]
        # The next commit is the loop writer's again.
        await agent.committer.write([UpdateState(_record("n1", "poe_off", 1))])
        assert (await agent.worker.call(agent.store.get_action, "n1")).state == "poe_off"


@pytest.mark.parametrize("count", [MAX_ROWS * 2 + 7, MAX_ROWS - 1])
async def test_a_commit_larger_than_one_statement_writes_every_row(tmp_path, count) -> None:
    records = [_record(f"n{i:04d}") for i in range(count)]
    async with _Agent(tmp_path / "a.sqlite") as agent:
        await agent.committer.write([SaveAction(r) for r in records])
        moved = [r.but(state="poe_off", state_idx=1) for r in records]
        await agent.committer.write([change for r in moved for change in (UpdateState(r), LogTransition(_entry(r)))])
        actions = await agent.worker.call(agent.store.list_actions)
        assert actions == moved
        assert len(await agent.worker.call(agent.store.transitions)) == len(records)


def test_a_commit_is_made_of_a_few_statement_sizes() -> None:
    """Full statements, then powers of two: few texts to prepare, whatever the commit's size."""
    assert list(_sizes(0, 500)) == []
    assert list(_sizes(1007, 500)) == [500, 500, 4, 2, 1]
    assert list(_sizes(499, 500)) == [256, 128, 64, 32, 16, 2, 1]
    assert list(_sizes(66, 66)) == [66]
    sizes = {size for count in range(1, 3000) for size in _sizes(count, 500)}
    assert sizes == {500, 256, 128, 64, 32, 16, 8, 4, 2, 1}


def test_no_loop_writer_on_a_file_that_is_not_in_wal_mode(tmp_path, monkeypatch) -> None:
    """Out of WAL mode (a filesystem without shared memory) a commit would wait for readers."""
    store = Store(str(tmp_path / "a.sqlite"))
    store.open()
    # Leaving WAL mode needs the file to itself.
    store.close()
    monkeypatch.setitem(agent_store.SQLITE_PRAGMAS, "journal_mode", "delete")
    assert store.loop_writer() is None


async def _wal_after_commits(path: Path, checkpoint_seconds: float) -> tuple[int, int]:
    """(WAL bytes, checkpoints) after 40 commits of 200 rows."""
    async with _Agent(path, checkpoint_seconds=checkpoint_seconds) as agent:
        records = [_record(f"n{i:03d}") for i in range(200)]
        await agent.committer.write([SaveAction(r) for r in records])
        for step in range(40):
            await agent.committer.write([UpdateState(r.but(state_idx=step)) for r in records])
            # Lets a checkpoint under way end before the next commit, as commits far apart do
            # (however busy the machine).
            if agent.committer._checkpointing is not None:
                await agent.committer._checkpointing
        return Path(f"{path}-wal").stat().st_size, agent.checkpoints


async def test_the_wal_is_checkpointed_on_the_worker_thread(tmp_path) -> None:
    """The loop writer never checkpoints (that waits for the disk); the worker thread does, at
    most every checkpoint_seconds, so the WAL is reused instead of growing with every commit."""
    grown, none = await _wal_after_commits(tmp_path / "never.sqlite", 3600.0)
    reused, checkpoints = await _wal_after_commits(tmp_path / "always.sqlite", 0.0)
    assert none == 0 and checkpoints >= 40, (none, checkpoints)
    assert grown > 40 * 4096, grown
    assert reused * 3 < grown, (reused, grown)


async def test_a_disk_full_on_the_loop_writer_is_disk_full(tmp_path, small_disk) -> None:
    """The loop writer's errors are the worker's: a full disk is DiskFull, said once."""
    from edgebed.agent.errors import DiskFull

    path = small_disk.path / "agent.sqlite"
    async with _Agent(path) as agent:
        await agent.committer.write([SaveAction(_record("n0"))])
        small_disk.fill()
        big = [SaveAction(_record(f"n{i:05d}").but(last_error="x" * 2000)) for i in range(2000)]
        with pytest.raises(DiskFull, match="is full"):
            await agent.committer.write(big)
        small_disk.free()
        await agent.committer.write([SaveAction(_record("n1"))])
        assert [a.node_name for a in await agent.worker.call(agent.store.list_actions)] == ["n0", "n1"]


async def test_a_queued_change_that_met_a_full_disk_lands_with_the_next_write(tmp_path, small_disk) -> None:
    """The sim's machine save is queued, not awaited: when its transaction fails for lack of
    space it is kept, and lands with the write the executor makes again once there is space, so
    a recorded state never runs ahead of the machine it describes."""
    from edgebed.agent.errors import DiskFull

    path = small_disk.path / "agent.sqlite"
    async with _Agent(path) as agent:
        record = _record("n1")
        await agent.committer.write([SaveAction(record)])
        # Large enough to need new blocks whatever the WAL has free.
        agent.committer.queue([SaveMachine("hw-1", {"disk_image": "img", "blob": "x" * 4_000_000})])
        small_disk.fill()
        moved = record.but(state="poe_off", state_idx=1)
        with pytest.raises(DiskFull):
            await agent.committer.write([UpdateState(moved)])
        small_disk.free()
        await agent.committer.write([UpdateState(moved)])
        assert (await agent.worker.call(agent.store.get_action, "n1")).state == "poe_off"
        assert (await agent.worker.call(agent.store.sim_machines))["hw-1"]["disk_image"] == "img"


async def test_a_wave_of_writes_is_committed_a_few_hundred_changes_at_a_time(tmp_path) -> None:
    """A thousand nodes ending a state together: the write that brings the queue to
    EARLY_COMMIT_CHANGES commits it at once, so the first writers resume without waiting for a
    transaction of all of them."""
    async with _Agent(tmp_path / "a.sqlite") as agent:
        records = [_record(f"n{i:03d}") for i in range(600)]
        before = agent.committer.transactions
        await asyncio.gather(*(agent.committer.write([SaveAction(r)]) for r in records))
        # More than one transaction: a few hundred changes each, the rest at the committer's turn.
        assert EARLY_COMMIT_CHANGES < 600
        assert agent.committer.transactions - before == -(-600 // EARLY_COMMIT_CHANGES)
        assert len(await agent.worker.call(agent.store.list_actions)) == 600


async def test_an_early_commit_never_overtakes_a_commit_waiting_for_the_worker(tmp_path) -> None:
    """A commit the loop writer could not make (busy) waits for the worker thread; a later
    write large enough to commit early must wait for it too, or it would update a row that the
    first has not inserted yet."""
    async with _Agent(tmp_path / "a.sqlite") as agent:
        writer = agent.committer._writer
        assert writer is not None
        real_apply = writer.apply
        busy_once = [True]

        def apply(changes) -> None:
            if busy_once:
                busy_once.pop()
                raise WriterBusy("taken")
            real_apply(changes)

        writer.apply = apply  # type: ignore[method-assign]
        # The worker thread busy with something else: the first commit queues behind it.
        working, release = threading.Event(), threading.Event()

        def work() -> None:
            working.set()
            release.wait(5)

        busy = asyncio.ensure_future(agent.worker.call(work))
        await asyncio.to_thread(working.wait, 5)
        first = asyncio.ensure_future(agent.committer.write([SaveAction(_record("n0"))]))
        while not agent.committer._flushing:
            await asyncio.sleep(0.01)
        later = [UpdateState(_record("n0", "poe_off", 1))] + [
            SaveMachine(f"hw-{i}", {"powered": True}) for i in range(EARLY_COMMIT_CHANGES)
        ]
        second = asyncio.ensure_future(agent.committer.write(later))
        await asyncio.sleep(0.05)
        assert not second.done()
        release.set()
        await asyncio.wait_for(asyncio.gather(first, second, busy), 5)
        assert (await agent.worker.call(agent.store.get_action, "n0")).state == "poe_off"


async def test_a_failed_early_commit_is_not_tried_again_by_every_later_write(tmp_path) -> None:
    """The loop writer busy (another connection holds the lock for a while): the write that
    reached EARLY_COMMIT_CHANGES tried once; the writes after it in the same pass leave the queue
    to the committer's turn instead of each trying the whole queue again."""
    async with _Agent(tmp_path / "a.sqlite") as agent:
        writer = agent.committer._writer
        assert writer is not None
        real_apply = writer.apply
        attempts: list[int] = []
        busy = [True]

        def apply(changes) -> None:
            attempts.append(len(changes))
            if busy:
                busy.pop()
                raise WriterBusy("taken")
            real_apply(changes)

        writer.apply = apply  # type: ignore[method-assign]
        records = [_record(f"n{i:03d}") for i in range(EARLY_COMMIT_CHANGES * 3)]
        await asyncio.gather(*(agent.committer.write([SaveAction(r)]) for r in records))
        # One early attempt (refused), then the committer's turn commits all; later early
        # commits resume once the committer has taken the queue.
        assert attempts[0] == EARLY_COMMIT_CHANGES
        assert attempts[1] == len(records) and len(attempts) == 2, attempts
        assert len(await agent.worker.call(agent.store.list_actions)) == len(records)
