// The reserve page: a click on a free stretch of a node's timeline ticks the node and fills the
// form's start (the clicked hour, or now) and duration (shortened to end before the node's next
// reservation), and shows the window it would take. The page works without it.
"use strict";

(function () {
  var form = document.getElementById("reserve-form");
  if (!form) return;
  var startInput = form.querySelector("input[name=start]");
  var durationInput = form.querySelector("input[name=duration_hours]");
  var zone = form.querySelector("input[name=tz]").value || "UTC";
  var hint = document.getElementById("pick-hint");
  var HOUR = 3600;

  // "2025-01-31 14:00" (24-hour, as every page writes times) for an epoch in the zone the page was drawn in (the form reads it so).
  var parts = new Intl.DateTimeFormat("en-CA", {
    timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", hourCycle: "h23"
  });
  function localValue(epoch) {
    var got = {};
    parts.formatToParts(new Date(epoch * 1000)).forEach(function (p) { got[p.type] = p.value; });
    return got.year + "-" + got.month + "-" + got.day + " " + got.hour + ":" + got.minute;
  }

  function windowsOf(line) {
    return Array.prototype.map.call(line.querySelectorAll(".busy"), function (bar) {
      return { start: +bar.getAttribute("data-start"), end: +bar.getAttribute("data-end") };
    });
  }

  function showPick(line, table, start, end) {
    document.querySelectorAll(".timeline .pick").forEach(function (old) { old.remove(); });
    var viewStart = +table.getAttribute("data-start");
    var span = +table.getAttribute("data-end") - viewStart;
    var pick = document.createElement("span");
    pick.className = "pick";
    pick.style.left = Math.max(0, (start - viewStart) * 100 / span) + "%";
    pick.style.width = Math.max(0, (Math.min(end, viewStart + span) - Math.max(start, viewStart)) * 100 / span) + "%";
    line.appendChild(pick);
  }

  document.addEventListener("click", function (event) {
    var line = event.target.closest && event.target.closest(".timeline-cell .timeline");
    if (!line || event.target.closest(".busy")) return;
    var row = line.closest("tr");
    var table = line.closest("table");
    var box = row.querySelector("input[name=nodes]");
    if (!box || box.disabled) return;
    var viewStart = +table.getAttribute("data-start");
    var span = +table.getAttribute("data-end") - viewStart;
    var now = +table.getAttribute("data-now") + Math.floor((Date.now() - loadedAt) / 1000);
    var rect = line.getBoundingClientRect();
    var at = viewStart + (event.clientX - rect.left) / rect.width * span;
    // The clicked hour, or now when that hour has begun.
    var start = Math.floor(at / HOUR) * HOUR;
    if (start < now) start = now;
    var windows = windowsOf(line);
    if (windows.some(function (w) { return w.start <= start && start < w.end; })) return;
    var next = Infinity;
    windows.forEach(function (w) { if (w.start > start && w.start < next) next = w.start; });
    var wanted = parseFloat(durationInput.value) || 2;
    var free = (next - start) / HOUR;
    // Quarter hours, as the duration field steps.
    var hours = Math.min(wanted, Math.floor(free * 4) / 4);
    if (hours < 0.25) return;
    startInput.value = localValue(start);
    durationInput.value = String(hours);
    box.checked = true;
    showPick(line, table, start, start + hours * HOUR);
    if (hint) {
      hint.textContent = "Picked " + box.value + " from " + localValue(start) +
        " for " + hours + " h" + (free < wanted ? " (until its next reservation)" : "") +
        ". Times in " + zone + ".";
    }
  });

  var loadedAt = Date.now();
})();
