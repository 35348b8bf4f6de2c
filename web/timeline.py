"""The reserve page's timeline, computed on the server: the view's span, its hour axis, one bar
per reserved window and what each node is doing now.

Drawn as HTML and CSS by the server rather than by a timeline library in the browser: the bars
must line up with the node table's rows (the checkbox, the properties) for a thousand nodes, be
there without any script, and cost the page less than its 100 ms budget
(scripts/bench/web_pages.py). Everything here is pure: epochs (UTC seconds) and a zone in,
numbers (percent of the view's width) and text out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

HOUR = 3600
DAY = 24 * HOUR

# The zoom levels the page offers, in days.
ZOOMS = ((1, "Day"), (7, "Week"), (14, "2 weeks"))
MAX_DAYS = 60
# The day view starts this many hours before the current hour, so that what just began shows.
DAY_VIEW_LEAD_HOURS = 2
# A bar narrower than this (percent of the view) carries its label beside it, not inside.
NARROW_PERCENT = 7.0
# How far ahead "free until" looks for the next reservation of a node (the page reads the
# windows in its view, and only each node's first start beyond them: Inventory.next_starts).
LOOKAHEAD_SECONDS = 60 * DAY


@dataclass(frozen=True)
class View:
    """The span [start, end) the timeline shows, in the viewer's zone."""

    start: int
    end: int
    days: int
    tz: ZoneInfo

    @property
    def span(self) -> int:
        return self.end - self.start

    def percent(self, epoch: int) -> float:
        return round((epoch - self.start) * 100 / self.span, 3)


def _at(naive: datetime, tz: ZoneInfo) -> int:
    # Local wall-clock time -> epoch; adding days or hours to the naive time keeps midnight and
    # whole hours right across a change of daylight saving time.
    return int(naive.replace(tzinfo=tz).timestamp())


def view_for(now: int, days: int, tz: ZoneInfo, start: int | None = None) -> View:
    """The view of `days` days: from `start` when given (the page's "from"), else a day view
    from two hours before the current hour and longer views from today's midnight."""
    local = datetime.fromtimestamp(start if start is not None else now, tz).replace(tzinfo=None)
    if days == 1:
        first = local.replace(minute=0, second=0, microsecond=0)
        if start is None:
            first -= timedelta(hours=DAY_VIEW_LEAD_HOURS)
        return View(_at(first, tz), _at(first + timedelta(days=1), tz), 1, tz)
    first = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return View(_at(first, tz), _at(first + timedelta(days=days), tz), days, tz)


def _steps(days: int) -> tuple[int, int]:
    """(hours between labelled hour ticks, hours between grid lines) for a zoom."""
    if days <= 1:
        return 1, 1
    if days <= 3:
        return 3, 3
    if days <= 7:
        return 6, 6
    if days <= 14:
        return 12, 12
    return 24, 24


def axis(view: View) -> dict[str, Any]:
    """The axis: `days` (a labelled band per calendar day), `hours` (labelled hour ticks) and the
    grid the rows draw with CSS (`minor`, `major` as percent of the width, `offset` of the first
    line). Each label sits in a box as wide as its interval, so labels are cut, never overlap."""
    tz = view.tz
    label_hours, grid_hours = _steps(view.days)
    first_day = datetime.fromtimestamp(view.start, tz).replace(tzinfo=None)
    midnight = first_day.replace(hour=0, minute=0, second=0, microsecond=0)
    day_bands = []
    day = midnight
    while _at(day, tz) < view.end:
        following = day + timedelta(days=1)
        left = max(_at(day, tz), view.start)
        right = min(_at(following, tz), view.end)
        if right > left:
            long_label = view.days <= 14
            day_bands.append({
                "left": view.percent(left),
                "width": round((right - left) * 100 / view.span, 3),
                "label": day.strftime("%a %d %b" if view.days == 1 else "%a %d" if long_label else "%d"),
                "weekend": day.weekday() >= 5,
            })
        day = following
    hours = []
    if label_hours < 24:
        tick = first_day.replace(minute=0, second=0, microsecond=0)
        if first_day != tick:
            tick += timedelta(hours=1)
        while tick.hour % label_hours:
            tick += timedelta(hours=1)
        while _at(tick, tz) < view.end:
            epoch = _at(tick, tz)
            hours.append({
                "left": view.percent(epoch),
                "width": round(label_hours * HOUR * 100 / view.span, 3),
                "label": tick.strftime("%H"),
            })
            tick += timedelta(hours=label_hours)
    first_line = first_day.replace(minute=0, second=0, microsecond=0)
    while first_line.hour % grid_hours or _at(first_line, tz) < view.start:
        first_line += timedelta(hours=1)
    first_midnight = midnight if _at(midnight, tz) >= view.start else midnight + timedelta(days=1)
    return {
        "days": day_bands,
        "hours": hours,
        "minor": round(grid_hours * HOUR * 100 / view.span, 4),
        "minor_offset": view.percent(_at(first_line, tz)),
        "major": round(DAY * 100 / view.span, 4),
        "major_offset": view.percent(_at(first_midnight, tz)),
    }


class Window(NamedTuple):
    """A reserved window on a node, as the timeline sees it: `owner` is set only for
    administrators ('' otherwise), `mine` whether the viewer holds it. A named tuple, not a
    frozen dataclass: the reserve page makes thousands per request."""

    start: int
    end: int
    mine: bool
    owner: str = ""


def short_time(epoch: int, tz: ZoneInfo, now: int) -> str:
    """24-hour time, with the weekday when not today and the date when more than a week away."""
    return TimeText(tz, now)(epoch)


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class TimeText:
    """short_time for one request: the zone and today computed once, each epoch formatted once
    (a page formats the same window ends again and again: a bar's tooltip, "free until")."""

    def __init__(self, tz: ZoneInfo, now: int) -> None:
        self.tz = tz
        self.today = datetime.fromtimestamp(now, tz).date().toordinal()
        self._seen: dict[int, str] = {}

    def __call__(self, epoch: int) -> str:
        text = self._seen.get(epoch)
        if text is None:
            moment = datetime.fromtimestamp(epoch, self.tz)
            ahead = moment.toordinal() - self.today
            # f-strings rather than strftime: a few thousand of these per page.
            if ahead == 0:
                text = f"{moment.hour:02d}:{moment.minute:02d}"
            elif 0 < ahead < 7:
                text = f"{_WEEKDAYS[moment.weekday()]} {moment.hour:02d}:{moment.minute:02d}"
            else:
                text = (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} "
                        f"{moment.hour:02d}:{moment.minute:02d}")
            self._seen[epoch] = text
        return text


def bars(
    windows: Iterable[Window], view: View, now: int, text: TimeText | None = None
) -> list[dict[str, Any]]:
    """One bar per window overlapping the view: position and width in percent (at least a
    visible sliver, the stylesheet gives it a minimum width too), its label ("you" or the
    owner for administrators), whether the label goes beside a narrow bar, and a tooltip.
    `text` formats the times (one per request; a new one when not given)."""
    text = text or TimeText(view.tz, now)
    result = []
    for window in windows:
        left = max(window.start, view.start)
        right = min(window.end, view.end)
        if right <= left:
            continue
        width = round((right - left) * 100 / view.span, 3)
        who = "you" if window.mine else window.owner
        when = f"{text(window.start)}–{text(window.end)}"
        left_percent = view.percent(left)
        narrow = width < NARROW_PERCENT
        result.append({
            "left": left_percent,
            "width": width,
            "start": window.start,
            "end": window.end,
            "mine": window.mine,
            "label": who,
            # A narrow bar near the right edge has its label on its left.
            "side": ("before" if left_percent > 85 else "after") if narrow and who else "",
            "title": f"{'yours' if window.mine else ('reserved by ' + window.owner if window.owner else 'reserved')}"
                     f", {when}",
        })
    return result


def availability(
    windows: Sequence[Window],
    now: int,
    tz: ZoneInfo,
    next_start: int | None = None,
    text: TimeText | None = None,
) -> tuple[str, str]:
    """(kind, text) of what the node is doing now: ('free', 'free until Tue 14:00' or 'free'),
    ('mine', 'yours until 15:00') or ('busy', 'reserved until 15:00'; the bar names the owner
    to administrators). `windows` must hold the window open at `now`, if any, and either every
    window starting in (now, now + LOOKAHEAD_SECONDS) or those up to some point, with
    `next_start` the first start after that point (None: none within the look-ahead)."""
    text = text or TimeText(tz, now)
    upcoming = next_start
    for window in windows:
        if window.start <= now < window.end:
            until = text(window.end)
            if window.mine:
                return "mine", f"yours until {until}"
            return "busy", f"reserved until {until}"
        if window.start > now and (upcoming is None or window.start < upcoming):
            upcoming = window.start
    if upcoming is not None:
        return "free", f"free until {text(upcoming)}"
    return "free", "free"
