// The fleet page's bulk actions: the ticked bots stay ticked when a live update redraws the
// table, "select all" ticks every bot on this page, and each action asks first, naming how many
// bots it acts on. The operation's page asks for itself again while the operation runs (a bulk
// delete, say, sends no event to wake live.js). Markup is never built from data here.
"use strict";
(function () {
  const form = document.getElementById("bulk-form");
  if (form) {
    const chosen = new Set();
    const count = document.getElementById("bulk-count");
    const hint = count ? count.textContent : "";
    const buttons = form.querySelectorAll('button[name="action"]');
    const boxes = function () { return Array.from(document.querySelectorAll("input.pick-bot")); };

    // Make the boxes say what `chosen` holds (a redraw brings them back unticked), and forget
    // the bots no longer on the page: only the boxes present are sent.
    function sync() {
      const all = boxes();
      const present = new Set(all.map(function (box) { return box.value; }));
      for (const id of Array.from(chosen)) { if (!present.has(id)) chosen.delete(id); }
      for (const box of all) box.checked = chosen.has(box.value);
      const pickAll = document.getElementById("pick-all");
      if (pickAll) {
        pickAll.checked = all.length > 0 && chosen.size === all.length;
        pickAll.indeterminate = chosen.size > 0 && chosen.size < all.length;
      }
      if (count) {
        count.textContent = chosen.size ? chosen.size + " selected" : hint;
      }
      for (const button of buttons) button.disabled = chosen.size === 0;
    }

    document.addEventListener("change", function (event) {
      const field = event.target;
      if (!field.matches) return;
      if (field.matches("input.pick-bot")) {
        if (field.checked) chosen.add(field.value); else chosen.delete(field.value);
        sync();
      } else if (field.id === "pick-all") {
        for (const box of boxes()) {
          if (field.checked) chosen.add(box.value); else chosen.delete(box.value);
        }
        sync();
      }
    });
    document.addEventListener("botfleet:refreshed", sync);

    const asks = {
      stop: "Stop", relaunch: "Relaunch", delete: "Delete (with their history and logs)",
      command: "Send the command to",
    };
    form.addEventListener("submit", function (event) {
      const action = event.submitter ? event.submitter.value : "";
      const n = chosen.size;
      const what = (asks[action] || action) + " " + n + (n === 1 ? " bot?" : " bots?");
      if (!window.confirm(what)) event.preventDefault();
    });
    sync();
  }

  function operation() { return document.querySelector("[data-operation-status]"); }
  if (operation()) {
    const timer = window.setInterval(function () {
      const shown = operation();
      if (!shown || shown.dataset.operationStatus !== "running") {
        window.clearInterval(timer);
        return;
      }
      if (window.botfleetLive) window.botfleetLive.refresh();
    }, 1000);
  }
})();
