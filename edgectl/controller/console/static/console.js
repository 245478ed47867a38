// The console's only script: refresh tables marked data-refresh (the gateways'
// convergence) every few seconds, without a reload.  Pages work without it.
"use strict";
(function () {
  const PERIOD_MS = 3000;
  function refresh(table) {
    fetch(table.dataset.refresh, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (response.redirected || !response.ok) {
          // Signed out or expired: show the sign-in page instead of stale data.
          if (response.redirected) { window.location.reload(); }
          return null;
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        const holder = document.createElement("div");
        holder.innerHTML = html;
        const fresh = holder.querySelector("table[data-refresh]");
        if (fresh) { table.replaceWith(fresh); }
      })
      .catch(function () { /* offline for a moment: try again next period */ });
  }
  window.addEventListener("DOMContentLoaded", function () {
    setInterval(function () {
      document.querySelectorAll("table[data-refresh]").forEach(refresh);
    }, PERIOD_MS);
  });
})();
