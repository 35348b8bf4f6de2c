"""Paging for the pages and the JSON API: the `limit` and the opaque `cursor` they take.

A cursor is the key of the last row of the page before (ScheduleRepository.order_key, or a
node's (type, name) on the reserve page), with the name of the list it belongs to, as
URL-safe base64 of compact JSON. It is opaque to clients: they pass back what a `Link` header
(API) or a "next" link (pages) gave them. Not signed: a made-up cursor only starts a page
elsewhere in rows the caller may read anyway; it is checked for shape where it enters, and a
malformed one or one from another list is refused with a clear message (400).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from edgebed.controller.errors import InvalidInput

# Longer than any cursor this module writes (a key of a 64-character node name, a 254-character
# owner and a 64-character bin, escaped): a longer one is not ours.
MAX_CURSOR = 2048


def encode_cursor(kind: str, key: tuple[Any, ...] | list[Any]) -> str:
    """The cursor after `key` in the list named `kind`."""
    text = json.dumps([kind, list(key)], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(text: str, kind: str) -> list[Any]:
    """The key a cursor of the list `kind` holds (its parts still to be checked against the
    list's order by the caller); InvalidInput when it is not a cursor of this list."""
    if not text or len(text) > MAX_CURSOR:
        raise InvalidInput("cursor: not a cursor this list gave out (pass back the one from the "
                           "previous page's next link)")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: a made-up cursor of a thousand nested brackets, under MAX_CURSOR.
        value = None
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], list)):
        raise InvalidInput("cursor: not a cursor this list gave out (pass back the one from the "
                           "previous page's next link)")
    if value[0] != kind:
        raise InvalidInput("cursor: it belongs to another list (a cursor pages on the list that "
                           "gave it out, with the same parameters)")
    return value[1]


def parse_limit(text: str | None, *, default: int, maximum: int) -> int:
    """`limit` from a query string: `default` when absent or empty; InvalidInput unless a
    whole number 1..maximum."""
    if text is None or text == "":
        return default
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= maximum:
        raise InvalidInput(f"limit must be a whole number between 1 and {maximum}")
    return int(text)


def page_of(
    keys: list[tuple[Any, ...]], cursor: tuple[Any, ...] | None, limit: int
) -> tuple[int, int, tuple[Any, ...] | None, tuple[Any, ...] | None | bool]:
    """For rows in memory with sorted, unique `keys`: (first, stop) of the page after `cursor`
    (from the start when None) of at most `limit` rows, the cursor key of the next page (None
    on the last), and of the page before (None: the first page; False: there is none). A
    binary search: the cursor's row need not still be there."""
    first = 0 if cursor is None else bisect.bisect_right(keys, cursor)
    stop = min(first + limit, len(keys))
    following = keys[stop - 1] if stop < len(keys) else None
    previous: tuple[Any, ...] | None | bool = False
    if first > 0:
        back = first - limit
        previous = keys[back - 1] if back > 0 else None
    return first, stop, following, previous


def cursor_key(text: str, kind: str, shape: tuple[type, ...], *, longest: int | None = None) -> tuple[Any, ...]:
    """The key a cursor of the list `kind` holds, checked against `shape` (the type of each part:
    str or int, never a bool; a str of at most `longest` characters when given); InvalidInput
    when it is not a cursor of this list."""
    key = decode_cursor(text, kind)
    if len(key) != len(shape) or not all(
        isinstance(part, kind_of) and not isinstance(part, bool)
        and (longest is None or not isinstance(part, str) or len(part) <= longest)
        for part, kind_of in zip(key, shape, strict=False)
    ):
        raise InvalidInput("cursor: it belongs to another list (a cursor pages on the list that "
                           "gave it out, with the same parameters)")
    return tuple(key)


@dataclass(frozen=True)
class Window:
    """One page of a list a page holds in memory: its rows are `rows[first:stop]` of `total`,
    `next_page` and `first_page` the links to the others (None where there is none)."""

    first: int
    stop: int
    total: int
    limit: int
    # No cursor was given: the page the list opens on.
    from_start: bool
    next_page: str | None
    first_page: str | None


def window(
    query: Mapping[str, str], path: str, kind: str, keys: list[tuple[Any, ...]], shape: tuple[type, ...],
    *, default: int, maximum: int,
) -> Window:
    """The page of the rows whose sorted, unique `keys` are given that `query` (its `limit` and
    `cursor`) asks for, with links on `path` to the next and the first page. InvalidInput for a
    bad limit or a cursor of another list."""
    limit = parse_limit(query.get("limit"), default=default, maximum=maximum)
    text = query.get("cursor", "")
    cursor = cursor_key(text, kind, shape) if text else None
    first, stop, following, _ = page_of(keys, cursor, limit)

    def link(after: tuple[Any, ...] | None) -> str:
        parts = [("limit", str(limit))] if limit != default else []
        if after is not None:
            parts.append(("cursor", encode_cursor(kind, after)))
        return path + ("?" + urlencode(parts) if parts else "")

    return Window(
        first=first, stop=stop, total=len(keys), limit=limit, from_start=cursor is None,
        next_page=link(following) if following is not None else None,
        first_page=link(None) if first > 0 else None,
    )


# The order of the users list (UserRepository.list_users): awaiting approval first, then oldest
# first; the email breaks ties. Its key pages the admin Users page and the API's list.
USER_KEY_SHAPE = (int, int, str)


def user_key(user: Any) -> tuple[int, int, str]:
    return (int(bool(user.is_authorized)), int(user.created_at), user.email)
