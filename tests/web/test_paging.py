"""Pages and lists at testbed scale (issue #12): the reserve page shows one page of node rows with
the timeline read for those rows only, and paging links that keep the filter and the view; the
JSON API's reservation lists are paged by `limit` and an opaque `cursor` (Link header), never
repeating or skipping a row while rows are added between pages; a bad limit or cursor is a 400
that says what is wrong."""

from __future__ import annotations

import base64
import html
import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.web.conftest import ADMIN, ALICE, BOB, client_for
from tests.web.harness import Testbed

# 35 nodes: 25 raspberry, 5 servers, 5 sensors; pages of 10 rows.
AGENTS = [("rpi", "raspberry", 25), ("srv", "node", 5), ("sens", "sensor", 5)]
ROWS = re.compile(r'<tr data-node="([^"]+)"')
BAR = re.compile(r'<tr data-node="([^"]+)"[^\n]*?<div class="timeline">(.*?)</div></td></tr>')


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    """Admin, alice and bob; alice holds 3 raspberry nodes spread over the pages of rows, bob one
    server; every reservation starts tomorrow (configuring: nothing deploys)."""
    testbed = Testbed(tmp_path_factory.mktemp("paging")).start()
    try:
        testbed.create_user(ADMIN, admin=True)
        alice = testbed.create_user(ALICE)
        bob = testbed.create_user(BOB)
        testbed.register_agents(ADMIN, testbed.start_agents(AGENTS, time_scale=0.002))
        tomorrow = int(time.time()) + 86400
        reservations = testbed.controller.reservations
        testbed.call(reservations.reserve(alice, nodes=["rpi-002", "rpi-014", "rpi-025"],
                                          start_date=tomorrow, duration_hours=4))
        testbed.call(reservations.reserve(bob, nodes=["srv-003"], start_date=tomorrow,
                                          duration_hours=4))
        yield testbed
        assert not testbed.server_errors, "\n\n".join(testbed.server_errors)
    finally:
        testbed.stop()


def _link(page: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" class="button" rel="{rel}">', page)
    return html.unescape(found.group(1)) if found else None


def _bars(page: str) -> dict[str, int]:
    """{node: number of bars in its row} for every row the page holds."""
    return {node: cell.count('class="busy') for node, cell in BAR.findall(page)}


def test_the_reserve_page_pages_its_rows_and_draws_the_timeline_for_them_only(bed):
    alice = client_for(bed, ALICE)
    first = alice.get("/reserve?days=7&limit=10")
    assert first.status == 200, first.text[:300]
    rows = ROWS.findall(first.text)
    # By type (node, raspberry, sensor), then name.
    order = [f"srv-{n:03d}" for n in range(1, 6)] + [f"rpi-{n:03d}" for n in range(1, 26)] + [
        f"sens-{n:03d}" for n in range(1, 6)]
    assert rows == order[:10]
    # Bars for the visible rows only: rpi-002's and srv-003's, not rpi-014's (another page).
    assert _bars(first.text) == {name: (1 if name in ("rpi-002", "srv-003") else 0) for name in rows}
    assert first.text.count('class="busy') == 2
    assert "Nodes 1–10 of 35" in first.text
    assert _link(first.text, "prev") is None and _link(first.text, "first") is None

    # Following "next" to the end: every node once, in order, bars where the reservations are.
    seen, bars, page, pages = list(rows), _bars(first.text), first.text, 1
    while (following := _link(page, "next")) is not None:
        query = parse_qs(urlsplit(following).query)
        assert query["days"] == ["7"] and query["limit"] == ["10"], following
        page = alice.get(following).text
        pages += 1
        seen += ROWS.findall(page)
        bars |= _bars(page)
    assert pages == 4
    assert seen == order
    assert {name for name, count in bars.items() if count} == {"rpi-002", "rpi-014", "rpi-025", "srv-003"}
    # The last page goes back a page and to the first.
    back = alice.get(_link(page, "prev")).text
    assert ROWS.findall(back) == seen[20:30]
    assert ROWS.findall(alice.get(_link(page, "first")).text) == seen[:10]

    # Zooming keeps the page of rows; a filter is kept by the paging links.
    second = alice.get(_link(first.text, "next")).text
    day = re.search(r'<a href="([^"]+)" class="button[^"]*">Day</a>', second).group(1)
    assert ROWS.findall(alice.get(html.unescape(day)).text) == seen[10:20]
    filtered = alice.get("/reserve?f.type=raspberry&days=1&limit=10").text
    following = _link(filtered, "next")
    assert parse_qs(urlsplit(following).query)["f.type"] == ["raspberry"]
    assert ROWS.findall(alice.get(following).text) == [f"rpi-{n:03d}" for n in range(11, 21)]
    assert "Nodes 11–20 of 25 matching (35 in all)" in alice.get(following).text
    # The default page holds every one of these 35 nodes; no paging links.
    whole = alice.get("/reserve").text
    assert len(ROWS.findall(whole)) == 35 and _link(whole, "next") is None


def test_a_refused_reservation_is_drawn_again_on_its_page_of_rows(bed):
    bob = client_for(bed, BOB)
    first = bob.get("/reserve?limit=10").text
    second = _link(first, "next")
    cursor = parse_qs(urlsplit(second).query)["cursor"][0]
    page = bob.get(second).text
    assert f'name="cursor" value="{cursor}"' in page  # the form carries its page of rows
    start = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + 86400 + 3600))
    refused = bob.post("/reserve", [("nodes", "rpi-014"), ("start", start), ("tz", "UTC"),
                                    ("duration_hours", "1"), ("limit", "10"), ("cursor", cursor)])
    assert refused.status == 409
    assert ROWS.findall(refused.text) == [f"rpi-{n:03d}" for n in range(6, 16)]
    assert 'value="rpi-014" aria-label="reserve rpi-014" checked' in refused.text


@pytest.mark.parametrize("query, message", [
    ("limit=0", "limit must be a whole number between 1 and 500"),
    ("limit=501", "limit must be a whole number between 1 and 500"),
    ("limit=ten", "limit must be a whole number between 1 and 500"),
    ("cursor=not-a-cursor", "cursor: not a cursor this list gave out"),
    # A cursor of the API's list of reservations, on the reserve page.
    ("cursor=WyJtaW5lIixbInJwaS0wMDEiLCJhIl1d", "cursor: it belongs to another list"),
])
def test_a_bad_limit_or_cursor_on_the_reserve_page_says_what_is_wrong(bed, query, message):
    page = client_for(bed, ALICE).get(f"/reserve?{query}")
    assert page.status == 400 and message in html.unescape(page.text)


def _api_pages(client, path: str, between=None) -> tuple[list[dict], list[str]]:
    """Every row of a paged API list, following the Link headers; `between(i)` runs after the
    i-th page. Returns the rows and the links followed."""
    rows, links, index = [], [], 0
    response = client.get(path)
    while True:
        assert response.status == 200, response.text
        rows += response.json()
        link = response.headers.get("Link")
        if link is None:
            return rows, links
        target = re.fullmatch(r'<([^>]+)>; rel="next"', link).group(1)
        links.append(target)
        if between is not None:
            between(index)
        index += 1
        response = client.get(target)


def test_the_api_pages_reservations_without_repeating_or_skipping_rows_added_between_pages(bed):
    alice_user = bed.call(bed.controller.accounts.get_user(ALICE))
    client = client_for(bed)
    client.token = bed.api_token(ALICE)
    tomorrow = int(time.time()) + 2 * 86400
    # Added between pages: one before every cursor (never shown: its place was passed), one
    # after every cursor (shown on a later page).
    added = iter([["rpi-001", "sens-005", "srv-005"], ["rpi-003", "srv-004"]])

    def add(index: int) -> None:
        names = next(added, None)
        if names:
            bed.call(bed.controller.reservations.reserve(alice_user, nodes=names, start_date=tomorrow,
                                                         duration_hours=1))

    rows, links = _api_pages(client, "/api/v1/reservations?limit=2", between=add)
    names = [row["node_name"] for row in rows]
    # Before: rpi-002, rpi-014, rpi-025. Page 1 = rpi-002, rpi-014; then rpi-001 (passed),
    # sens-005 and srv-005 (ahead) are added. Page 2 = rpi-025, sens-005; then rpi-003 (passed)
    # and srv-004 (ahead). Page 3 = srv-004, srv-005.
    assert names == ["rpi-002", "rpi-014", "rpi-025", "sens-005", "srv-004", "srv-005"]
    assert len(set(names)) == len(names)
    assert all("limit=2" in link and "cursor=" in link for link in links)
    # Read again from the start, all of them, by node name; the default limit holds them all.
    everything = client.get("/api/v1/reservations")
    assert "Link" not in everything.headers
    assert [row["node_name"] for row in everything.json()] == sorted(
        ["rpi-001", "rpi-002", "rpi-003", "rpi-014", "rpi-025", "sens-005", "srv-004", "srv-005"])

    # Administrators: everyone's, by start date, paged the same way; filters stay in the links.
    admin = client_for(bed)
    admin.token = bed.api_token(ADMIN)
    every, links = _api_pages(admin, "/api/v1/admin/reservations?limit=3")
    keys = [(row["start_date"], row["node_name"], row["owner"]) for row in every]
    assert keys == sorted(keys) and len(set(keys)) == len(keys) == 9
    mine, links = _api_pages(admin, f"/api/v1/admin/reservations?owner={ALICE}&limit=3")
    assert {row["owner"] for row in mine} == {ALICE} and len(mine) == 8
    assert links and all(parse_qs(urlsplit(link).query)["owner"] == [ALICE] for link in links)
    for name in ("rpi-001", "rpi-003", "sens-005", "srv-004", "srv-005"):
        bed.call(bed.controller.reservations.act(alice_user, name, "destroy"))


def test_the_api_pages_nodes_by_name(bed):
    client = client_for(bed)
    client.token = bed.api_token(BOB)
    rows, links = _api_pages(client, "/api/v1/nodes?limit=10")
    names = [row["name"] for row in rows]
    assert len(links) == 3 and names == sorted(names) and len(set(names)) == 35
    assert "Link" not in client.get("/api/v1/nodes").headers  # 35 fit the default page


def test_the_api_pages_the_admin_lists_of_users_and_agents(bed):
    client = client_for(bed)
    client.token = bed.api_token(ADMIN)
    rows, links = _api_pages(client, "/api/v1/admin/agents?limit=2")
    assert [row["name"] for row in rows] == ["rpi", "sens", "srv"] and len(links) == 1
    rows, links = _api_pages(client, "/api/v1/admin/users?limit=1")
    emails = [row["email"] for row in rows]
    # Every account once, those awaiting approval first: as the whole list gives them.
    whole = client.get("/api/v1/admin/users")
    assert "Link" not in whole.headers and emails == [row["email"] for row in whole.json()]
    assert len(links) == len(emails) - 1 and len(set(emails)) == len(emails) >= 3
    pending = [row["is_authorized"] for row in rows]
    assert pending == sorted(pending)


@pytest.mark.parametrize("path, message", [
    ("/api/v1/reservations?limit=0", "limit must be a whole number between 1 and 1000"),
    ("/api/v1/reservations?limit=1001", "limit must be a whole number between 1 and 1000"),
    ("/api/v1/reservations?limit=-1", "limit must be a whole number between 1 and 1000"),
    ("/api/v1/reservations?cursor=%21%21", "cursor: not a cursor this list gave out"),
    ("/api/v1/reservations?cursor=bm90IGpzb24", "cursor: not a cursor this list gave out"),
    # An administrator's cursor (start, node, owner) on a user's list, and a history cursor.
    ("/api/v1/reservations?cursor=WyJhbGwiLFsxLCJhIiwiYiJdXQ", "cursor: it belongs to another list"),
    ("/api/v1/reservations?state=ended&cursor=WyJtaW5lIixbInJwaS0wMDEiLCJhIl1d",
     "cursor: it belongs to another list"),
    # The right list, a key of the wrong shape.
    ("/api/v1/reservations?cursor=WyJtaW5lIixbMSwyXV0", "the cursor does not belong to this list"),
    ("/api/v1/reservations?before=3", "before applies to state=ended only"),
    ("/api/v1/admin/reservations?limit=5000", "limit must be a whole number between 1 and 1000"),
    ("/api/v1/nodes?limit=0", "limit must be a whole number between 1 and 1000"),
    ("/api/v1/nodes?cursor=WyJtaW5lIixbInJwaS0wMDEiLCJhIl1d", "cursor: it belongs to another list"),
    ("/api/v1/nodes?page=2", "unknown query parameter(s) 'page'"),
    ("/api/v1/admin/users?limit=1001", "limit must be a whole number between 1 and 1000"),
    # A long cursor is refused before it is decoded.
    (f"/api/v1/admin/agents?cursor={base64.urlsafe_b64encode(b'[' * 1500).decode()}",
     "cursor is too long"),
    ("/api/v1/admin/users?cursor=WyJub2RlcyIsWyJycGktMDAxIl1d", "cursor: it belongs to another list"),
    ("/api/v1/admin/agents?cursor=WyJhZ2VudHMiLFsxXV0", "cursor: it belongs to another list"),
])
def test_a_bad_limit_or_cursor_in_the_api_is_a_400_that_says_why(bed, path, message):
    client = client_for(bed)
    client.token = bed.api_token(ADMIN)
    response = client.get(path)
    assert response.status == 400, (response.status, response.text)
    assert message in response.json()["error"]


def test_the_manage_page_and_its_live_poll_show_one_page_of_reservations_by_bin(bed):
    alice_user = bed.call(bed.controller.accounts.get_user(ALICE))
    for node, bin_name in (("rpi-025", "a"), ("rpi-002", "b")):
        bed.call(bed.controller.reservations.configure(alice_user, node, bin=bin_name, properties={}))
    alice = client_for(bed, ALICE)
    pages, page, live = [], alice.get("/manage?limit=1"), []
    while True:
        assert page.status == 200, page.text[:300]
        pages.append(re.findall(r'<tr data-node="([^"]+)" data-status', page.text))
        query = "&".join(f"{name}={value}" for name, value in re.findall(
            r'<input type="hidden" name="(limit|cursor)" value="([^"]+)">', page.text))
        live.append([r["node_name"] for r in alice.get(f"/manage/live?{query}").json()["reservations"]])
        following = _link(page.text, "next")
        if following is None:
            break
        page = alice.get(following)
    # By bin, the one without a bin last; the poll reads the rows its page shows.
    assert pages == [["rpi-025"], ["rpi-002"], ["rpi-014"]] == live
    assert "1 of your 3 reservations on this page" in page.text
    # An action on a later page comes back to that page.
    cursor = re.search(r'name="cursor" value="([^"]+)"', page.text).group(1)
    extended = alice.post("/manage/action", [("nodes", "rpi-014"), ("action", "extend"), ("limit", "1"),
                                             ("cursor", cursor)])
    assert extended.status == 303 and parse_qs(urlsplit(extended.location).query) == {
        "limit": ["1"], "cursor": [cursor]}
    bad = alice.get("/manage?cursor=WyJtaW5lIixbInJwaS0wMDEiLCJhIl1d")
    assert bad.status == 400 and "cursor: it belongs to another list" in html.unescape(bad.text)
    assert alice.get("/manage/live?limit=0").status == 400


def test_the_admin_nodes_and_reservations_pages_are_paged(bed):
    admin = client_for(bed, ADMIN)
    seen, page, pages = [], admin.get("/admin/nodes?limit=15"), []
    while True:
        assert page.status == 200, page.text[:300]
        pages.append(page.text)
        seen += re.findall(r'<tr data-node="([^"]+)">\s*<td class="name">', page.text)
        following = _link(page.text, "next")
        if following is None:
            break
        page = admin.get(following)
    # By agent (rpi, sens, srv), then name; every node once.
    assert len(pages) == 3 and seen == sorted(seen, key=lambda n: (n.split("-")[0], n)) and len(set(seen)) == 35
    # An agent's section says how many nodes it has and how many are on the page.
    assert "25 nodes, 15 on this page" in pages[0] and "25 nodes, 10 on this page" in pages[1]
    # Everyone's current reservations, 1 a page, the owner filter kept by the links.
    rows, page = [], admin.get(f"/admin/reservations?owner={ALICE}&limit=1")
    while True:
        rows += re.findall(r'<tr data-node="([^"]+)" data-owner="([^"]+)"', page.text)
        following = _link(page.text, "next")
        if following is None:
            break
        assert parse_qs(urlsplit(following).query)["owner"] == [ALICE]
        page = admin.get(following)
    assert sorted(rows) == [("rpi-002", ALICE), ("rpi-014", ALICE), ("rpi-025", ALICE)]
    assert admin.get("/admin/reservations?cursor=xyz").status == 400
    assert admin.get("/admin/nodes?limit=501").status == 400


def _all_pages(client, path: str, pattern: str) -> tuple[list[str], list[str]]:
    """(every row's key over the pages that follow `path` by their next links, each page's text)."""
    keys, pages, page = [], [], client.get(path)
    while True:
        assert page.status == 200, page.text[:300]
        pages.append(page.text)
        keys += re.findall(pattern, page.text)
        following = _link(page.text, "next")
        if following is None:
            return keys, pages
        page = client.get(following)


def test_the_admin_users_and_agents_pages_are_paged_with_accounts_awaiting_approval_first(bed):
    admin = client_for(bed, ADMIN)
    waiting = [f"waiting{n}@example.org" for n in range(3)]
    for email in waiting:
        bed.create_user(email, authorized=False)
    emails, pages = _all_pages(admin, "/admin/users?limit=2", r'<tr data-email="([^"]+)"')
    everyone = sorted([ADMIN, ALICE, BOB])
    # Every account once; those awaiting approval first, then by email.
    assert emails == waiting + everyone, emails
    assert len(pages) == 3 and "Users 1–2 of 6" in pages[0] and "Users 5–6 of 6" in pages[2]
    assert "3 awaiting approval" in pages[0]
    assert _link(pages[0], "first") is None and _link(pages[1], "first") == "/admin/users?limit=2"
    names, pages = _all_pages(admin, "/admin/agents?limit=2", r'<tr data-agent="([^"]+)"')
    assert names == ["rpi", "sens", "srv"] and len(pages) == 2
    # The default page holds them all, without links.
    whole = admin.get("/admin/agents")
    assert re.findall(r'<tr data-agent="([^"]+)"', whole.text) == names and _link(whole.text, "next") is None
    # A cursor of another list, or one of the right list with the wrong shape, is refused.
    nodes_cursor = parse_qs(urlsplit(_link(admin.get("/admin/nodes?limit=5").text, "next")).query)["cursor"][0]
    for path in (f"/admin/users?cursor={nodes_cursor}", f"/admin/agents?cursor={nodes_cursor}",
                 "/admin/users?limit=0", "/admin/agents?limit=501"):
        refused = admin.get(path)
        assert refused.status == 400, (path, refused.status)
    from edgebed.web import paging

    wrong_shape = paging.encode_cursor("admin-users", ["0", "a@example.org"])
    assert admin.get(f"/admin/users?cursor={wrong_shape}").status == 400
    # A thousand and more nested brackets, under the pages' cursor length limit: past json's
    # recursion limit, still a 400.
    deep = base64.urlsafe_b64encode(b"[" * 1500).decode()
    assert len(deep) <= paging.MAX_CURSOR and admin.get(f"/admin/agents?cursor={deep}").status == 400
    # A user who is not an administrator gets neither page.
    assert client_for(bed, ALICE).get("/admin/users?limit=2").status == 403


def test_the_kept_node_list_follows_changes_written_by_another_process(bed):
    """The reserve page keeps the node list while nothing changed; a change written through
    another connection to the database (another controller process, e.g. the scheduler's) in
    the same second as the last one shows on the next page all the same."""
    from edgebed.controller.store import Store

    alice = client_for(bed, ALICE)
    before = alice.get("/reserve?f.type=raspberry").text
    assert 'data-node="rpi-001"' in before
    cached = bed.call(bed.controller.inventory.cached_nodes())
    rpi = {name: dict(node.properties) for name, node in cached.items() if node.agent == "rpi"}
    assert bed.call(bed.controller.inventory.node_list()) is bed.call(bed.controller.inventory.node_list())
    other = Store(bed.settings.database, secret_key=bed.settings.secret_key(), workers=1)
    bed.call(other.open())
    try:
        now = int(time.time())
        changed = {**rpi, "rpi-001": {**rpi["rpi-001"], "model": "Changed Elsewhere"}}
        bed.call(other.inventory.save_inventory("rpi", "raspberry", changed, None, now))
        assert "Changed Elsewhere" in alice.get("/reserve?f.type=raspberry").text
        # The same second again: another change, a node gone, then back.
        changed["rpi-001"]["model"] = "Changed Again"
        bed.call(other.inventory.save_inventory("rpi", "raspberry", changed, None, now))
        assert "Changed Again" in alice.get("/reserve?f.type=raspberry").text
        del changed["rpi-002"]
        bed.call(other.inventory.save_inventory("rpi", "raspberry", changed, None, now))
        assert 'data-node="rpi-002"' not in alice.get("/reserve?f.type=raspberry").text
        bed.call(other.inventory.save_inventory("rpi", "raspberry", rpi, None, now))
        page = alice.get("/reserve?f.type=raspberry").text
        assert 'data-node="rpi-002"' in page and "Changed" not in page
        # Maintenance and agent status, written elsewhere, too.
        bed.call(other.agents.set_agent_status("sens", status="disconnected"))
        assert 'data-node="sens-001" class="offline"' in alice.get("/reserve?f.type=sensor").text
        bed.call(other.agents.set_agent_status("sens", status="connected"))
        assert 'data-node="sens-001" class="offline"' not in alice.get("/reserve?f.type=sensor").text
    finally:
        bed.call(other.close())
