// The manage page follows its nodes without reloading: it polls /manage/live (which reads only
// the database) and redraws each row's status, progress bar, access and window.
"use strict";

(function () {
  var POLL_MS = 1500;
  var MAX_BACKOFF_MS = 30000;
  var indicator = document.getElementById("live-status");
  var delay = POLL_MS;

  function row(name) {
    return document.querySelector('tr[data-node="' + CSS.escape(name) + '"]');
  }

  function text(element, value) {
    if (element && element.textContent !== value) element.textContent = value;
  }

  function drawProgress(cell, r) {
    var fill = cell.querySelector(".fill");
    fill.style.width = Math.max(0, Math.min(100, r.progress)) + "%";
    fill.classList.toggle("lost", r.action_state === "lost");
    cell.title = (r.states || []).join(" → ");
    // One segment per state of the process, drawn by the stylesheet.
    cell.style.setProperty("--steps", String(r.state_count || 1));
  }

  function drawAccess(cell, r) {
    cell.textContent = "";
    if (r.node_ip) {
      var code = document.createElement("code");
      code.textContent = (r.default_user || "root") + "@" + r.node_ip;
      cell.appendChild(code);
    }
    if (r.password) {
      var details = document.createElement("details");
      var summary = document.createElement("summary");
      summary.textContent = "password";
      var secret = document.createElement("code");
      secret.className = "secret";
      secret.textContent = r.password;
      details.appendChild(summary);
      details.appendChild(secret);
      cell.appendChild(document.createTextNode(" "));
      cell.appendChild(details);
    }
  }

  function draw(data) {
    var seen = {};
    data.reservations.forEach(function (r) {
      seen[r.node_name] = true;
      var tr = row(r.node_name);
      if (!tr) return;
      var status = tr.querySelector('[data-field="status"]');
      text(status, r.status_text);
      status.className = "status status-" + r.status;
      tr.setAttribute("data-status", r.status);
      tr.setAttribute("data-actions", (r.actions || []).join(" "));
      tr.setAttribute("data-action-state", r.action_state || "");
      drawProgress(tr.querySelector('[data-field="progress"]'), r);
      text(tr.querySelector('[data-field="state"]'), r.state_text);
      text(tr.querySelector('[data-field="error"]'), r.last_error || "");
      text(tr.querySelector('[data-field="action-error"]'), r.action_error || "");
      // What an administrator did (moved, ended) and a node gone into maintenance show at once.
      text(tr.querySelector('[data-field="notice"]'), r.notice || "");
      var flag = tr.querySelector('[data-field="maintenance"]');
      if (flag) flag.hidden = !r.node_maintenance;
      text(tr.querySelector('[data-field="maintenance-reason"]'), r.node_maintenance
        ? r.node_maintenance + "; it is not deployed until an administrator releases it or moves your reservation"
        : "");
      var when = tr.querySelector('[data-field="window"]');
      var span = r.start_text + "|" + r.end_text;
      if (when.getAttribute("data-drawn") !== span) {
        when.textContent = r.start_text;
        when.appendChild(document.createElement("br"));
        when.appendChild(document.createTextNode("→ " + r.end_text));
        when.setAttribute("data-drawn", span);
      }
      var access = tr.querySelector('[data-field="access"]');
      var key = r.node_ip + "|" + r.default_user + "|" + r.password;
      if (access.getAttribute("data-drawn") !== key) {
        drawAccess(access, r);
        access.setAttribute("data-drawn", key);
      }
    });
    document.querySelectorAll("tr[data-node]").forEach(function (tr) {
      if (seen[tr.getAttribute("data-node")] || tr.classList.contains("gone")) return;
      tr.classList.add("gone");
      tr.setAttribute("data-status", "released");
      text(tr.querySelector('[data-field="status"]'), "Released");
      tr.setAttribute("data-actions", "");
      text(tr.querySelector('[data-field="state"]'), "the reservation ended");
      tr.querySelector(".progress .fill").style.width = "100%";
      var box = tr.querySelector('input[type=checkbox]');
      if (box) { box.checked = false; box.disabled = true; }
    });
  }

  // The same page of rows as the page shows: the limit and cursor its form carries (also
  // when the page was drawn again after a refused action, at another address).
  function pageQuery() {
    var params = new URLSearchParams();
    ["limit", "cursor"].forEach(function (name) {
      var input = document.querySelector('#manage-form input[name="' + name + '"]');
      if (input && input.value) params.set(name, input.value);
    });
    var query = params.toString();
    return query ? "?" + query : "";
  }

  function poll() {
    fetch("/manage/live" + pageQuery(), { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (response.redirected || response.status === 401 || response.status === 303) {
          throw new Error("signed out");
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        draw(data);
        offerActions();
        delay = POLL_MS;
        if (indicator) {
          indicator.classList.remove("stale");
          text(indicator, "live · " + data.now_text);
        }
      })
      .catch(function (error) {
        delay = Math.min(delay * 2, MAX_BACKOFF_MS);
        if (indicator) {
          indicator.classList.add("stale");
          text(indicator, "not updating (" + error.message + ")");
        }
      })
      .finally(function () { window.setTimeout(poll, delay); });
  }

  // Only the actions every ticked node allows are offered (the server says which, per row).
  var form = document.getElementById("manage-form");
  var WHY = {
    reboot: "Reboot needs a started reservation that was deployed and is not busy",
    deploy: "Deploy needs a started, configured reservation that is not busy"
  };
  function offerActions() {
    if (!form) return;
    var ticked = form.querySelectorAll("tr[data-node] input[name=nodes]:checked");
    form.querySelectorAll("button[name=action]").forEach(function (button) {
      var action = button.value;
      var blocked = Array.prototype.filter.call(ticked, function (box) {
        var allowed = (box.closest("tr").getAttribute("data-actions") || "").split(" ");
        return allowed.indexOf(action) === -1;
      }).map(function (box) { return box.value; });
      button.disabled = blocked.length > 0;
      button.title = blocked.length ? (WHY[action] || "Not possible") + ": " + blocked.join(", ") : "";
    });
  }
  if (form) {
    // After edgebed.js has ticked the rows of a "select all" box (it listens on the document).
    form.addEventListener("change", function () { window.setTimeout(offerActions, 0); });
    offerActions();
  }

  if (document.querySelector("tr[data-node]")) poll();
})();
