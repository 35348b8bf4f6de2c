"""Keyset paging of reservations (ScheduleRepository.page_schedule) and the node cache's
fingerprint, on SQLite and PostgreSQL (issue #12): every order pages without repeating or
skipping a row while rows are added between pages, filters combine with the cursor, and the
fingerprint changes with every change of the node cache, also within one second."""

from __future__ import annotations

import pytest

from edgebed.controller.store import Store

SECRET = bytes(range(32))


def _row(node: str, owner: str, *, bin: str = "", start: int = 1000, status: str = "configuring",
         ending: bool = False) -> dict:
    return {"node_name": node, "owner": owner, "bin": bin, "start_date": start, "end_date": start + 3600,
            "status": status, "ending": ending}


async def _insert(store: Store, rows: list[dict]) -> None:
    schedule = store.schedule

    def work() -> None:
        with schedule._engine.write():
            schedule.m.Schedule.insert_many(rows).execute()

    await schedule._engine.run(work)


async def _all_pages(store: Store, order: str, limit: int, between=None, **filters) -> list[tuple]:
    """Every page's keys, in order; between(i) runs after the i-th page."""
    keys, after, index = [], None, 0
    while True:
        records, more = await store.schedule.page_schedule(order=order, limit=limit, after=after, **filters)
        assert len(records) <= limit
        keys += [store.schedule.order_key(r, order) for r in records]
        if not more:
            return keys
        after = store.schedule.order_key(records[-1], order)
        if between is not None:
            await between(index)
        index += 1


@pytest.fixture
async def store(database_url):
    opened = Store(database_url, secret_key=SECRET)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_every_order_pages_each_row_once_while_rows_are_added(store):
    await _insert(store, [
        _row(f"n{number:02d}", owner, bin=("", "x", "y")[number % 3], start=1000 + (number * 7 % 5) * 60)
        for number in range(0, 20, 2) for owner in ("a@example.org", "b@example.org")
    ])
    # By node: rows added before the cursor are passed, those after it come later; never twice.
    added = iter([[_row("n01", "a@example.org"), _row("n15", "a@example.org")],
                  [_row("n03", "b@example.org"), _row("n19", "a@example.org")]])

    async def add(index: int) -> None:
        rows = next(added, None)
        if rows:
            await _insert(store, rows)

    keys = await _all_pages(store, "node", 3, between=add)
    assert len(keys) == len(set(keys)) == 22
    assert keys == sorted(keys)
    assert ("n15", "a@example.org") in keys and ("n19", "a@example.org") in keys
    assert ("n01", "a@example.org") not in keys and ("n03", "b@example.org") not in keys

    # By bin, those without one last, then node and owner; one owner's only.
    keys = await _all_pages(store, "bin", 4, owner="a@example.org")
    records, _ = await store.schedule.page_schedule(order="node", limit=100, owner="a@example.org")
    expected = sorted((r.bin == "", r.bin, r.node_name) for r in records)
    assert [(empty == 1, bin_name, node) for empty, bin_name, node, _ in keys] == expected
    assert keys[-1][1] == "" and keys[0][1] == "x"

    # By start date, then node and owner: administrators' order; a filter on status and ending.
    keys = await _all_pages(store, "start", 5)
    assert keys == sorted(keys) and len(keys) == len(set(keys)) == 24
    await _insert(store, [_row("n40", "a@example.org", status="ready"),
                          _row("n41", "a@example.org", status="ready", ending=True)])
    ready = await _all_pages(store, "start", 1, status="ready", ending=False)
    assert [key[1] for key in ready] == ["n40"]
    assert [key[1] for key in await _all_pages(store, "start", 1, ending=True)] == ["n41"]

    with pytest.raises(ValueError, match="unknown order"):
        await store.schedule.page_schedule(order="owner", limit=1)
    with pytest.raises(ValueError, match="does not fit"):
        await store.schedule.page_schedule(order="node", limit=1, after=("n01",))


async def test_the_node_fingerprint_changes_with_every_change_of_the_node_cache(store):
    fingerprints = [await store.inventory.fingerprint()]

    async def save(nodes: dict, now: int = 5000) -> None:
        await store.inventory.save_inventory("rpi", "raspberry", nodes, None, now)
        fingerprints.append(await store.inventory.fingerprint())

    nodes = {"rpi-001": {"ip": "10.0.0.1"}, "rpi-002": {"ip": "10.0.0.2"}}
    await save(nodes)
    # All in the same second: a property of the same length, a node gone, the same content again.
    await save({**nodes, "rpi-001": {"ip": "10.0.0.9"}})
    await save({"rpi-001": {"ip": "10.0.0.9"}})
    await save({"rpi-001": {"ip": "10.0.0.9"}})  # nothing changed: nothing written
    await save(nodes)
    # A clock that went back: still above every stamp.
    await save({**nodes, "rpi-002": {"ip": "10.0.0.3"}}, now=10)
    assert fingerprints[3] == fingerprints[4]
    distinct = fingerprints[:4] + fingerprints[5:]
    assert len(set(distinct)) == len(distinct), fingerprints
    bare = await store.inventory.list_nodes_bare()
    assert bare == [("rpi-001", "rpi", "raspberry", {"ip": "10.0.0.1"}),
                    ("rpi-002", "rpi", "raspberry", {"ip": "10.0.0.3"})]
