"""The web side's small parts on their own: input readers, the OpenAPI
document and the route table."""

from __future__ import annotations

import itertools
from zoneinfo import ZoneInfo

import pytest
from openapi_spec_validator import validate

from edgebed.controller.errors import InvalidInput
from edgebed.controller.settings import Settings
from edgebed.web.app import create_app
from edgebed.web.forms import clean_text, day_starts, parse_float, parse_local_datetime, zone
from edgebed.web.openapi import openapi_document


def test_text_readers_refuse_nul_lone_surrogates_and_huge_values():
    with pytest.raises(InvalidInput, match="NUL"):
        clean_text("a\x00b", "email")
    with pytest.raises(InvalidInput, match="not valid text"):
        clean_text("\ud800", "email")
    with pytest.raises(InvalidInput, match="too long"):
        clean_text("x" * 10_000, "email")
    with pytest.raises(InvalidInput, match="must be a string"):
        clean_text(12, "email")
    with pytest.raises(InvalidInput, match="between"):
        parse_float("nan", "duration", minimum=0, maximum=10)


def test_local_dates_are_read_in_the_given_zone_across_daylight_saving():
    paris = ZoneInfo("Europe/Paris")
    # Winter: UTC+1; summer: UTC+2.
    assert parse_local_datetime("2030-01-15T12:00", paris, "start") == 1894705200
    assert parse_local_datetime("2030-07-15T12:00", paris, "start") == 1910340000
    with pytest.raises(InvalidInput, match="look like"):
        parse_local_datetime("tomorrow", paris, "start")
    with pytest.raises(InvalidInput, match="unknown time zone"):
        zone("Mars/Olympus")
    # The timeline's midnights stay at midnight on the day clocks change (2031-03-30 in Paris).
    noon = parse_local_datetime("2031-03-29T12:00", paris, "start")
    ticks = [epoch for epoch, _ in day_starts(noon, 3, paris)]
    assert [b - a for a, b in itertools.pairwise(ticks)] == [86400, 82800, 86400]


def test_openapi_document_is_valid_openapi_3():
    validate(openapi_document())


def test_every_api_route_is_described_in_openapi(tmp_path):
    settings = Settings(
        listen="127.0.0.1:0",
        database=str(tmp_path / "db.sqlite"),
        secret_key_file=str(tmp_path / "secret.key"),
    )
    app = create_app(settings)
    documented = {
        (method.upper(), "/api/v1" + path)
        for path, item in openapi_document()["paths"].items()
        for method in item
    }
    routed = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or ""
        if not path.startswith("/api/v1") or route.method == "HEAD":
            continue
        routed.add((route.method, path))
    assert routed == documented
