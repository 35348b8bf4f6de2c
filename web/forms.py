"""Reading what browsers and scripts send: form fields, JSON bodies, dates in a time zone.

Every reader raises controller.errors.InvalidInput with a message naming the field, so that bad
input gets a 400 that says what is wrong, and nothing malformed (NUL characters, lone surrogates,
megabytes of text) reaches the database.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from multidict import MultiDictProxy

from edgebed.controller.errors import InvalidInput
from edgebed.controller.validation import LATEST_START_TEXT

# Lengths beyond which a value is refused outright; the service checks the finer rules.
MAX_SHORT = 256  # emails, names, labels, property values shown in tables
MAX_LONG = 16_384  # SSH keys, descriptions, free-text properties
MAX_PASSWORD = 1024
MAX_LIST = 1000  # node names in one request

UTC = ZoneInfo("UTC")


def clean_text(value: object, field: str, *, max_length: int = MAX_SHORT) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string")
    if len(value) > max_length:
        raise InvalidInput(f"{field} is too long (at most {max_length} characters)")
    if "\x00" in value:
        raise InvalidInput(f"{field} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{field} is not valid text") from None
    return value


def field(
    form: Mapping[str, Any],
    name: str,
    *,
    required: bool = True,
    max_length: int = MAX_SHORT,
    strip: bool = True,
    label: str | None = None,
) -> str:
    """One text field of a form or JSON object; '' when optional and absent."""
    label = label or name
    value = form.get(name)
    if value is None:
        if required:
            raise InvalidInput(f"{label} is missing")
        return ""
    text = clean_text(value, label, max_length=max_length)
    if strip:
        text = text.strip()
    if required and not text:
        raise InvalidInput(f"{label} is empty")
    return text


def form_list(form: MultiDictProxy[Any] | Any, name: str, *, label: str | None = None) -> list[str]:
    """Every value of a repeated field (checkboxes), stripped, without blanks or duplicates."""
    label = label or name
    values = form.getall(name, [])
    if len(values) > MAX_LIST:
        raise InvalidInput(f"{label}: too many values (at most {MAX_LIST})")
    result: list[str] = []
    for value in values:
        text = clean_text(value, label).strip()
        if text and text not in result:
            result.append(text)
    return result


def parse_int(text: str, label: str, *, minimum: int, maximum: int) -> int:
    try:
        number = int(text.strip())
    except (ValueError, AttributeError):
        raise InvalidInput(f"{label} must be a whole number") from None
    if not minimum <= number <= maximum:
        raise InvalidInput(f"{label} must be between {minimum} and {maximum}")
    return number


def parse_float(text: str, label: str, *, minimum: float, maximum: float) -> float:
    try:
        number = float(text.strip())
    except (ValueError, AttributeError):
        raise InvalidInput(f"{label} must be a number") from None
    if not math.isfinite(number) or not minimum <= number <= maximum:
        raise InvalidInput(f"{label} must be between {minimum:g} and {maximum:g}")
    return number


def zone(name: str, *, label: str = "time zone") -> ZoneInfo:
    """The IANA zone `name` (as the browser reports it); InvalidInput when unknown."""
    name = clean_text(name, label, max_length=64).strip()
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidInput(f"unknown {label} {name!r}") from None


def zone_or_utc(name: str | None) -> ZoneInfo:
    """The viewer's zone from a cookie: falls back to UTC rather than failing a page."""
    if not name:
        return UTC
    try:
        return zone(name)
    except InvalidInput:
        return UTC


def parse_number(text: str, label: str) -> float:
    """A number as typed; its range is the service's to check (one message for the form and the
    JSON API)."""
    try:
        return float(text.strip())
    except (ValueError, AttributeError):
        raise InvalidInput(f"{label} must be a number") from None


@dataclass(frozen=True)
class LocalTime:
    """A local date and time read in a zone: `epoch` seconds (UTC), and `note`, which says which
    moment was taken when the local time happens twice that day ('' otherwise)."""

    epoch: int
    note: str = ""


def _offset(moment: datetime) -> str:
    offset = moment.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def read_local_datetime(text: str, tz: ZoneInfo, label: str) -> LocalTime:
    """'2025-01-31T14:30' (an HTML datetime-local value) in zone tz.

    A local time that does not exist that day (the hour the clocks skip when they go forward) is
    refused, naming it; one that happens twice (the hour repeated when they go back) is read as
    the first, and `note` says so. A value with its own UTC offset is read as such.
    """
    text = clean_text(text, label, max_length=40).strip()
    if not text:
        raise InvalidInput(f"{label} is missing")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{label} must look like 2025-01-31T14:30") from None
    if moment.tzinfo is not None:
        return LocalTime(int(moment.timestamp()))
    shown = moment.strftime("%Y-%m-%d %H:%M")
    first, second = moment.replace(tzinfo=tz, fold=0), moment.replace(tzinfo=tz, fold=1)
    try:
        epoch = int(first.timestamp())
        back = datetime.fromtimestamp(first.timestamp(), tz).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):
        raise InvalidInput(f"the {label} must be before {LATEST_START_TEXT}") from None
    if back != moment.replace(fold=0):
        raise InvalidInput(
            f"the {label} {shown} does not exist in {tz.key}: the clocks skip that hour when they go "
            f"forward; choose another time"
        )
    if first.utcoffset() != second.utcoffset():
        return LocalTime(
            epoch,
            f"{shown} happens twice in {tz.key} (the clocks go back that night): the first one was "
            f"taken, {first.strftime('%H:%M')} {first.tzname()} ({_offset(first)}).",
        )
    return LocalTime(epoch)


def parse_local_datetime(text: str, tz: ZoneInfo, label: str) -> int:
    """read_local_datetime's epoch seconds (UTC)."""
    return read_local_datetime(text, tz, label).epoch


def local_datetime_value(epoch: int, tz: ZoneInfo) -> str:
    """The value for an <input type=datetime-local> showing epoch in zone tz."""
    return datetime.fromtimestamp(epoch, tz).strftime("%Y-%m-%dT%H:%M")


def format_epoch(epoch: int | None, tz: ZoneInfo, *, with_zone: bool = False) -> str:
    if not epoch:
        return ""
    moment = datetime.fromtimestamp(epoch, tz)
    text = moment.strftime("%Y-%m-%d %H:%M")
    return f"{text} {moment.tzname()}" if with_zone else text


def day_starts(start_epoch: int, days: int, tz: ZoneInfo) -> list[tuple[int, str]]:
    """Midnights (in tz) from the day of start_epoch on, for the timeline's ticks."""
    first = datetime.fromtimestamp(start_epoch, tz).replace(hour=0, minute=0, second=0, microsecond=0)
    ticks = []
    for offset in range(days + 1):
        # Adding days to the naive date keeps midnight right across a DST change.
        day = (first.replace(tzinfo=None) + timedelta(days=offset)).replace(tzinfo=tz)
        ticks.append((int(day.timestamp()), day.strftime("%a %d")))
    return ticks


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; InvalidInput for anything else."""
    if request.content_type != "application/json":
        raise InvalidInput("the body must be JSON (Content-Type: application/json)")
    raw = await request.read()
    if not raw.strip():
        raise InvalidInput("the body is empty; a JSON object was expected")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        # The parser recurses per level: "[[[[..." within the size limit exhausts the stack.
        raise InvalidInput("the body is nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


def json_str(body: Mapping[str, Any], key: str, *, max_length: int = MAX_SHORT) -> str:
    """The text at `key`; InvalidInput when it is missing, null or not clean text."""
    value = json_optional_str(body, key, max_length=max_length)
    if value is None:
        raise InvalidInput(f"{key} is missing")
    return value


def json_optional_str(body: Mapping[str, Any], key: str, *, max_length: int = MAX_SHORT) -> str | None:
    """The text at `key`, or None when it is missing or null."""
    if key not in body or body[key] is None:
        return None
    return clean_text(body[key], key, max_length=max_length)


def json_bool(body: Mapping[str, Any], key: str) -> bool | None:
    if key not in body or body[key] is None:
        return None
    if not isinstance(body[key], bool):
        raise InvalidInput(f"{key} must be true or false")
    return body[key]


def json_int(body: Mapping[str, Any], key: str, *, minimum: int, maximum: int) -> int:
    """The whole number at `key`, within [minimum, maximum]; InvalidInput when it is missing."""
    value = json_optional_int(body, key, minimum=minimum, maximum=maximum)
    if value is None:
        raise InvalidInput(f"{key} is missing")
    return value


def json_optional_int(body: Mapping[str, Any], key: str, *, minimum: int, maximum: int) -> int | None:
    """The whole number at `key`, within [minimum, maximum], or None when it is missing or null."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{key} must be a whole number")
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidInput(f"{key} must be a whole number")
        value = int(value)
    if not minimum <= value <= maximum:
        raise InvalidInput(f"{key} must be between {minimum} and {maximum}")
    return value


def json_number(body: Mapping[str, Any], key: str, *, minimum: float, maximum: float) -> float:
    value = body.get(key)
    if value is None:
        raise InvalidInput(f"{key} is missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{key} must be a number")
    try:
        number = float(value)
    except OverflowError:
        # A JSON integer of hundreds of digits: no float holds it.
        raise InvalidInput(f"{key} must be between {minimum:g} and {maximum:g}") from None
    if not math.isfinite(number) or not minimum <= number <= maximum:
        raise InvalidInput(f"{key} must be between {minimum:g} and {maximum:g}")
    return number


def json_str_list(body: Mapping[str, Any], key: str) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise InvalidInput(f"{key} must be a list of strings")
    if len(value) > MAX_LIST:
        raise InvalidInput(f"{key}: too many values (at most {MAX_LIST})")
    return [clean_text(item, f"{key}[]") for item in value]


def scalar_text(value: object, label: str) -> str:
    """A property value: strings as they are, numbers written out; anything else refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidInput(f"{label} must be a string or a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{label} must be a finite number")
    return clean_text(value if isinstance(value, str) else str(value), label, max_length=MAX_LONG)


def json_str_map(body: Mapping[str, Any], key: str) -> dict[str, str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(f"{key} must be an object of property names to values")
    if len(value) > 100:
        raise InvalidInput(f"{key}: too many properties (at most 100)")
    return {
        clean_text(name, f"{key} name"): scalar_text(item, f"{key}.{name}")
        for name, item in value.items()
    }
