// Codex Pooler console: small progressive enhancements. Every page works
// without this file; it only adds live countdowns, automatic polling of a
// device-code link, and reading an auth.json file into the import form.
(function () {
  "use strict";

  function formatDuration(seconds) {
    if (seconds <= 0) return "now";
    var d = Math.floor(seconds / 86400);
    var h = Math.floor((seconds % 86400) / 3600);
    var m = Math.floor((seconds % 3600) / 60);
    var s = seconds % 60;
    if (d > 0) return d + "d " + h + "h";
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + s + "s";
    return s + "s";
  }

  // <span data-countdown-seconds="N">: counts down from N seconds (measured
  // by the server against its clock, so a skewed client clock does not
  // matter). One timer serves every countdown, including swapped-in ones.
  function tickCountdowns() {
    var now = Date.now();
    document.querySelectorAll("[data-countdown-seconds]").forEach(function (el) {
      if (!el.dataset.countdownSeen) el.dataset.countdownSeen = String(now);
      var elapsed = Math.floor((now - parseInt(el.dataset.countdownSeen, 10)) / 1000);
      var left = parseInt(el.dataset.countdownSeconds, 10) - elapsed;
      el.textContent = formatDuration(left);
    });
  }

  // <form data-auto-submit-after="N">: submits itself after N seconds while
  // the page is visible (the device-code link checks for the entered code).
  function startAutoSubmit() {
    document.querySelectorAll("form[data-auto-submit-after]").forEach(function (form) {
      var seconds = Math.max(2, parseInt(form.dataset.autoSubmitAfter, 10) || 5);
      setTimeout(function wait() {
        if (document.visibilityState === "hidden") { setTimeout(wait, 1000); return; }
        form.submit();
      }, seconds * 1000);
    });
  }

  // <input type="file" data-file-into="ID">: reads the chosen file (64 KB at
  // most) into the textarea ID, so an auth.json can be uploaded instead of pasted.
  function startFileInputs() {
    document.querySelectorAll("input[type=file][data-file-into]").forEach(function (input) {
      input.hidden = false;
      input.addEventListener("change", function () {
        var file = input.files && input.files[0];
        var target = document.getElementById(input.dataset.fileInto);
        if (!file || !target) return;
        if (file.size > 64 * 1024) {
          input.setCustomValidity("auth.json files are at most 64 KB");
          input.reportValidity();
          return;
        }
        input.setCustomValidity("");
        file.text().then(function (text) { target.value = text; });
      });
    });
  }

  function init() {
    tickCountdowns();
    setInterval(tickCountdowns, 1000);
    startAutoSubmit();
    startFileInputs();
  }
  document.addEventListener("htmx:afterSwap", tickCountdowns);
  // A refresh answered by the sign-in page (the session ended) reloads the
  // page instead of swapping the table away.
  document.addEventListener("htmx:beforeSwap", function (e) {
    var xhr = e.detail && e.detail.xhr;
    if (xhr && xhr.responseURL && new URL(xhr.responseURL).pathname.indexOf("/login") === 0) {
      e.detail.shouldSwap = false;
      window.location.reload();
    }
  });
  // A live region ([data-live-refresh]) is not refreshed while the page is
  // hidden or while the operator has one of its forms open or focused.
  document.addEventListener("htmx:beforeRequest", function (e) {
    var region = e.detail && e.detail.elt;
    if (!region || !region.hasAttribute || !region.hasAttribute("data-live-refresh")) return;
    var busy = region.querySelector("details[open]") || region.contains(document.activeElement);
    if (document.visibilityState === "hidden" || busy) e.preventDefault();
  });
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
