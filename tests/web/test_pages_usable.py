"""Issue #11 through plain HTTP: refused forms drawn again with the values and the message beside
the field under the error's own status; extend by a chosen number of hours (page and JSON API)
saying the new end; human labels; no self-defeating admin actions; email confirmation that an
administrator can give and that log-in requires only when [accounts] require_confirmed_email says
so; the timeline's axis and bars."""

from __future__ import annotations

import re
import time
from zoneinfo import ZoneInfo

from edgebed.web import labels, timeline
from tests.web.conftest import ADMIN, BOB, client_for
from tests.web.harness import PASSWORD, Client, Testbed

CAROL = "carol@example.org"


def _start_in(hours: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(time.time() + hours * 3600))


def test_a_refused_reservation_is_drawn_again_with_its_values(testbed):
    bob = client_for(testbed, BOB)
    first = bob.post("/reserve", [("nodes", "srv-002"), ("start", _start_in(30)), ("tz", "UTC"),
                                  ("duration_hours", "2")])
    assert first.status == 303
    testbed.create_user(CAROL)
    carol = client_for(testbed, CAROL)
    start = _start_in(29.5)
    refused = carol.post("/reserve", [("nodes", "srv-002"), ("nodes", "srv-003"), ("start", start),
                                      ("tz", "UTC"), ("duration_hours", "4.5"), ("days", "14")])
    assert refused.status == 409
    beside = re.search(r'<span class="field-error" role="alert" data-error-for="reserve.nodes">([^<]+)<',
                       refused.text)
    assert beside and "srv-002" in beside.group(1)
    assert f'value="{start}"' in refused.text and 'value="4.5"' in refused.text
    assert 'value="srv-002" aria-label="reserve srv-002" checked' in refused.text
    assert 'value="srv-003" aria-label="reserve srv-003" checked' in refused.text
    assert 'aria-current="true">2 weeks<' in refused.text  # the view is kept too
    # Malformed fields: 400, each message beside its own field.
    bad_start = carol.post("/reserve", [("nodes", "srv-003"), ("start", "soon"), ("tz", "UTC"),
                                        ("duration_hours", "2")])
    assert bad_start.status == 400 and 'data-error-for="reserve.start"' in bad_start.text
    assert 'value="soon"' in bad_start.text and 'aria-invalid="true"' in bad_start.text
    bad_duration = carol.post("/reserve", [("nodes", "srv-003"), ("start", start), ("tz", "UTC"),
                                           ("duration_hours", "-1")])
    assert bad_duration.status == 400 and 'data-error-for="reserve.duration_hours"' in bad_duration.text
    nothing = carol.post("/reserve", [("start", start), ("tz", "UTC"), ("duration_hours", "1")])
    assert nothing.status == 400 and 'data-error-for="reserve.nodes"' in nothing.text
    # Scripts posting the form still get the status alone to go by.
    assert bob.post("/manage/action", [("nodes", "srv-002"), ("action", "destroy")]).status == 303


def test_extend_by_hours_on_the_page_and_in_the_api(testbed):
    bob = client_for(testbed, BOB)
    assert bob.post("/reserve", [("nodes", "sens-003"), ("start", _start_in(40)), ("tz", "UTC"),
                                 ("duration_hours", "2")]).status == 303
    api = Client(testbed.url, token=testbed.api_token(BOB))
    before = api.get("/api/v1/reservations/sens-003").json()
    # The page: by 3 hours, and the flash says until when.
    extended = bob.post("/manage/action", [("nodes", "sens-003"), ("action", "extend"), ("hours", "3")])
    assert extended.status == 303
    after = api.get("/api/v1/reservations/sens-003").json()
    assert after["end_date"] == before["end_date"] + 3 * 3600
    end_text = time.strftime("%Y-%m-%d %H:%M", time.gmtime(after["end_date"]))
    assert f"Extended sens-003 until {end_text}." in bob.get("/manage").text
    # The API: {"hours": N}; without a body the duration doubles as before.
    by_one = api.request("POST", "/api/v1/reservations/sens-003/extend", json={"hours": 1})
    assert by_one.status == 200 and by_one.json()["end_date"] == after["end_date"] + 3600
    duration = by_one.json()["end_date"] - by_one.json()["start_date"]
    doubled = api.request("POST", "/api/v1/reservations/sens-003/extend")
    assert doubled.status == 200
    assert doubled.json()["end_date"] - doubled.json()["start_date"] == 2 * duration
    # Past the cap (168 hours in all): 409 saying how much is left; nonsense: 400.
    too_far = api.request("POST", "/api/v1/reservations/sens-003/extend", json={"hours": 160})
    assert too_far.status == 409 and "at most 156 more hours" in too_far.json()["error"]
    for body in ({"hours": -1}, {"hours": "two"}, {"hours": 1, "days": 2}):
        assert api.request("POST", "/api/v1/reservations/sens-003/extend", json=body).status == 400
    # A refusal on the page: 409, beside the node's row, the node still ticked, the hours kept.
    refused = bob.post("/manage/action", [("nodes", "sens-003"), ("action", "extend"), ("hours", "160")])
    assert refused.status == 409
    assert re.search(r'data-error-for="manage.sens-003">[^<]*at most 156 more hours', refused.text)
    assert 'value="sens-003" aria-label="select sens-003" checked' in refused.text
    assert 'name="hours" value="160"' in refused.text
    bad_hours = bob.post("/manage/action", [("nodes", "sens-003"), ("action", "extend"), ("hours", "x")])
    assert bad_hours.status == 400 and 'data-error-for="manage.hours"' in bad_hours.text
    assert bob.post("/manage/action", [("nodes", "sens-003"), ("action", "destroy")]).status == 303


def test_pages_show_human_labels_and_offer_only_possible_actions(testbed):
    bob = client_for(testbed, BOB)
    assert bob.post("/reserve", [("nodes", "srv-001"), ("start", _start_in(60)), ("tz", "UTC"),
                                 ("duration_hours", "1")]).status == 303
    manage = bob.get("/manage").text
    row = re.search(r'<tr data-node="srv-001".*?</tr>', manage, re.S).group(0)
    assert ">Needs configuration<" in row and ">configuring<" not in row
    # Not started: deploy and reboot cannot succeed, so the row does not allow them.
    assert 'data-actions="extend destroy"' in row
    live = bob.get("/manage/live").json()
    assert re.fullmatch(r"\d\d:\d\d:\d\d", live["now_text"])  # 24-hour clock
    assert bob.post("/manage/action", [("nodes", "srv-001"), ("action", "destroy")]).status == 303
    admin = client_for(testbed, ADMIN)
    nodes = admin.get("/admin/nodes").text
    assert "Memory (GB): <code>128</code>" in nodes and "memory_gb=" not in nodes
    users = admin.get("/admin/users").text
    own = re.search(rf'<tr data-email="{ADMIN}".*?</tr>', users, re.S).group(0)
    assert "your own account" in own and "<button" not in own
    other = re.search(rf'<tr data-email="{BOB}".*?</tr>', users, re.S).group(0)
    assert 'value="revoke"' in other and 'value="delete"' in other
    # Without SMTP and without required confirmation, nobody wears an "email not confirmed" badge.
    assert "not confirmed" not in users and "not confirmed" not in admin.get("/settings").text
    assert labels.prop("usb_ports") == "USB ports" and labels.status("in_progress") == "In progress"


def test_admin_forms_keep_their_values_beside_the_message(testbed):
    admin = client_for(testbed, ADMIN)
    taken = admin.post("/admin/users/create", {"email": BOB, "password": PASSWORD, "admin": "on"})
    assert taken.status == 409
    assert 'data-error-for="create.email"' in taken.text and f'value="{BOB}"' in taken.text
    assert re.search(r'name="admin" checked', taken.text)
    short = admin.post("/admin/users/create", {"email": "new@example.org", "password": "short"})
    assert short.status == 400 and 'data-error-for="create.password"' in short.text
    node = admin.post("/admin/nodes", {"op": "add", "agent": "srv", "name": "srv-x", "properties": "oops"})
    assert node.status == 400 and 'data-error-for="add.properties"' in node.text and ">oops</textarea>" in node.text
    env = admin.post("/admin/environments", {"op": "put", "agent": "sens", "name": "e1", "image": "/i",
                                             "size_bytes": "lots"})
    assert env.status == 400 and 'data-error-for="env.size_bytes"' in env.text and 'value="lots"' in env.text
    agent = admin.post("/admin/agents", {"name": "a1", "type": "sensor", "ip": "127.0.0.1", "port": "99999",
                                         "token": "secret-token-9"})
    assert agent.status == 400 and 'data-error-for="agent.port"' in agent.text and 'value="a1"' in agent.text
    assert "secret-token-9" not in agent.text


def test_email_confirmation_required_by_setting_and_given_by_an_administrator(tmp_path):
    bed = Testbed(tmp_path, require_confirmed_email=True).start()
    try:
        bed.create_user(ADMIN, admin=True)
        visitor = Client(bed.url)
        signed = visitor.post("/signup", {"email": CAROL, "password": PASSWORD})
        assert signed.status == 303
        note = visitor.get("/login").text
        # No SMTP here: the page does not claim a mail failed; it says who confirms.
        assert "could not be" not in note and "An administrator will confirm your email address" in note
        admin = client_for(bed, ADMIN)
        assert admin.post("/admin/users", {"email": CAROL, "op": "authorize"}).status == 303
        refused = visitor.post("/login", {"email": CAROL, "password": PASSWORD})
        assert refused.status == 403 and "not confirmed yet" in refused.text
        users = admin.get("/admin/users").text
        row = re.search(rf'<tr data-email="{CAROL}".*?</tr>', users, re.S).group(0)
        assert "not confirmed" in row and 'value="confirm_email"' in row
        assert admin.post("/admin/users", {"email": CAROL, "op": "confirm_email"}).status == 303
        visitor.login(CAROL)
        assert visitor.get("/manage").status == 200
        assert "email confirmed" in visitor.get("/settings").text
        # The JSON API confirms (and unconfirms) too; an unconfirmed account's token is refused.
        token = bed.api_token(CAROL)
        api_admin = Client(bed.url, token=bed.api_token(ADMIN))
        unconfirmed = api_admin.request("PATCH", f"/api/v1/admin/users/{CAROL}", json={"confirmed_email": False})
        assert unconfirmed.status == 200 and unconfirmed.json()["confirmed_email"] is False
        assert Client(bed.url, token=token).get("/api/v1/reservations").status == 403
    finally:
        bed.stop()


def test_the_timeline_axis_and_bars():
    tz = ZoneInfo("Europe/Paris")
    now = 1_900_000_000 + 1234  # 2030-03-17, a Sunday
    day = timeline.view_for(now, 1, tz)
    assert day.end - day.start == 86400 and day.start % 3600 == 0
    axis = timeline.axis(day)
    assert [h["label"] for h in axis["hours"]][:3] == ["17", "18", "19"]
    assert len(axis["hours"]) == 24 and axis["minor"] == round(100 / 24, 4)
    week = timeline.axis(timeline.view_for(now, 7, tz))
    assert [d["label"] for d in week["days"]][:2] == ["Sun 17", "Mon 18"]
    assert len(week["hours"]) == 28 and {h["label"] for h in week["hours"]} == {"00", "06", "12", "18"}
    two = timeline.axis(timeline.view_for(now, 14, tz))
    assert len(two["hours"]) == 28 and len(two["days"]) == 14
    # A one-hour window in the week view: narrow, so its label goes beside it.
    view = timeline.view_for(now, 7, tz)
    [bar] = timeline.bars([timeline.Window(now, now + 3600, True)], view, now)
    assert bar["label"] == "you" and bar["side"] == "after" and 0.5 < bar["width"] < 0.7
    # Others' windows are unlabelled for users, named for administrators.
    [plain] = timeline.bars([timeline.Window(now, now + 3600, False)], view, now)
    [named] = timeline.bars([timeline.Window(now, now + 3600, False, BOB)], view, now)
    assert plain["label"] == "" and named["label"] == BOB
    windows = [timeline.Window(now + 7200, now + 10800, False)]
    assert timeline.availability(windows, now, tz) == ("free", "free until 21:07")
    assert timeline.availability(windows, now + 7300, tz) == ("busy", "reserved until 22:07")
    assert timeline.availability([], now, tz) == ("free", "free")
    # The next start read beyond the loaded windows counts; the earlier of the two wins.
    assert timeline.availability([], now, tz, next_start=now + 86400) == ("free", "free until Mon 19:07")
    assert timeline.availability(windows, now, tz, next_start=now + 86400) == ("free", "free until 21:07")
    # One formatter per request gives what short_time gives, whatever the distance.
    text = timeline.TimeText(tz, now)
    for ahead in (0, 3600 * 5, 86400 * 3, 86400 * 8, -86400):
        assert text(now + ahead) == timeline.short_time(now + ahead, tz, now)
    assert [text(now), text(now + 86400 * 8)] == ["19:07", "2030-03-25 19:07"]
