// cargo xtask bench: the SDK's size and main-thread cost, measured in one run,
// against the anchors (Segment's analytics-next, PostHog, Snowplow) in the same
// page and the same run. Prints a table and writes target/bench/sdk.json.
// `--quick` runs fewer iterations (a CI smoke of the benchmark itself, not a measurement).
import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";
import { startReceiver, startSite, launchChromium, openPage, payloadFiles } from "../harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../../..");
const quick = process.argv.includes("--quick");
const CALLS = quick ? 1000 : 10_000; // track() calls per SDK and page
const FLUSH_EVENTS = 1000;
const ROUNDS = quick ? 1 : 5;
// The side-by-side comparison: rounds of the four SDKs, in a rotating order.
const COMPARE_ROUNDS = quick ? 1 : 3;
// After the calls, wait for the receiver to have every event, giving up after this long without progress.
const STALL_MS = 20_000;

function sizes(files) {
  const out = { raw: 0, gzip: 0, brotli: 0 };
  for (const f of files) {
    const buf = fs.readFileSync(f);
    out.raw += buf.length;
    out.gzip += zlib.gzipSync(buf, { level: 9 }).length;
    out.brotli += zlib.brotliCompressSync(buf, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11 } }).length;
  }
  return out;
}

const pkg = path.join(here, "../node_modules/cuecast");
const size = {
  wasm: sizes([path.join(pkg, "cuecast_bg.wasm")]),
  js: sizes(payloadFiles(pkg).filter((f) => f.endsWith(".js"))),
};
size.total = Object.fromEntries(Object.keys(size.wasm).map((k) => [k, size.wasm[k] + size.js[k]]));
// The plain <script> loader: an optional entry that loads index.js, not part of the total.
size.loader = sizes([path.join(pkg, "loader.js")]);

// The anchors' shipped browser bundles, measured by the same code in this run
// (installed at pinned versions by `cargo xtask bench` in bench/anchors).
// Segment's standalone bundle loads more chunks on demand; PostHog's
// array.js is its full CDN bundle; Snowplow's is the minified UMD build.
const anchorsDir = path.join(here, "anchors/node_modules");
const anchorFiles = {
  "@segment/analytics-next": "dist/umd/standalone.js",
  "posthog-js": "dist/array.js",
  "@snowplow/browser-tracker": "dist/index.umd.min.js",
};
const anchors = {};
for (const [name, file] of Object.entries(anchorFiles)) {
  const dir = path.join(anchorsDir, name);
  if (!fs.existsSync(path.join(dir, file))) continue;
  const version = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")).version;
  anchors[`${name}@${version}`] = sizes([path.join(dir, file)]);
}

const quantile = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

// Cross-origin isolation gives performance.now() 5 µs resolution instead of 100 µs.
const site = await startSite({ headers: { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp", "cross-origin-resource-policy": "cross-origin" } });
const receiver = await startReceiver();
const browser = await launchChromium();

// cuecast alone (per-call track() figures come from the side-by-side runs below).
const flushRuns = [];
for (let round = 0; round < ROUNDS; round++) {
  const { page, context } = await openPage(browser, site, receiver, { autoCapture: false });
  // Main-thread time to track and flush FLUSH_EVENTS events (CDP TaskDuration).
  const cdp = await context.newCDPSession(page);
  await cdp.send("Performance.enable");
  const metric = async (name) => (await cdp.send("Performance.getMetrics")).metrics.find((m) => m.name === name).value;
  // Split the main-thread time: queueing the events (track), then sending them (flush).
  const t0 = await metric("TaskDuration");
  const trackMs = await page.evaluate((n) => {
    const start = performance.now();
    for (let i = 0; i < n; i++) cc.track("survey.submitted", { surveyId: "nps-q3", kind: "nps", score: i % 11, comment: "fine" });
    return performance.now() - start;
  }, FLUSH_EVENTS);
  const t1 = await metric("TaskDuration");
  const flushWall = await page.evaluate(async (n) => {
    const start = performance.now();
    const report = await cc.flush();
    if (report.sent !== n) throw new Error(`flush sent ${report.sent} of ${n}`);
    return performance.now() - start;
  }, FLUSH_EVENTS);
  const t2 = await metric("TaskDuration");
  // Reference in the same page: the same number of plain fetch() calls with
  // bodies of the same size, no SDK. What flush() cannot go below.
  const batches = receiver.posts().slice(-Math.ceil(FLUSH_EVENTS / 20));
  const sizes = batches.map((p) => p.raw.length);
  const r0 = await metric("TaskDuration");
  await page.evaluate(async ([endpoint, sizes]) => {
    for (const size of sizes) {
      const res = await fetch(endpoint, { method: "POST", body: "x".repeat(size), headers: { "content-type": "text/plain;charset=UTF-8" } });
      res.headers.get("retry-after");
    }
  }, [receiver.endpoint, sizes]);
  const r1 = await metric("TaskDuration");
  flushRuns.push({
    referenceBusyMs: (r1 - r0) * 1000,
    requests: sizes.length,
    busyMs: (t2 - t0) * 1000,
    trackBusyMs: (t1 - t0) * 1000,
    flushBusyMs: (t2 - t1) * 1000,
    trackMs,
    wallMs: trackMs + flushWall,
    heapMB: (await metric("JSHeapUsedSize")) / 1e6,
  });
  await context.close();
}

// ---- The four SDKs side by side --------------------------------------------
// One page (bench/anchors/page, bundled by Vite with each SDK as an app would
// bundle it), one SDK per fresh page, the same event, the same local receiver.
const MARKER = "cc-bench-marker"; // in every benchmark event's properties; counted in the bodies
const sink = await startSink();
const benchSite = await startSite({
  headers: { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp", "cross-origin-resource-policy": "cross-origin" },
  roots: { "/": path.join(here, "anchors/dist") },
});
const SDKS = ["cuecast", "@segment/analytics-next", "posthog-js", "@snowplow/browser-tracker"];
const pageName = { cuecast: "cuecast", "@segment/analytics-next": "segment", "posthog-js": "posthog", "@snowplow/browser-tracker": "snowplow" };
const runs = Object.fromEntries(SDKS.map((n) => [n, []]));
for (let round = 0; round < COMPARE_ROUNDS; round++) {
  for (let k = 0; k < SDKS.length; k++) {
    const name = SDKS[(k + round) % SDKS.length];
    runs[name].push(await compareOne(name));
  }
}
await benchSite.close();
await sink.close();
await browser.close();
await site.close();
await receiver.close();

/** A loopback receiver for all four SDKs: answers 200 with the CORS each needs, counts the benchmark events. */
async function startSink() {
  const state = { events: 0, requests: 0, bytes: 0 };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      let body = Buffer.concat(chunks);
      if (req.headers["content-encoding"] === "gzip") body = zlib.gunzipSync(body);
      if (req.method === "POST") {
        state.requests++;
        state.bytes += body.length;
        state.events += body.toString("utf8").split(MARKER).length - 1;
      }
      res.writeHead(req.method === "OPTIONS" ? 204 : 200, {
        "access-control-allow-origin": req.headers.origin ?? "*",
        "access-control-allow-credentials": "true", // Snowplow sends credentials
        "access-control-allow-headers": req.headers["access-control-request-headers"] ?? "content-type",
        "access-control-allow-methods": "GET, POST",
        "cross-origin-resource-policy": "cross-origin",
        "content-type": "application/json",
      });
      res.end(req.method === "OPTIONS" ? undefined : '{"status":1}');
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    state,
    reset() { Object.assign(state, { events: 0, requests: 0, bytes: 0 }); },
    close: () => new Promise((r) => server.close(r)),
  };
}

/** CALLS track() calls of one SDK in a fresh page, until the receiver has every event. */
async function compareOne(name) {
  const context = await browser.newContext();
  await context.addInitScript(() => {
    // cuecast keeps its queue in WebAssembly memory, outside the JS heap: count it too.
    const memories = (window.__wasmMemories = []);
    const keep = (r) => {
      for (const v of Object.values((r.instance ?? r).exports ?? {})) if (v instanceof WebAssembly.Memory) memories.push(v);
      return r;
    };
    for (const fn of ["instantiate", "instantiateStreaming"]) {
      const original = WebAssembly[fn];
      WebAssembly[fn] = (...args) => original.apply(WebAssembly, args).then(keep);
    }
    window.__longTasks = [];
    new PerformanceObserver((list) => window.__longTasks.push(...list.getEntries().map((e) => e.duration)))
      .observe({ type: "longtask" });
  });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${benchSite.url}/index.html`);
  await page.waitForFunction(() => window.start);
  if (!(await page.evaluate(() => crossOriginIsolated))) throw new Error("bench page is not cross-origin isolated");
  await page.evaluate(([n, url]) => window.start(n, url), [pageName[name], sink.url]);
  const cdp = await context.newCDPSession(page);
  await cdp.send("Performance.enable");
  const metric = async (m) => (await cdp.send("Performance.getMetrics")).metrics.find((x) => x.name === m).value;
  await cdp.send("HeapProfiler.collectGarbage");
  await new Promise((r) => setTimeout(r, 500)); // let start-up requests finish
  sink.reset();
  const longBefore = await page.evaluate(() => window.__longTasks.length);
  const heapBefore = (await cdp.send("Runtime.getHeapUsage")).usedSize;
  const t0 = await metric("TaskDuration");
  const started = Date.now();
  const { times, blocks } = await page.evaluate(async (calls) => {
    const out = new Float64Array(calls);
    const blocks = [];
    let blockStart = performance.now();
    for (let i = 0; i < calls; i++) {
      const t = performance.now();
      window.sdk.track(i);
      out[i] = performance.now() - t;
      if (i % 100 === 99) {
        blocks.push((performance.now() - blockStart) / 100);
        await new Promise((r) => setTimeout(r, 0));
        blockStart = performance.now();
      }
    }
    await window.sdk.flush();
    return { times: Array.from(out), blocks };
  }, CALLS);
  // Each SDK sends on its own timers: wait until every event has arrived.
  for (let seen = -1, since = Date.now(); sink.state.events < CALLS && Date.now() - since < STALL_MS;) {
    if (sink.state.events !== seen) [seen, since] = [sink.state.events, Date.now()];
    await new Promise((r) => setTimeout(r, 50));
  }
  const deliveredMs = Date.now() - started;
  const t1 = await metric("TaskDuration");
  const longTasks = await page.evaluate((n) => window.__longTasks.slice(n), longBefore);
  await cdp.send("HeapProfiler.collectGarbage");
  const heapAfter = (await cdp.send("Runtime.getHeapUsage")).usedSize;
  const wasmBytes = await page.evaluate(() => window.__wasmMemories.reduce((a, m) => a + m.buffer.byteLength, 0));
  await context.close();
  return {
    times, blocks, mainThreadMs: (t1 - t0) * 1000, deliveredMs, longTasks,
    heapBefore, heapAfter, wasmBytes, delivered: sink.state.events, requests: sink.state.requests, bytes: sink.state.bytes, errors,
  };
}

const result = {
  date: new Date().toISOString(),
  machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
  quick,
  size,
  anchors,
  flush1000: {
    mainThreadMs: quantile(flushRuns.map((r) => r.busyMs), 0.5),
    trackMainThreadMs: quantile(flushRuns.map((r) => r.trackBusyMs), 0.5),
    flushMainThreadMs: quantile(flushRuns.map((r) => r.flushBusyMs), 0.5),
    referencePlainFetchMs: quantile(flushRuns.map((r) => r.referenceBusyMs), 0.5),
    requests: flushRuns[0].requests,
    wallMs: quantile(flushRuns.map((r) => r.wallMs), 0.5),
    jsHeapMB: quantile(flushRuns.map((r) => r.heapMB), 0.5),
    rounds: flushRuns.length,
  },
};
const median = (xs) => quantile(xs, 0.5);
const compare = { calls: CALLS, rounds: COMPARE_ROUNDS, sdks: {} };
for (const name of SDKS) {
  const r = runs[name];
  const version = name === "cuecast" ? JSON.parse(fs.readFileSync(path.join(pkg, "package.json"), "utf8")).version
    : JSON.parse(fs.readFileSync(path.join(anchorsDir, name, "package.json"), "utf8")).version;
  const times = r.flatMap((x) => x.times);
  const blocks = r.flatMap((x) => x.blocks);
  compare.sdks[name] = {
    version,
    medianUs: quantile(times, 0.5) * 1000,
    p99Us: quantile(times, 0.99) * 1000,
    meanUsInBlocksOf100: (blocks.reduce((a, b) => a + b, 0) / blocks.length) * 1000,
    mainThreadMs: median(r.map((x) => x.mainThreadMs)),
    mainThreadUsPerEvent: (median(r.map((x) => x.mainThreadMs)) * 1000) / CALLS,
    longTasks: median(r.map((x) => x.longTasks.length)),
    longestTaskMs: Math.max(0, ...r.flatMap((x) => x.longTasks)),
    jsHeapAfterMB: median(r.map((x) => x.heapAfter)) / 1e6,
    jsHeapGrowthMB: median(r.map((x) => x.heapAfter - x.heapBefore)) / 1e6,
    wasmMemoryMB: median(r.map((x) => x.wasmBytes)) / 1e6,
    delivered: Math.min(...r.map((x) => x.delivered)),
    allDeliveredAfterMs: median(r.map((x) => x.deliveredMs)),
    requests: median(r.map((x) => x.requests)),
    bodyKB: median(r.map((x) => x.bytes)) / 1024,
    pageErrors: [...new Set(r.flatMap((x) => x.errors))].slice(0, 3),
  };
}
const cc = compare.sdks.cuecast;
const heapOf = (x) => x.jsHeapAfterMB + x.wasmMemoryMB;
for (const name of SDKS.slice(1)) {
  const a = compare.sdks[name];
  a.ratios = {
    medianUs: cc.medianUs / a.medianUs,
    p99Us: cc.p99Us / a.p99Us,
    mainThreadMs: cc.mainThreadMs / a.mainThreadMs,
    heapMB: heapOf(cc) / heapOf(a),
  };
}
result.compare = compare;
result.track = {
  calls: CALLS * COMPARE_ROUNDS,
  medianUs: cc.medianUs,
  p99Us: cc.p99Us,
  meanUsPerCallInBlocksOf100: cc.meanUsInBlocksOf100,
};

const kb = (b) => `${(b / 1024).toFixed(1)} KB`;
console.log(`\ncuecast SDK benchmark, ${result.date}, ${result.machine.cpus} × ${result.machine.model}${quick ? " (quick)" : ""}`);
console.log("npm payload          raw        gzip -9    brotli");
for (const k of ["wasm", "js", "total", "loader"]) {
  console.log(`  ${k.padEnd(18)} ${kb(size[k].raw).padEnd(10)} ${kb(size[k].gzip).padEnd(10)} ${kb(size[k].brotli)}`);
}
for (const [name, a] of Object.entries(anchors)) {
  const ratio = (size.total.gzip / a.gzip).toFixed(2);
  console.log(`  ${name.padEnd(32)} ${kb(a.raw).padEnd(10)} ${kb(a.gzip).padEnd(10)} ${kb(a.brotli)}   (cuecast/anchor gzip: ${ratio})`);
}
console.log(`track()              median ${result.track.medianUs.toFixed(1)} µs, p99 ${result.track.p99Us.toFixed(1)} µs over ${result.track.calls} calls (mean ${result.track.meanUsPerCallInBlocksOf100.toFixed(1)} µs timed in blocks of 100)`);
console.log(`reference            ${result.flush1000.requests} plain fetch() calls of the same sizes, no SDK: main thread ${result.flush1000.referencePlainFetchMs.toFixed(1)} ms`);
console.log(`track+flush 1000     main thread ${result.flush1000.mainThreadMs.toFixed(1)} ms (track ${result.flush1000.trackMainThreadMs.toFixed(1)} + flush ${result.flush1000.flushMainThreadMs.toFixed(1)}), wall ${result.flush1000.wallMs.toFixed(1)} ms (median of ${result.flush1000.rounds})`);
console.log(`\nside by side, ${CALLS} track() calls of the same event per page, ${COMPARE_ROUNDS} round(s), rotating order (ratios cuecast/anchor)`);
console.log("  SDK                                median µs  p99 µs  main thread ms (µs/event)  long tasks  JS heap MB (+wasm)  delivered");
for (const [name, x] of Object.entries(compare.sdks)) {
  const r = x.ratios ? ` [${x.ratios.medianUs.toFixed(2)} ${x.ratios.p99Us.toFixed(2)} ${x.ratios.mainThreadMs.toFixed(2)} ${x.ratios.heapMB.toFixed(2)}]` : "";
  console.log(`  ${`${name}@${x.version}`.padEnd(34)} ${x.medianUs.toFixed(1).padStart(9)} ${x.p99Us.toFixed(1).padStart(7)}  ${x.mainThreadMs.toFixed(1).padStart(14)} (${x.mainThreadUsPerEvent.toFixed(1)})  ${String(x.longTasks).padStart(10)}  ${x.jsHeapAfterMB.toFixed(1).padStart(10)} (+${x.wasmMemoryMB.toFixed(1)})  ${x.delivered}/${CALLS}${r}`);
}
const out = path.join(root, "target/bench");
fs.mkdirSync(out, { recursive: true });
fs.writeFileSync(path.join(out, "sdk.json"), JSON.stringify(result, null, 2) + "\n");
console.log(`written ${path.relative(root, path.join(out, "sdk.json"))}`);
