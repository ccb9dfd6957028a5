// The inbox's only script: live rows, live event summary, actions without a reload.
// Everything it inserts is either text (textContent) or HTML the server rendered and escaped.
"use strict";
(function () {
  var csrf = document.body.getAttribute("data-csrf") || "";
  var notice = document.getElementById("notice");

  function say(text) {
    if (!notice) { return; }
    notice.textContent = text;
    notice.classList.add("shown");
    window.setTimeout(function () { notice.classList.remove("shown"); }, 6000);
  }

  function fetchHtml(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } }).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    });
  }

  function parsed(html) {
    var template = document.createElement("template"); // inert: nothing in it runs
    template.innerHTML = html;
    return template.content;
  }

  // The list: the first page polls its table body.
  var table = document.querySelector("table[data-live]");
  if (table) {
    var liveState = document.getElementById("live-state");
    var lastHtml = null;
    var etag = null;
    // The server answers 304 while the store says nothing changed (its change marker), reading no list.
    var fetchRows = function () {
      var headers = { Accept: "text/html" };
      if (etag) { headers["If-None-Match"] = etag; }
      return fetch(table.getAttribute("data-live"), { credentials: "same-origin", headers: headers }).then(function (r) {
        if (r.status === 304) { return null; }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        etag = r.headers.get("ETag");
        return r.text();
      });
    };
    var refreshRows = function () {
      if (document.hidden) { return; }
      fetchRows().then(function (html) {
        if (liveState) { liveState.textContent = "Live: updated " + new Date().toLocaleTimeString() + "."; }
        if (html === null || html === lastHtml) { return; }
        lastHtml = html;
        var rows = parsed(html).querySelector("tbody");
        var current = table.querySelector("tbody");
        if (!rows || !current) { return; }
        // Keep the keyboard where it was: the focused link, found again by its address.
        var focused = document.activeElement;
        var href = focused && current.contains(focused) ? focused.getAttribute("href") : null;
        current.replaceWith(rows);
        if (href) {
          var again = rows.querySelector('a[href="' + CSS.escape(href) + '"]');
          if (again) { again.focus(); }
        }
      }).catch(function () {
        if (liveState) { liveState.textContent = "Live updates paused: the server did not answer."; }
      });
    };
    window.setInterval(refreshRows, 3000);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) { refreshRows(); } });
  }

  // An event's page: its summary refreshes after an action, and while the event is unfinished.
  var summary = document.getElementById("summary");
  function refreshSummary() {
    if (!summary) { return Promise.resolve(); }
    return fetchHtml(summary.getAttribute("data-refresh")).then(function (html) {
      summary.replaceChildren(parsed(html));
    });
  }
  if (summary) {
    window.setInterval(function () {
      var status = document.getElementById("status");
      var state = status ? status.textContent : "";
      if (!document.hidden && (state === "pending" || state === "processing")) { refreshSummary(); }
    }, 2000);
  }

  // Actions: POST the form with its token, show the answer, refresh what changed.
  document.querySelectorAll("form[data-async]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = form.querySelector("button");
      if (button) { button.disabled = true; }
      fetch(form.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRF-Token": csrf },
        body: new FormData(form)
      }).then(function (r) {
        if (!r.ok) { throw new Error("the server answered " + r.status); }
        return r.json();
      }).then(function (answer) {
        say(answer.message || answer.state);
        return refreshSummary();
      }).catch(function (error) {
        say("Not done: " + error.message);
      }).finally(function () {
        if (button) { button.disabled = false; }
      });
    });
  });
})();
