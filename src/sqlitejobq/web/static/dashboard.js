// sqlitejobq dashboard: live updates and confirmations. The pages work without it.
(function () {
  "use strict";
  var every = Number(document.body.dataset.refresh || "0") * 1000;

  // An action asks before it posts; the server asks too when this script does not run.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.dataset.confirm;
    if (!question) return;
    if (!window.confirm(question)) { event.preventDefault(); return; }
    var confirmed = form.querySelector("input[name=confirm]");
    if (confirmed) confirmed.value = "yes";
  });

  // Every [data-live] element is replaced by its copy in a fresh fetch of the page.
  function refresh() {
    if (document.hidden) return schedule();
    var live = document.querySelectorAll("[data-live]");
    if (!live.length) return;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Live": "1" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (text) {
        if (text === null) return;
        var fresh = new DOMParser().parseFromString(text, "text/html");
        live.forEach(function (element) {
          if (element.querySelector("details[open]")) return;
          var copy = fresh.getElementById(element.id);
          if (copy) element.replaceWith(copy);
        });
        document.body.dataset.refreshed = String(Date.now());
      })
      .catch(function () {})
      .then(schedule);
  }
  function schedule() { if (every > 0) window.setTimeout(refresh, every); }
  schedule();
})();
