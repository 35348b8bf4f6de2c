"""One set of input rules, the same on the reserve form, the JSON API and the OpenAPI document:
the shortest duration, the latest start date and their messages; local times on the day the
clocks change; unknown fields and nodes-or-count; 405 with Allow."""

from __future__ import annotations

import html
import re
import time
from zoneinfo import ZoneInfo

import pytest
from openapi_schema_validator import OAS30Validator

from edgebed.controller.errors import InvalidInput
from edgebed.controller.validation import LATEST_START
from edgebed.web.forms import read_local_datetime
from tests.web.conftest import ADMIN, ALICE, client_for
from tests.web.harness import Client

PARIS = ZoneInfo("Europe/Paris")
DAY = 86400


@pytest.fixture(scope="module")
def api(testbed):
    return Client(testbed.url, token=testbed.api_token(ALICE))


@pytest.fixture(scope="module")
def page(testbed):
    return client_for(testbed, ALICE)


@pytest.fixture(scope="module")
def document(testbed):
    return Client(testbed.url).get("/api/v1/openapi.json").json()


def _form_error(response) -> str:
    """The message the reserve form shows beside its field (or above it), unescaped."""
    match = re.search(r'data-error-for="reserve[^"]*">(.*?)</(?:span|p)>', response.text, re.S)
    assert match, response.text[-3000:]
    return html.unescape(match.group(1).strip())


def test_the_window_rules_and_their_messages_are_the_same_on_the_form_the_api_and_the_document(
    testbed, api, page, document
):
    shortest, longest = testbed.settings.min_duration_hours, testbed.settings.max_duration_hours
    assert shortest == 0.25  # the default
    soon = int(time.time()) + DAY
    cases = [
        # (duration in hours, start: epoch seconds for the API, local time in UTC for the form)
        (shortest / 2, soon, time.strftime("%Y-%m-%dT%H:%M", time.gmtime(soon)),
         f"the duration must be at least {shortest:g} hours"),
        (longest + 1, soon, time.strftime("%Y-%m-%dT%H:%M", time.gmtime(soon)),
         f"the duration must be at most {longest:g} hours"),
        (1, LATEST_START, "2100-01-01T00:00", "the start date must be before 2100-01-01 00:00 UTC"),
    ]
    for hours, start, local, message in cases:
        answer = api.request("POST", "/api/v1/reservations",
                             json={"nodes": ["sens-001"], "start_date": start, "duration_hours": hours})
        assert (answer.status, answer.json()) == (400, {"error": message})
        form = page.post("/reserve", [("nodes", "sens-001"), ("start", local), ("tz", "UTC"),
                                      ("duration_hours", str(hours))])
        assert form.status == 400 and _form_error(form) == message

    # The boundaries themselves pass, in both.
    assert api.request("POST", "/api/v1/reservations", json={
        "nodes": ["sens-001"], "start_date": soon, "duration_hours": shortest}).status == 201
    assert api.request("POST", "/api/v1/reservations", json={
        "nodes": ["sens-002"], "start_date": LATEST_START - 3 * DAY, "duration_hours": longest}).status == 201

    # The document states the same bounds, and so does the form's markup.
    request = document["components"]["schemas"]["ReservationRequest"]["properties"]
    assert (request["duration_hours"]["minimum"], request["duration_hours"]["maximum"]) == (shortest, longest)
    assert request["start_date"]["maximum"] == LATEST_START and request["start_date"]["exclusiveMaximum"] is True
    reserve = page.get("/reserve").text
    assert f'min="{shortest:g}" max="{longest:g}"' in reserve


def test_a_local_time_the_clocks_skip_is_refused_and_one_they_repeat_says_which_was_taken(page):
    # Paris, 2031: clocks go forward at 02:00 on 30 March, back at 03:00 on 26 October.
    with pytest.raises(InvalidInput) as caught:
        read_local_datetime("2031-03-30T02:30", PARIS, "start date")
    assert caught.value.message == (
        "the start date 2031-03-30 02:30 does not exist in Europe/Paris: the clocks skip that hour "
        "when they go forward; choose another time"
    )
    repeated = read_local_datetime("2031-10-26T02:30", PARIS, "start date")
    assert repeated.epoch == 1950741000  # 00:30 UTC: the first 02:30, still summer time
    assert repeated.note == ("2031-10-26 02:30 happens twice in Europe/Paris (the clocks go back that night): "
                             "the first one was taken, 02:30 CEST (UTC+02:00).")
    plain = read_local_datetime("2031-10-26T04:30", PARIS, "start date")
    assert (plain.epoch, plain.note) == (1950751800, "")  # 03:30 UTC, winter time

    skipped = page.post("/reserve", [("nodes", "rpi-003"), ("start", "2031-03-30T02:30"),
                                     ("tz", "Europe/Paris"), ("duration_hours", "1")])
    assert skipped.status == 400 and "2031-03-30 02:30 does not exist in Europe/Paris" in _form_error(skipped)
    taken = page.post("/reserve", [("nodes", "rpi-003"), ("start", "2031-10-26T02:30"),
                                   ("tz", "Europe/Paris"), ("duration_hours", "1")])
    assert taken.status == 303, taken.text[:1000]
    shown = page.get(taken.location).text
    assert "2031-10-26 02:30 happens twice in Europe/Paris" in shown and "02:30 CEST (UTC+02:00)" in shown


def _valid(document, name: str, body) -> bool:
    schema = {**document["components"]["schemas"][name], "components": document["components"]}
    return OAS30Validator(schema).is_valid(body)


def test_the_document_refuses_unknown_fields_exactly_where_the_server_does(testbed, document):
    admin = Client(testbed.url, token=testbed.api_token(ADMIN))
    bodies = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if "requestBody" not in operation:
                continue
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            name = ref.rsplit("/", 1)[1]
            url = "/api/v1" + path.replace("{node}", "sens-003").replace("{email}", "x@example.org").replace(
                "{owner}", "x@example.org"
            )
            closed = document["components"]["schemas"][name].get("additionalProperties") is False
            answer = admin.request(method.upper(), url, json={"zz_unknown": "1"})
            refused = answer.status == 400 and "unknown field(s) 'zz_unknown'" in answer.json()["error"]
            assert refused == closed, (method, path, answer.status, answer.text)
            assert _valid(document, name, {"zz_unknown": "1"}) is (not closed) or name == "ReservationRequest"
            bodies.append(name)
    assert {"ReservationRequest", "Configuration", "UserCreate", "UserUpdate", "AgentCreate"} <= set(bodies)


def test_nodes_or_count_reads_the_same_in_the_document_and_the_server(document, api):
    start = int(time.time()) + 3 * DAY
    window = {"start_date": start, "duration_hours": 1}
    cases = {
        "nodes": ({"nodes": ["rpi-004"]}, True),
        "count": ({"count": 1, "filter": {"type": "node"}}, True),
        "count without filter": ({"count": 1}, True),
        "both": ({"nodes": ["rpi-004"], "count": 1}, False),
        "nodes and filter": ({"nodes": ["rpi-004"], "filter": {"type": "node"}}, False),
        "filter alone": ({"filter": {"type": "node"}}, False),
        "neither": ({}, False),
        "no nodes": ({"nodes": []}, False),
        "null nodes": ({"nodes": None}, False),
    }
    for what, (shape, valid) in cases.items():
        body = {**shape, **window}
        assert _valid(document, "ReservationRequest", body) is valid, what
        answer = api.request("POST", "/api/v1/reservations", json=body)
        assert (answer.status == 201) is valid, (what, answer.status, answer.text)
        if not valid:
            assert answer.status == 400 and answer.json()["error"], what
