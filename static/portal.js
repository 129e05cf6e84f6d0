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
// Chat: keep the newest text in view while an answer streams, unless the reader has scrolled up.
(function () {
  "use strict";
  var pinned = true;
  document.addEventListener("htmx:wsBeforeMessage", function () {
    var log = document.getElementById("transcript");
    pinned = !log || log.scrollHeight - log.scrollTop - log.clientHeight < 48;
  });
  document.addEventListener("htmx:wsAfterMessage", function () {
    var log = document.getElementById("transcript");
    if (log && pinned) { log.scrollTop = log.scrollHeight; }
  });
})();
