/*
 * cuecast loader for a plain <script> tag (no bundler):
 *
 *   <script src="/cuecast/loader.js" data-endpoint="https://relay.example.com/v1/batch"
 *           data-write-key="pk_live_…" data-options='{"debug": true}' async></script>
 *
 * It defines `window.cuecast` at once: calls made before the WebAssembly
 * module has loaded are queued in memory and in localStorage (so none is lost
 * if the page closes while loading; the next page replays them), then the
 * package's index.js (next to this file) is imported and replays them in
 * order. `cuecast.ready` resolves to the real client. No wasm, no modules
 * here: this file stays tiny and runs in any browser that runs scripts.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  // Options: window.cuecastOptions (set by an inline script before this
  // one), then data-options (JSON), data-endpoint and data-write-key.
  var options = Object.assign({}, window.cuecastOptions);
  try {
    Object.assign(options, JSON.parse(script.getAttribute("data-options") || "{}"));
  } catch (e) {
    console.warn("[cuecast] data-options is not JSON:", e && e.message);
  }
  if (script.getAttribute("data-endpoint")) options.endpoint = script.getAttribute("data-endpoint");
  if (script.getAttribute("data-write-key")) options.writeKey = script.getAttribute("data-write-key");
  var KEY = "cuecast:v1:early";
  var scope = options.writeKey + " " + options.endpoint;
  var queue = [];
  var methods = ["track", "shoutoutClicked", "surveySubmitted", "onboardingTaskCompleted",
    "walkthruGoalReached", "identify", "reset", "optOut", "optIn"];
  var stub = (window.cuecast = {});
  // crypto.randomUUID needs a secure context; this works on plain http too.
  function uuid() {
    var b = crypto.getRandomValues(new Uint8Array(16)), h = [];
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    for (var i = 0; i < 16; i++) h.push((b[i] + 256).toString(16).slice(1));
    h = h.join("");
    return [h.slice(0, 8), h.slice(8, 12), h.slice(12, 16), h.slice(16, 20), h.slice(20)].join("-");
  }
  methods.forEach(function (name) {
    stub[name] = function () {
      var call = { m: name, a: Array.prototype.slice.call(arguments), t: Date.now(), id: uuid(), s: scope };
      queue.push(call);
      try {
        var stored = JSON.parse(localStorage.getItem(KEY) || "[]");
        stored.push(call);
        localStorage.setItem(KEY, JSON.stringify(stored));
      } catch (e) {
        // Blocked or full: kept in memory for this page.
      }
    };
  });
  stub.ready = import(new URL("index.js", script.src).href).then(function (mod) {
    return mod.load(options, queue).ready;
  }).then(function (client) {
    methods.concat("flush").forEach(function (name) {
      stub[name] = client[name].bind(client);
    });
    return client;
  });
  stub.flush = function () {
    return stub.ready.then(function (client) { return client.flush(); });
  };
})();
