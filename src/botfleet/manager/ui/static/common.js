// Form guards shared by every page: a JSON field that does not parse to an object (or, marked
// data-json="value", to any JSON value) stops its form before anything is sent (the server
// checks again), and dangerous actions ask first. A select marked data-autosubmit submits its
// form when changed (its "Choose" button is for pages without JavaScript).
"use strict";
(function () {
  function checkJson(field) {
    const out = document.querySelector('[data-error-for="' + field.id + '"]');
    const anyValue = field.dataset.json === "value";
    let message = "";
    try {
      const empty = field.value.trim() === "";
      const value = JSON.parse(empty ? "{}" : field.value);
      if (anyValue) {
        // any JSON value (empty: not given)
      } else if (value === null || typeof value !== "object" || Array.isArray(value)) {
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

  document.addEventListener("change", function (event) {
    const field = event.target;
    if (field.matches && field.matches("select[data-autosubmit]") && field.form) {
      field.form.submit();
    }
  });

  for (const button of document.querySelectorAll("[data-autosubmit-button]")) {
    button.hidden = true;
  }

  document.addEventListener("input", function (event) {
    const field = event.target;
    if (field.matches && field.matches("textarea[data-json].invalid")) checkJson(field);
  });
})();
