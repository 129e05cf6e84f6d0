// KAITO Portal's only script: it tells the polling fallback whether the live WebSocket is up.
// Pages work without it; htmx and its ws extension come from django-htmx's bundled copy.
(function () {
  "use strict";
  window.wsDown = function () {
    return document.body.dataset.ws !== "open";
  };
  document.addEventListener("htmx:wsOpen", function () { document.body.dataset.ws = "open"; });
  document.addEventListener("htmx:wsClose", function () { document.body.dataset.ws = "closed"; });
})();
