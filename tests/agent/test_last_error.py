"""An action's last_error: the last error a driver step raised, scrubbed of secrets, one line,
committed once per new message, kept to the end of the action, and why a lost action was lost."""

from __future__ import annotations

from dataclasses import replace

from edgebed.agent.clock import FastClock
from edgebed.agent.store import SaveAction
from edgebed.limits import MAX_LAST_ERROR
from edgebed.nodetypes.base import (
    DEPLOYED,
    DONE,
    DriverError,
    Ladder,
    NodeRef,
    NodeType,
    Poll,
    PropertySpec,
    Rung,
    State,
    Step,
    process,
)
from edgebed.redact import HIDDEN, error_line, scrub
from tests.agent.test_actions import _ExecutorOnStore, _record

PASSWORD = "hunter2-the-secret"


def _type(state: State) -> NodeType:
    return NodeType(
        name="raspberry", states=(state,), processes={"deploy": process("deploy", state, DEPLOYED)},
        properties=(PropertySpec("os_password", secret=True),), default_environments=(),
    )


def _counting(saved: list[str]):
    def wrap(write):
        async def counted(changes):
            saved.extend(c.record.last_error for c in changes if isinstance(c, SaveAction))
            await write(changes)
        return counted
    return wrap


async def test_a_failing_step_leaves_its_error_scrubbed_once_per_message_and_kept(tmp_path) -> None:
    polls = 0

    async def post(ctx):
        nonlocal polls
        polls += 1
        if polls <= 5:
            raise DriverError(f"pi1: SET read back 1, not 2\nwith {PASSWORD} and token=abc123")
        if polls <= 8:
            raise DriverError("pi1: image checksum mismatch " + "x" * 2000)
        return DONE

    state = State("copy", Step(post=post), before_reboot=1000, lost=10_000)
    saved: list[str] = []
    async with _ExecutorOnStore(tmp_path / "e.sqlite", _type(state), wrap_write=_counting(saved)) as harness:
        record = replace(_record("copy"), properties={"os_password": PASSWORD})
        await harness.executor.start(record, NodeRef("n1", {}))
        await harness.executor.wait_idle()
        final = await harness.action()
    first = "copy: pi1: SET read back 1, not 2 with *** and token=***"
    assert final.state == "deployed"
    # start, the first message, the second, deployed: five failures of one message are one write.
    assert saved[:3] == ["", first, saved[2]]
    assert saved[2].startswith("copy: pi1: image checksum mismatch xxx")
    assert len(saved[2]) == MAX_LAST_ERROR and saved[2].endswith("...")
    # Kept to the end of the action: a deploy may say what it overcame.
    assert final.last_error == saved[2]
    assert PASSWORD not in "".join(saved)


async def test_a_lost_action_says_why_and_what_failed_last(tmp_path) -> None:
    async def post(ctx):
        raise DriverError("pi1: ssh root@10.0.0.5:22: the server refused the agent's key")

    state = State("wait", Step(post=post), before_reboot=5, lost=20, ladder=Ladder((Rung.RETRY,)))
    async with _ExecutorOnStore(tmp_path / "lost.sqlite", _type(state), clock=FastClock(200)) as harness:
        await harness.run_one("wait")
        final = await harness.action()
    assert final.state == "lost"
    assert final.last_error == (
        "lost: state wait timed out after 20 s; last error: wait: pi1: ssh root@10.0.0.5:22: "
        "the server refused the agent's key"
    )


async def test_a_step_that_ends_lost_without_an_error_says_only_why(tmp_path) -> None:
    state = State("wait", Step(post=lambda ctx: _never()), before_reboot=5, lost=20,
                  ladder=Ladder((Rung.RETRY,)))
    async with _ExecutorOnStore(tmp_path / "quiet.sqlite", _type(state), clock=FastClock(200)) as harness:
        await harness.run_one("wait")
        final = await harness.action()
    assert (final.state, final.last_error) == ("lost", "lost: state wait timed out after 20 s")


async def _never() -> Poll:
    return Poll(done=False)


def test_scrub_hides_secrets_and_what_looks_like_credentials() -> None:
    text = ("curl https://bob:pw@images.example/x.img failed; Authorization: Bearer eyJ.abc; "
            "password: 'two words' community=private sealed:v1:gAAAA token abc")
    assert scrub(text, ["abc"]) == (
        f"curl https://{HIDDEN}@images.example/x.img failed; Authorization: Bearer {HIDDEN}; "
        f"password: {HIDDEN} community={HIDDEN} {HIDDEN} token {HIDDEN}"
    )
    assert error_line("a\r\n\tb\x00c") == "a b c"
    # A node named like a credential keeps its messages.
    assert scrub("community: switch sw1 (10.0.0.2:161) port 4: no answer") == (
        "community: switch sw1 (10.0.0.2:161) port 4: no answer")


def test_a_database_from_before_the_last_error_column_gets_it_and_keeps_its_actions(tmp_path) -> None:
    import sqlite3

    from edgebed.agent.store import Store

    path = str(tmp_path / "old.sqlite")
    store = Store(path)
    store.open()
    store.apply([SaveAction(replace(_record("a"), last_error="x"))])
    store.close()
    with sqlite3.connect(path) as db:  # the table as an older agent created it
        db.execute('ALTER TABLE "action" DROP COLUMN "last_error"')
    reopened = Store(path)
    reopened.open()
    try:
        [action] = reopened.list_actions()
        assert (action.state, action.last_error) == ("a", "")
    finally:
        reopened.close()
