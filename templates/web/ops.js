// /ops auto-refresh: swap in the live panel every few seconds. Without JavaScript a
// <noscript> meta refresh reloads the page instead.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.fetch) return;
  var seconds = parseInt(live.getAttribute("data-refresh"), 10) || 15;
  var state = document.getElementById("refresh-state");

  function busy() {
    // Never swap the panel under a keyboard user's focus.
    return live.contains(document.activeElement) && document.activeElement !== document.body;
  }

  function refresh() {
    if (document.visibilityState !== "visible" || busy()) return;
    fetch(live.getAttribute("data-panel"), { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        if (state) { state.textContent = ""; state.className = "refresh-state"; }
      })
      .catch(function (error) {
        if (state) {
          state.textContent = "· refresh failed (" + error.message + "), retrying";
          state.className = "refresh-state failed";
        }
      });
  }

  window.setInterval(refresh, seconds * 1000);
  document.addEventListener("visibilitychange", refresh);
})();
