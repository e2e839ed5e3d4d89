// The bot's logs tail, then its output as it is written: a streamed fetch whose text is
// appended as text nodes (never parsed as markup). It ends when the bot's workload ends.
"use strict";
(function () {
  const pre = document.getElementById("logs");
  const state = document.getElementById("logs-state");
  if (!pre || !pre.dataset.src) return;
  const MAX_CHARS = 200000;

  function say(text) { if (state) state.textContent = text; }

  function append(text) {
    pre.appendChild(document.createTextNode(text));
    if (pre.textContent.length > MAX_CHARS) {
      pre.textContent = pre.textContent.slice(-MAX_CHARS);
    }
    pre.scrollTop = pre.scrollHeight;
  }

  async function follow() {
    say("(following)");
    try {
      const response = await fetch(pre.dataset.src, { credentials: "same-origin" });
      if (!response.ok || !response.body) { say("(unavailable: HTTP " + response.status + ")"); return; }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        append(decoder.decode(value, { stream: true }));
      }
      say("(ended)");
    } catch (err) {
      say("(stream closed)");
    }
  }
  follow();
})();
