// Live pages: listen to the event stream and, when something happened, fetch this page again
// and swap in its [data-live] regions. The server renders (and escapes) everything; this script
// never builds markup from data. EventSource reconnects by itself and sends Last-Event-ID, so a
// dropped connection resumes where it stopped; after a reconnect the page is refreshed anyway.
"use strict";
(function () {
  const indicator = document.querySelector("[data-live-indicator]");
  const onlyBot = document.body.dataset.liveBot || "";
  let timer = null;
  let busy = false;
  let again = false;

  function show(state, text) {
    if (!indicator) return;
    indicator.classList.remove("on", "off");
    indicator.classList.add(state);
    indicator.textContent = text;
  }

  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(window.location.href, {
        credentials: "same-origin", headers: { "X-Botfleet-Live": "1" },
      });
      if (response.redirected && new URL(response.url).pathname === "/ui/sign-in") {
        window.location.assign("/ui/sign-in");
        return;
      }
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const fresh of doc.querySelectorAll("[data-live]")) {
        const current = document.querySelector(
          '[data-live="' + fresh.dataset.live + '"]');
        if (current && !current.isEqualNode(fresh)) {
          current.replaceWith(document.importNode(fresh, true));
        }
      }
      document.dispatchEvent(new CustomEvent("botfleet:refreshed"));
    } catch (err) {
      show("off", "update failed, retrying");
    } finally {
      busy = false;
      if (again) { again = false; schedule(); }
    }
  }

  // At most one refresh a second: each is a request against the key's rate limit.
  let last = 0;
  function schedule() {
    if (timer !== null) return;
    const wait = Math.max(250, 1000 - (Date.now() - last));
    timer = window.setTimeout(function () { timer = null; last = Date.now(); refresh(); }, wait);
  }

  function onEvent(message) {
    if (onlyBot) {
      try {
        if (JSON.parse(message.data).bot_id !== onlyBot) return;
      } catch (err) { return; }
    }
    schedule();
  }

  if (!window.EventSource) { show("off", "live updates unavailable"); return; }
  // From the newest event when the page was read: nothing in between is missed.
  const since = document.body.dataset.eventsSince;
  let source = null;
  let dropped = false;

  function connect() {
    source = new EventSource("/ui/events" + (since ? "?since=" + since : ""));
    source.addEventListener("open", function () {
      show("on", "live");
      if (dropped) { dropped = false; schedule(); }  // catch up on what the gap may hide
    });
    source.addEventListener("error", function () {
      dropped = true;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (signed out, or too many open streams for this key): try again later.
        show("off", "live updates paused, retrying");
        window.setTimeout(connect, 15000);
      } else {
        show("off", "reconnecting…");
      }
    });
    for (const kind of ["transition", "command", "report"]) {
      source.addEventListener(kind, onEvent);
    }
  }
  connect();
  window.botfleetLive = { refresh: schedule };
})();
