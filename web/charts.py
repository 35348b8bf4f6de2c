"""Charts drawn as SVG on the server for the administrators' overview: no chart library, no
script, nothing fetched; the SVG is inline in the page (the CSP allows it) and scales with it.

Every text that goes into the SVG is escaped here; the result is Markup.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from markupsafe import Markup


@dataclass(frozen=True)
class Part:
    """One slice of a stacked bar: a label, a count and a colour (CSS colour text)."""

    label: str
    count: int
    colour: str


def stacked_bar(parts: Sequence[Part], *, title: str) -> Markup:
    """One horizontal bar split by count, with a legend of label, count and share below it."""
    total = sum(part.count for part in parts)
    width, bar_height = 600, 34
    legend_rows = (len(parts) + 2) // 3
    height = bar_height + 14 + legend_rows * 22
    pieces = []
    x = 0.0
    for part in parts:
        if total and part.count:
            w = part.count * width / total
            pieces.append(
                f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="{bar_height}" fill="{escape(part.colour)}">'
                f"<title>{escape(part.label)}: {part.count}</title></rect>"
            )
            if w > 28:
                pieces.append(
                    f'<text x="{x + w / 2:.2f}" y="{bar_height / 2 + 5}" text-anchor="middle" '
                    f'class="on-bar">{part.count}</text>'
                )
            x += w
    if not total:
        pieces.append(f'<rect x="0" y="0" width="{width}" height="{bar_height}" fill="#e6ebf1"/>')
        pieces.append(f'<text x="{width / 2}" y="{bar_height / 2 + 5}" text-anchor="middle">none</text>')
    for index, part in enumerate(parts):
        lx = (index % 3) * 200
        ly = bar_height + 14 + (index // 3) * 22
        share = f" ({part.count * 100 / total:.0f}%)" if total else ""
        pieces.append(
            f'<rect x="{lx}" y="{ly}" width="12" height="12" rx="2" fill="{escape(part.colour)}"/>'
            f'<text x="{lx + 18}" y="{ly + 11}">{escape(part.label)}: {part.count}{share}</text>'
        )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{''.join(pieces)}</svg>"
    )


def daily_utilisation(
    windows: Sequence[tuple[int, int]], nodes: int, first_day: int, days: int, tz: ZoneInfo
) -> list[tuple[int, float]]:
    """(midnight, share of node-hours reserved) per calendar day in zone tz, from `first_day`'s
    midnight on for `days` days. `windows` are (start, end) epoch seconds, one per reservation;
    the share is reserved seconds over nodes x the day's length (23 or 25 hours on a change of
    daylight saving time), capped at 1."""
    first = datetime.fromtimestamp(first_day, tz).replace(hour=0, minute=0, second=0, microsecond=0)
    naive = first.replace(tzinfo=None)
    bounds = [int((naive + timedelta(days=i)).replace(tzinfo=tz).timestamp()) for i in range(days + 1)]
    reserved = [0] * days
    for start, end in windows:
        if end <= bounds[0] or start >= bounds[-1]:
            continue
        # Only the days the window touches.
        for i in range(max(0, bisect_right(bounds, start) - 1), min(days, bisect_left(bounds, end))):
            overlap = min(end, bounds[i + 1]) - max(start, bounds[i])
            if overlap > 0:
                reserved[i] += overlap
    return [
        (bounds[i], min(1.0, reserved[i] / (nodes * (bounds[i + 1] - bounds[i]))) if nodes else 0.0)
        for i in range(days)
    ]


def utilisation_chart(days: Sequence[tuple[int, float]], now: int, tz: ZoneInfo, *, title: str) -> Markup:
    """Vertical bars, one per day, 0-100 %, with grid lines at 25 % steps, a date label on each
    Monday (and the first day), weekends shaded and today outlined."""
    left, top, plot_h, bar_w, gap = 40, 8, 160, 20, 6
    width = left + len(days) * (bar_w + gap) + 10
    height = top + plot_h + 34
    pieces = []
    for pct in (0, 25, 50, 75, 100):
        y = top + plot_h - pct * plot_h / 100
        pieces.append(f'<line x1="{left}" y1="{y}" x2="{width - 10}" y2="{y}" class="grid"/>')
        pieces.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end" class="axis">{pct}%</text>')
    today = datetime.fromtimestamp(now, tz).date()
    for index, (midnight, share) in enumerate(days):
        day = datetime.fromtimestamp(midnight, tz)
        x = left + index * (bar_w + gap) + gap / 2
        if day.weekday() >= 5:
            pieces.append(
                f'<rect x="{x - gap / 2}" y="{top}" width="{bar_w + gap}" height="{plot_h}" class="weekend"/>'
            )
        h = share * plot_h
        classes = "bar today" if day.date() == today else "bar future" if day.date() > today else "bar"
        pieces.append(
            f'<rect x="{x}" y="{top + plot_h - h:.2f}" width="{bar_w}" height="{max(h, 0.5):.2f}" class="{classes}">'
            f"<title>{day:%a %Y-%m-%d}: {share * 100:.0f}% of node-hours reserved</title></rect>"
        )
        # Mondays, and the first day unless a Monday follows within three days.
        if day.weekday() == 0 or (index == 0 and day.weekday() < 5):
            pieces.append(
                f'<text x="{x}" y="{top + plot_h + 16}" class="axis">{day:%d %b}</text>'
            )
    return Markup(
        f'<svg class="chart utilisation" viewBox="0 0 {width} {height}" width="{width}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>{"".join(pieces)}</svg>'
    )
