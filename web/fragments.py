"""Table rows built in Python for the pages that have hundreds of them (reserve, manage).

Jinja spends a few microseconds per expression; a thousand rows of a dozen expressions made the
reserve page miss its 100 ms budget, and a hundred rows of a few dozen were most of the manage
page's time (scripts/bench/web_pages.py). Here every value still goes
through an HTML escape (html.escape with quote=True: & < > " ', the characters autoescaping
replaces), and the page around the rows stays a template.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from html import escape as _html_escape
from typing import Any

from markupsafe import Markup


def escape(value: object) -> str:
    # A plain str (not Markup) per value: markupsafe's Markup objects cost more than the escape.
    return _html_escape(str(value), quote=True)


_OFFLINE_ROW = ' class="offline"'
_OFFLINE_BADGE = ' <span class="badge warn">agent offline</span>'
_RETIRING_BADGE = ' <span class="badge warn">being removed</span>'


def _maintenance_badge(reason: str) -> str:
    return (
        f' <span class="badge warn maintenance" title="{escape(reason)}">maintenance</span>'
        f' <small class="why">{escape(reason)}</small>'
    )


def _bar(bar: dict[str, Any], escaped: dict[str, str]) -> str:
    classes = "busy mine" if bar["mine"] else "busy"
    if bar["side"]:
        classes += f" narrow {bar['side']}"
    # The same few labels (you, a handful of owners) on thousands of bars: escaped once each.
    who = bar["label"]
    label = ""
    if who:
        label = escaped.get(who) or escaped.setdefault(who, f'<span class="who">{escape(who)}</span>')
    return (
        f'<span class="{classes}" style="left:{float(bar["left"])}%;width:{float(bar["width"])}%" '
        f'data-start="{int(bar["start"])}" data-end="{int(bar["end"])}" '
        f'title="{escape(bar["title"])}">{label}</span>'
    )


def reserve_rows(rows: Iterable[dict[str, Any]], checked: Collection[str] = ()) -> Markup:
    """The rows of one node type's table: checkbox, name (every property in its tooltip), the
    type's shown property cells, what the node does now, and its timeline of reserved windows.
    A node that cannot be reserved now (agent offline, in maintenance, being removed) is greyed
    out with a badge saying why, and its box cannot be ticked."""
    parts: list[str] = []
    escaped: dict[str, str] = {}
    for row in rows:
        raw_name = row["name"]
        name = escape(raw_name)
        offline = not row["connected"]
        maintenance = row.get("maintenance", "")
        retiring = row.get("retiring", False)
        unavailable = offline or bool(maintenance) or retiring
        row_class = _OFFLINE_ROW if unavailable else ""
        badge = (
            (_OFFLINE_BADGE if offline else "")
            + (_maintenance_badge(maintenance) if maintenance else "")
            + (_RETIRING_BADGE if retiring else "")
        )
        state = " disabled" if unavailable else " checked" if raw_name in checked else ""
        cells = "".join(
            f'<td class="prop"><span class="cut" title="{value}">{value}</span></td>'
            for value in (escape(cell) for cell in row["cells"])
        )
        bars = "".join([_bar(bar, escaped) for bar in row["bars"]])
        kind = row["avail_kind"]
        parts.append(
            f'<tr data-node="{name}"{row_class}><td><input type="checkbox" name="nodes" value="{name}" '
            f'aria-label="reserve {name}"{state}></td>'
            f'<td class="name" title="{escape(row["title"])}">{name}{badge}</td>{cells}'
            f'<td class="avail avail-{kind}">{escape(row["avail_text"])}</td>'
            f'<td class="timeline-cell"><div class="timeline">{bars}</div></td></tr>\n'
        )
    return Markup("".join(parts))


_MAINTENANCE_WHY = "; it is not deployed until an administrator releases it or moves your reservation"


def manage_rows(
    rows: Iterable[dict[str, Any]], ticked: Collection[str] = (), node_errors: dict[str, str] | None = None
) -> Markup:
    """The rows of one bin's table on the manage page (the fields of views_user._live_rows):
    tick box, node (type, agent, an administrator's notice, maintenance, the refusal of the last
    action beside it), status, progress through the process's states, access (address, user,
    password behind a disclosure) and window. manage.js redraws the `data-field` cells from
    /manage/live. Built here rather than in the template: a hundred rows of a few dozen
    expressions each were most of the page's time (scripts/bench/web_pages.py)."""
    errors = node_errors or {}
    parts: list[str] = []
    for r in rows:
        raw_name = r["node_name"]
        name = escape(raw_name)
        maintenance = r["node_maintenance"]
        error = (
            f'<span class="field-error" role="alert" data-error-for="manage.{name}">'
            f"{escape(errors[raw_name])}</span>" if raw_name in errors else ""
        )
        access = ""
        if r["node_ip"]:
            access = f'<code>{escape(r["default_user"] or "root")}@{escape(r["node_ip"])}</code>'
        if r["password"]:
            access += (f'\n    <details><summary>password</summary><code class="secret">'
                       f'{escape(r["password"])}</code></details>')
        parts.append(
            f'<tr data-node="{name}" data-status="{escape(r["status"])}" '
            f'data-action-state="{escape(r["action_state"])}" data-actions="{escape(" ".join(r["actions"]))}">\n'
            f'  <td class="tick"><input type="checkbox" name="nodes" value="{name}" aria-label="select {name}"'
            f'{" checked" if raw_name in ticked else ""}></td>\n'
            f'  <td class="name" data-label="Node">{name}<br>'
            f'<small>{escape(r["type"])} · {escape(r["agent"])}</small>\n'
            f'    <small class="notice" data-field="notice">{escape(r["notice"])}</small>\n'
            f'    <span class="badge warn maintenance" data-field="maintenance" title="{escape(maintenance)}"'
            f'{"" if maintenance else " hidden"}>node in maintenance</span>\n'
            f'    <small class="why" data-field="maintenance-reason">'
            f'{escape(maintenance) + _MAINTENANCE_WHY if maintenance else ""}</small>\n'
            f'    {error}</td>\n'
            f'  <td data-label="Status"><span class="status status-{escape(r["status"])}" data-field="status">'
            f'{escape(r["status_text"])}</span></td>\n'
            f'  <td data-label="Progress">\n'
            f'    <div class="progress" data-field="progress" title="{escape(" → ".join(r["states"]))}" '
            f'style="--steps: {escape(r["state_count"] or 1)}">\n'
            f'      <div class="fill{" lost" if r["action_state"] == "lost" else ""}" '
            f'style="width:{escape(r["progress"])}%"></div>\n'
            f'    </div>\n'
            f'    <small data-field="state">{escape(r["state_text"])}</small>\n'
            f'    <small class="error-text" data-field="error">{escape(r["last_error"])}</small>\n'
            f'    <small class="error-text" data-field="action-error">{escape(r.get("action_error", ""))}</small>\n'
            f'  </td>\n'
            f'  <td data-field="access" data-label="Access">{access}</td>\n'
            f'  <td data-field="window" data-label="Window">{escape(r["start_text"])}<br>'
            f'→ {escape(r["end_text"])}</td>\n'
            f'</tr>\n'
        )
    return Markup("".join(parts))
