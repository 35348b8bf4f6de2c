// Small helpers for every page. No framework, no build step: the pages work without it, this
// only adds the browser's time zone, "select all" boxes and confirmations.
"use strict";

(function () {
  // The server draws dates in the zone named by the "tz" cookie; tell it ours for the next page.
  // Forms keep the zone the page was drawn in (their hidden "tz" field), so a date typed into a
  // page drawn in UTC is still read as UTC.
  try {
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && document.cookie.indexOf("tz=" + encodeURIComponent(zone)) === -1) {
      document.cookie = "tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; SameSite=Lax";
    }
  } catch (e) {
    // An old browser without Intl: dates stay in UTC, which the footer says.
  }

  document.addEventListener("change", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("input[data-select-all]")) return;
    var scope = box.closest("table") || box.form || document;
    var name = box.getAttribute("data-select-all");
    scope.querySelectorAll('input[type=checkbox][name="' + name + '"]').forEach(function (other) {
      if (!other.disabled) other.checked = box.checked;
    });
  });

  // A destructive button or form asks first.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var button = event.submitter;
    var question = (button && button.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-back]");
    if (link && window.history.length > 1) {
      event.preventDefault();
      window.history.back();
    }
  });
})();
