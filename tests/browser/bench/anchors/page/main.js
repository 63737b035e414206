// The benchmark page: each SDK is imported (bundled by Vite as an app would bundle it),
// configured to batch and pointed at the local receiver, and wrapped in the same
// `{ track(i), flush() }` shape. `window.start(name, receiverUrl)` loads one per page.
// Queues: cuecast writes every event through to IndexedDB (its only mode); the anchors keep
// theirs in memory here (Segment and Snowplow write theirs to localStorage by default, which
// made Snowplow slow down with the square of the backlog), so the comparison is conservative
// for cuecast. Every queue is large enough for the whole run, and nothing is sampled or
// rate-limited away.
const props = (i) => ({ format: "csv", rows: i, filters: { region: "emea" }, bench: "cc-bench-marker" });

const sdks = {
  async cuecast(url) {
    const { init } = await import("cuecast");
    const cc = await init({ endpoint: `${url}/cuecast/v1/batch`, writeKey: "pk_bench", autoCapture: false, maxQueueEvents: 100_000, maxQueueBytes: 64 << 20 });
    return { track: (i) => cc.track("report.exported", props(i)), flush: () => cc.flush() };
  },
  async segment(url) {
    const { AnalyticsBrowser } = await import("@segment/analytics-next");
    const host = new URL(url).host;
    const segmentio = {
      apiKey: "wk_bench", apiHost: `${host}/segment`, protocol: "http",
      deliveryStrategy: { strategy: "batching", config: { size: 20, timeout: 5000 } },
    };
    // Settings given here instead of fetched from Segment's CDN.
    const [analytics] = await AnalyticsBrowser.load(
      { writeKey: "wk_bench", cdnSettings: { integrations: { "Segment.io": segmentio } } },
      { integrations: { "Segment.io": segmentio }, disableClientPersistence: true },
    );
    return { track: (i) => { analytics.track("report.exported", props(i)); }, flush: async () => {} };
  },
  async posthog(url) {
    const { default: posthog } = await import("posthog-js");
    await new Promise((loaded) => posthog.init("phc_bench", {
      api_host: `${url}/posthog`, request_batching: true, disable_compression: true,
      autocapture: false, capture_pageview: false, capture_pageleave: false, disable_session_recording: true,
      disable_surveys: true, advanced_disable_flags: true, capture_performance: false, capture_exceptions: false,
      // Its client-side limit (10 events/s, bursts of 100) would drop most of the 10,000.
      rate_limiting: { events_per_second: 1e6, events_burst_limit: 1e6 },
      // Headless Chromium says so in its user agent; PostHog drops bots unless told otherwise.
      opt_out_useragent_filter: true,
      loaded,
    }));
    return { track: (i) => { posthog.capture("report.exported", props(i)); }, flush: async () => {} };
  },
  async snowplow(url) {
    const { newTracker, trackSelfDescribingEvent, flushBuffer } = await import("@snowplow/browser-tracker");
    newTracker("sp", url, {
      appId: "bench", eventMethod: "post", bufferSize: 20, postPath: "/snowplow/tp2", encodeBase64: false,
      contexts: { webPage: true }, useLocalStorage: false, maxLocalStorageQueueSize: 100_000,
    });
    return {
      track: (i) => {
        trackSelfDescribingEvent({ event: { schema: "iglu:com.example/report_exported/jsonschema/1-0-0", data: props(i) } });
      },
      flush: async () => flushBuffer(),
    };
  },
};

window.start = async (name, url) => {
  window.sdk = await sdks[name](url);
  return name;
};
