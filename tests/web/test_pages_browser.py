"""Issue #11's pages in a real browser (Debian's Chromium through Playwright) against the real
controller and real simulated agents served from the testbed's loop: the reserve timeline (a
one-hour reservation visible and labelled in the day and week views, owners for administrators,
a click on a free slot filling the form), a refused reservation keeping its values with the
message beside the field, the manage page and the reserve page's paging links at phone width,
the overview's charts. Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.web.conftest import ADMIN, ALICE, BOB
from tests.web.harness import PASSWORD, Testbed
from tests.web.test_browser import log_in, shoot

pytestmark = pytest.mark.slow

ZONE = "Europe/Paris"


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    """Admin, alice and bob; 6 raspberry, 2 node and 2 sensor nodes; alice holds rpi-001 for one
    hour from now (the reservation a user just made), bob holds rpi-002 later this week."""
    testbed = Testbed(tmp_path_factory.mktemp("pages-browser")).start()
    try:
        testbed.create_user(ADMIN, admin=True)
        alice = testbed.create_user(ALICE)
        bob = testbed.create_user(BOB)
        testbed.register_agents(ADMIN, testbed.start_agents(
            [("rpi", "raspberry", 6), ("srv", "node", 2), ("sens", "sensor", 2)], time_scale=0.002))
        now = int(time.time())
        reservations = testbed.controller.reservations
        testbed.call(reservations.reserve(alice, nodes=["rpi-001"], start_date=now, duration_hours=1))
        testbed.call(reservations.reserve(bob, nodes=["rpi-002"], start_date=now + 50 * 3600,
                                          duration_hours=6))
        yield testbed
        assert not testbed.server_errors, "\n\n".join(testbed.server_errors)
    finally:
        testbed.stop()


@contextmanager
def _page(browser, bed, email, *, width=1366, height=900):
    """A page in a browser context of its own (closed afterwards), `email` signed in; yields it
    and the list its script errors and console errors (other than the 400s and 409s the tests
    provoke) go to."""
    context = browser.new_context(timezone_id=ZONE, viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and not re.search(r"status of 40[09]", m.text) else None)
        log_in(page, bed.url, email, PASSWORD)
        page.wait_for_load_state()
        yield page, errors
    finally:
        context.close()


def _visible_bar(page, node: str):
    """The viewer's bar on `node`: its box, and whether it is on top where it is drawn (not under
    the "now" line or another bar)."""
    bar = page.locator(f"tr[data-node={node}] .busy.mine")
    assert bar.count() == 1
    box = bar.bounding_box()
    on_top = page.evaluate(
        """([x, y]) => { const e = document.elementFromPoint(x, y); return !!(e && e.closest('.busy.mine')); }""",
        [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2],
    )
    return bar, box, on_top


@pytest.mark.parametrize("days, minimum_px", [(1, 20), (7, 5)])
def test_a_one_hour_reservation_is_visible_and_labelled(browser, bed, days, minimum_px):
    with _page(browser, bed, ALICE) as (page, errors):
        page.goto(f"{bed.url}/reserve?days={days}")
        bar, box, on_top = _visible_bar(page, "rpi-001")
        # A day is 24 one-hour columns; a week still gives the hour a bar of several pixels.
        assert box["width"] >= minimum_px, box
        assert box["height"] >= 15, box
        assert on_top, "the bar is hidden under something"
        label = bar.locator(".who")
        assert label.inner_text() == "you" and label.is_visible()
        label_box = label.bounding_box()
        assert label_box["width"] > 10 and label_box["x"] + label_box["width"] <= 1366
        # Its window, its row's "now" column, the axis: hours in the day view, days in both.
        assert "yours" in bar.get_attribute("title")
        assert page.locator("tr[data-node=rpi-001] td.avail").inner_text().startswith("yours until ")
        hours = page.locator("table.nodes >> nth=0 >> .axis-hours .tick")
        assert hours.count() == (24 if days == 1 else 28)
        # No two day labels overlap (at 1366 px they did).
        bands = page.eval_on_selector_all(
            "table.nodes >> nth=0 >> .axis-days .band",
            "els => els.map(e => { const r = e.getBoundingClientRect(); return [r.left, r.right]; })")
        assert all(a[1] <= b[0] + 0.5 for a, b in zip(bands, bands[1:], strict=False)), bands
        shoot(page, f"11-reserve-one-hour-{'day' if days == 1 else 'week'}")
        assert errors == []


def test_an_administrator_sees_who_holds_each_window(browser, bed):
    with _page(browser, bed, ADMIN) as (page, errors):
        page.goto(f"{bed.url}/reserve?days=7")
        owners = {
            node: page.locator(f"tr[data-node={node}] .busy .who").inner_text()
            for node in ("rpi-001", "rpi-002")
        }
        assert owners == {"rpi-001": ALICE, "rpi-002": BOB}
        assert page.locator("tr[data-node=rpi-002] .busy .who").is_visible()
        shoot(page, "12-reserve-admin-owners")
    # A user sees that rpi-001 is taken, never by whom.
    with _page(browser, bed, BOB) as (page, errors):
        page.goto(f"{bed.url}/reserve?days=7")
        assert page.locator("tr[data-node=rpi-001] .busy").count() == 1
        assert page.locator("tr[data-node=rpi-001] .busy .who").count() == 0
        assert ALICE not in page.content()


def test_clicking_a_free_slot_fills_the_form(browser, bed):
    with _page(browser, bed, BOB) as (page, errors):
        page.goto(f"{bed.url}/reserve?days=7")
        table = page.locator("section[data-type=raspberry] table.nodes")
        view_start = int(table.get_attribute("data-start"))
        view_end = int(table.get_attribute("data-end"))
        line = page.locator("tr[data-node=rpi-004] .timeline")
        box = line.bounding_box()
        # The middle of an hour three days after the view starts.
        hour = view_start + 3 * 86400 + 10 * 3600
        x = box["x"] + (hour + 1800 - view_start) / (view_end - view_start) * box["width"]
        page.mouse.click(x, box["y"] + box["height"] / 2)
        expected = datetime.fromtimestamp(hour, ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M")
        assert page.input_value("input[name=start]") == expected
        assert page.input_value("input[name=duration_hours]") == "2"
        assert page.is_checked("input[name=nodes][value=rpi-004]")
        assert page.locator("tr[data-node=rpi-004] .pick").count() == 1
        assert "Picked rpi-004" in page.inner_text("#pick-hint")
        shoot(page, "13-reserve-picked-slot")

        # A click just before bob's own later window shortens the duration to end before it.
        start_2 = int(page.locator("tr[data-node=rpi-002] .busy").get_attribute("data-start"))
        line_2 = page.locator("tr[data-node=rpi-002] .timeline")
        box_2 = line_2.bounding_box()
        just_before = (start_2 // 3600) * 3600 - 3600 + 1800
        page.mouse.click(box_2["x"] + (just_before - view_start) / (view_end - view_start) * box_2["width"],
                         box_2["y"] + box_2["height"] / 2)
        assert float(page.input_value("input[name=duration_hours]")) <= (start_2 - (just_before - 1800)) / 3600

        # Back on rpi-004: the picked window is reserved as filled in.
        page.goto(f"{bed.url}/reserve?days=7")
        line = page.locator("tr[data-node=rpi-004] .timeline")
        box = line.bounding_box()
        page.mouse.click(box["x"] + (hour + 1800 - view_start) / (view_end - view_start) * box["width"],
                         box["y"] + box["height"] / 2)
        page.click("#reserve-form button[type=submit]")
        page.wait_for_url(re.compile(r".*/configure\?.*"))
        mine = bed.call(bed.controller.reservations.list_reservations(
            bed.call(bed.controller.accounts.get_user(BOB))))
        picked = [r for r in mine if r.node_name == "rpi-004"]
        assert picked and picked[0].start_date == hour and picked[0].end_date == hour + 2 * 3600
        assert errors == []


def test_a_refused_reservation_keeps_the_form_and_says_why_beside_the_field(browser, bed):
    with _page(browser, bed, BOB) as (page, errors):
        page.goto(f"{bed.url}/reserve?days=1")
        # rpi-001 is alice's for the coming hour: bob asks for it now, for 3.5 hours.
        page.check("input[name=nodes][value=rpi-001]")
        page.check("input[name=nodes][value=rpi-003]")
        start = page.input_value("input[name=start]")
        page.fill("input[name=duration_hours]", "3.5")
        with page.expect_navigation() as navigation:
            page.click("#reserve-form button[type=submit]")
        assert navigation.value.status == 409
        message = page.locator('[data-error-for="reserve.nodes"]')
        assert message.is_visible()
        assert "rpi-001" in message.inner_text()
        # Beside the fields: inside the reservation form's box, under the Reserve button.
        when = page.locator("#when").bounding_box()
        box = message.bounding_box()
        assert when["y"] <= box["y"] <= when["y"] + when["height"]
        # Every value is still there: the ticks, the start, the duration, the view.
        assert page.input_value("input[name=duration_hours]") == "3.5"
        assert page.input_value("input[name=start]") == start
        assert page.is_checked("input[name=nodes][value=rpi-001]")
        assert page.is_checked("input[name=nodes][value=rpi-003]")
        assert page.locator(".zoom a.current").inner_text() == "Day"
        shoot(page, "14-reserve-refused")

        # A malformed start: 400, the message beside the start field.
        page.fill("input[name=start]", "tomorrow-ish")
        page.eval_on_selector("input[name=start]", "e => e.removeAttribute('pattern')")
        with page.expect_navigation() as navigation:
            page.click("#reserve-form button[type=submit]")
        assert navigation.value.status == 400
        assert page.locator('[data-error-for="reserve.start"]').is_visible()
        assert page.input_value("input[name=start]") == "tomorrow-ish"
        assert page.get_attribute("input[name=start]", "aria-invalid") == "true"
        assert errors == [], errors


def test_the_manage_page_at_phone_width_shows_every_column(browser, bed):
    with _page(browser, bed, ALICE, width=390, height=844) as (page, errors):
        page.goto(f"{bed.url}/manage")
        row = page.locator("tr[data-node=rpi-001]")
        labels = row.locator("td[data-label]")
        assert labels.count() == 5
        for index in range(labels.count()):
            cell = labels.nth(index)
            box = cell.bounding_box()
            name = cell.get_attribute("data-label")
            assert cell.is_visible(), name
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (name, box)
        access = row.locator("td[data-label=Access]")
        assert "@10.10.0.1" in access.inner_text()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # Statuses read as words, not identifiers.
        assert row.locator("[data-field=status]").inner_text() == "Needs configuration"
        shoot(page, "15-manage-phone")

        # The reserve page a few rows at a time (issue #12): the paging links fit the phone's
        # width, and "Next" is reached and followed with the keyboard, the filter kept.
        page.goto(f"{bed.url}/reserve?f.type=raspberry&days=1&limit=4")
        assert page.locator("tr[data-node]").count() == 4
        following = page.locator("nav[data-paging=bottom] a[rel=next]")
        box = following.bounding_box()
        assert following.is_visible() and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        following.focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert [page.locator("tr[data-node]").nth(i).get_attribute("data-node") for i in range(2)] == [
            "rpi-005", "rpi-006"]
        assert "f.type=raspberry" in page.url and page.locator(".zoom a.current").inner_text() == "Day"
        assert page.locator("tr[data-node=rpi-005] .timeline").is_visible()
        shoot(page, "17-reserve-paged-phone")
        assert errors == []


def test_the_overview_draws_its_charts(browser, bed):
    with _page(browser, bed, ADMIN) as (page, errors):
        page.goto(f"{bed.url}/admin")
        for section in ("#nodes-by-state", "#agents-by-status", "#utilisation"):
            chart = page.locator(f"{section} svg.chart")
            assert chart.count() == 1 and chart.is_visible(), section
            assert chart.bounding_box()["height"] > 40, section
        # 10 nodes: alice's rpi-001 is reserved now, the other nine free.
        legend = page.inner_text("#nodes-by-state")
        assert "Free: 9" in legend and "Reserved, idle: 1" in legend
        assert "Connected: 3" in page.inner_text("#agents-by-status")
        bars = page.locator("#utilisation svg rect.bar")
        assert bars.count() == 36
        assert page.locator("#utilisation svg rect.bar.today").count() == 1
        shoot(page, "16-admin-overview")
        assert errors == []
