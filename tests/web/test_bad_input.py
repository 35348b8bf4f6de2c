"""Bad input, generated with hypothesis: every form and JSON endpoint fed wrong types, missing
fields, huge strings, HTML and script payloads and SQL metacharacters answers 4xx with a clear
message, never a 500, and never echoes a payload unescaped."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.web.conftest import ADMIN, ALICE
from tests.web.harness import Client

# Markup that would run or render if echoed as is; autoescaping turns each into entities.
MARKUP = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "<svg/onload=alert(1)>",
    "</textarea><b>bold</b>",
]
SQL = ["' OR '1'='1' --", "'; DROP TABLE user; --", '" OR ""="', "1; SELECT * FROM agent"]
ODD = ["\x00", "a\x00b", "\u202e\u0645", "{{7*7}}", "${jndi:ldap://x}", "../../etc/passwd", "%00",
       "   ", "", "🦄" * 50, "x" * 5000]

nasty_text = st.one_of(
    st.sampled_from(MARKUP),
    st.sampled_from(MARKUP + SQL + ODD),
    st.text(max_size=30),
    st.builds(lambda a, b: a + b, st.sampled_from(MARKUP + SQL), st.text(max_size=10)),
)
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), nasty_text,
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)

FORMS = {
    "/signup": ["email", "password", "ssh_key"],
    "/login": ["email", "password", "next"],
    "/settings/password": ["old_password", "new_password", "new_password_again"],
    "/settings/ssh-key": ["ssh_key"],
    "/settings/tokens": ["label"],
    "/settings/tokens/revoke": ["token_id"],
    "/reserve": ["nodes", "count", "start", "tz", "duration_hours", "f.type", "f.<b>"],
    "/configure": ["nodes", "bin", "prop.environment", "prop.os_password", "prop.<x>"],
    "/manage/action": ["nodes", "action"],
    "/admin/users": ["email", "op"],
    "/admin/users/create": ["email", "password", "admin", "authorized"],
    "/admin/agents": ["name", "type", "ip", "port", "token", "ca_pem"],
    "/admin/agents/action": ["name", "op"],
    "/admin/nodes": ["op", "agent", "name", "new_name", "properties"],
    "/admin/environments": ["op", "agent", "name", "description", "image", "size_bytes",
                            "default_user", "properties"],
}
JSON_ENDPOINTS = [
    ("POST", "/api/v1/reservations"),
    ("PUT", "/api/v1/reservations/rpi-004"),
    ("POST", "/api/v1/admin/users"),
    ("PATCH", "/api/v1/admin/users/nobody@example.org"),
    ("POST", "/api/v1/admin/agents"),
]
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def admin_client(testbed):
    # An administrator reaches every form, admin ones included; alice's API token for the JSON.
    client = Client(testbed.url)
    client.login(ADMIN)
    return client


@pytest.fixture(scope="module")
def api_client(testbed):
    return Client(testbed.url, token=testbed.api_token(ADMIN))


def assert_clear_refusal_or_success(response, sent: list[str]) -> None:
    assert response.status < 500, (response.status, response.text[:500])
    body = response.text
    if response.status >= 400:
        if response.headers.get("Content-Type", "").startswith("application/json"):
            assert response.json()["error"].strip()
        else:
            # The refused form is drawn again with the message as an alert: beside the field it is
            # about (field-error) or above the form (flash-error).
            message = re.search(r'class="(?:flash flash-error|field-error)" role="alert"[^>]*>([^<]+)<', body)
            assert message and message.group(1).strip(), body[:500]
    if response.headers.get("Content-Type", "").startswith("text/html"):
        for value in sent:
            for marker in MARKUP:
                if marker in value:
                    assert marker not in body, f"{marker!r} echoed unescaped"


@pytest.mark.slow  # hypothesis: 15 forms x 15 generated submissions
@pytest.mark.parametrize("path", sorted(FORMS))
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_forms_refuse_bad_input_clearly(admin_client, path, data):
    names = FORMS[path]
    chosen = data.draw(st.lists(st.sampled_from(names), max_size=len(names) + 2), label="fields")
    fields = [(name, data.draw(nasty_text, label=name)) for name in chosen]
    sent = [value for _, value in fields]
    if path in ("/login",):
        # A fresh visitor, so that this test never runs into its own rate limit.
        client = Client(admin_client.base_url)
    else:
        client = admin_client
    response = client.post(path, fields)
    assert_clear_refusal_or_success(response, sent)


@pytest.mark.slow  # hypothesis: 40 generated bodies
@SETTINGS
@given(
    endpoint=st.sampled_from(JSON_ENDPOINTS),
    body=st.one_of(json_value, st.dictionaries(
        st.sampled_from(["nodes", "filter", "count", "start_date", "duration_hours", "email",
                         "password", "is_admin", "is_authorized", "name", "type", "ip", "port",
                         "token", "bin", "environment"]),
        json_value, max_size=5)),
)
def test_json_endpoints_refuse_bad_bodies_with_a_json_error(api_client, endpoint, body):
    method, path = endpoint
    try:
        raw = json.dumps(body).encode()
    except ValueError:
        raw = b"{"  # only NaN-free JSON is valid; send a broken body instead
    response = api_client.request(method, path, body=raw, headers={"Content-Type": "application/json"})
    assert response.status < 500, (response.status, response.text[:500])
    assert response.headers["Content-Type"].startswith("application/json")
    if response.status >= 400:
        assert response.json()["error"].strip()


@pytest.mark.slow  # hypothesis: 40 generated paths
@SETTINGS
@given(name=nasty_text.filter(lambda text: text.strip("/") != ""),
       suffix=st.sampled_from(["", "/reboot", "/deploy", "/destroy", "/extend", "/x"]))
def test_path_parameters_are_checked(api_client, name, suffix):
    path = f"/api/v1/reservations/{quote(name, safe='')}{suffix}"
    for method in ("GET", "POST", "PUT"):
        response = api_client.request(method, path, body=b"{}", headers={"Content-Type": "application/json"})
        assert 400 <= response.status < 500, (method, path, response.status, response.text[:300])
        assert response.json()["error"].strip()


def test_bodies_that_are_not_json_or_too_large_are_refused(api_client, admin_client):
    cases = [
        (b"not json", "application/json"),
        (b"{\"nodes\": [", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"[1, 2]", "application/json"),
        (b"nodes=a", "application/x-www-form-urlencoded"),
        (b"", "application/json"),
    ]
    for raw, content_type in cases:
        response = api_client.request("POST", "/api/v1/reservations", body=raw,
                                      headers={"Content-Type": content_type})
        assert response.status == 400 and response.json()["error"], raw
    huge = api_client.request("POST", "/api/v1/reservations", body=b'{"nodes": ["' + b"x" * 400_000 + b'"]}',
                              headers={"Content-Type": "application/json"})
    assert huge.status == 413 and huge.json()["error"]
    huge_form = admin_client.post("/settings/ssh-key", {"ssh_key": "x" * 400_000})
    assert huge_form.status == 413
    # Unknown pages and methods answer in kind.
    assert admin_client.get("/no/such/page").status == 404
    assert api_client.get("/api/v1/no-such-call").json()["error"]
    not_allowed = api_client.request("DELETE", "/api/v1/nodes")
    assert not_allowed.status == 405 and not_allowed.headers["Allow"] == "GET,HEAD"
    assert not_allowed.json()["error"] == "DELETE is not allowed here; use GET,HEAD"
    page = admin_client.get("/logout")
    assert (page.status, page.headers["Allow"]) == (405, "POST") and "use POST" in page.text


def test_deeply_nested_bodies_and_huge_numbers_are_refused(api_client):
    cases = {
        b"[" * 100_000: "nested too deeply",
        b'{"a":' * 40_000: "nested too deeply",
        json.dumps({"nodes": ["rpi-001"], "start_date": 1, "duration_hours": 10**400}).encode():
            "the duration must be at most 168 hours",
    }
    for raw, expected in cases.items():
        response = api_client.request("POST", "/api/v1/reservations", body=raw,
                                      headers={"Content-Type": "application/json"})
        assert response.status == 400, (raw[:40], response.status, response.text[:300])
        assert expected in response.json()["error"]


def test_reserve_form_reports_what_is_wrong(testbed):
    alice = Client(testbed.url)
    alice.login(ALICE)
    cases = {
        "start date must look like": [("nodes", "rpi-003"), ("start", "soon"), ("duration_hours", "1")],
        "duration (hours) must be a number": [("nodes", "rpi-003"), ("start", "2030-01-01T10:00"),
                                              ("duration_hours", "long")],
        "unknown time zone": [("nodes", "rpi-003"), ("start", "2030-01-01T10:00"), ("tz", "Mars/Base"),
                              ("duration_hours", "1")],
        "unknown node": [("nodes", "<b>nope</b>"), ("start", "2030-01-01T10:00"), ("duration_hours", "1")],
        "tick the nodes to reserve": [("start", "2030-01-01T10:00"), ("duration_hours", "1")],
        "the start date is in the past": [("nodes", "rpi-003"), ("start", "2001-01-01T10:00"),
                                          ("duration_hours", "1")],
    }
    for expected, form in cases.items():
        response = alice.post("/reserve", form)
        assert response.status == 400, (expected, response.status)
        assert expected in response.text, (expected, response.text[:800])
        assert "<b>nope</b>" not in response.text
