// Form guards shared by every page: a JSON field that does not parse to an object stops its
// form before anything is sent (the server checks again), and dangerous actions ask first.
"use strict";
(function () {
  function checkJson(field) {
    const out = document.querySelector('[data-error-for="' + field.id + '"]');
    let message = "";
    try {
      const value = JSON.parse(field.value.trim() === "" ? "{}" : field.value);
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        message = "must be a JSON object, like {\"key\": \"value\"}";
      }
    } catch (err) {
      message = "not valid JSON: " + err.message;
    }
    field.classList.toggle("invalid", message !== "");
    if (out) out.textContent = message;
    return message === "";
  }

  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (form.matches("[data-json-form]")) {
      let ok = true;
      for (const field of form.querySelectorAll("textarea[data-json]")) {
        ok = checkJson(field) && ok;
      }
      if (!ok) { event.preventDefault(); return; }
    }
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  document.addEventListener("input", function (event) {
    const field = event.target;
    if (field.matches && field.matches("textarea[data-json].invalid")) checkJson(field);
  });
})();
