// cargo xtask bench: the SDK's size and main-thread cost, measured in one run.
// Prints a table and writes target/bench/sdk.json. `--quick` runs fewer
// iterations (a CI smoke of the benchmark itself, not a measurement).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";
import { startReceiver, startSite, launchChromium, openPage } from "../harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../../..");
const quick = process.argv.includes("--quick");
const CALLS = quick ? 1000 : 10_000;
const FLUSH_EVENTS = 1000;
const ROUNDS = quick ? 1 : 5;

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
  js: sizes([path.join(pkg, "cuecast.js"), path.join(pkg, "index.js")]),
};
size.total = Object.fromEntries(Object.keys(size.wasm).map((k) => [k, size.wasm[k] + size.js[k]]));

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

const perCall = [];
// performance.now() ticks every 5 µs even when isolated: a block of 100 calls
// timed as one gives the finer per-call mean.
const perBlock = [];
const flushRuns = [];
for (let round = 0; round < ROUNDS; round++) {
  const { page, context } = await openPage(browser, site, receiver, { autoCapture: false });
  const isolated = await page.evaluate(() => crossOriginIsolated);
  if (!isolated) throw new Error("bench page is not cross-origin isolated: timings would be coarse");
  // track(): CALLS calls, 100 per task so that sends interleave as in a real page.
  const { times, blocks } = await page.evaluate(async (calls) => {
    const out = new Float64Array(calls);
    const blocks = [];
    let blockStart = performance.now();
    for (let i = 0; i < calls; i++) {
      const t0 = performance.now();
      cc.track("report.exported", { format: "csv", rows: i, filters: { region: "emea" } });
      out[i] = performance.now() - t0;
      if (i % 100 === 99) {
        blocks.push((performance.now() - blockStart) / 100);
        await new Promise((r) => setTimeout(r, 0));
        blockStart = performance.now();
      }
    }
    await cc.flush();
    return { times: Array.from(out), blocks };
  }, CALLS);
  perCall.push(...times);
  perBlock.push(...blocks);
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
await browser.close();
await site.close();
await receiver.close();

const result = {
  date: new Date().toISOString(),
  machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
  quick,
  size,
  anchors,
  track: {
    calls: perCall.length,
    medianUs: quantile(perCall, 0.5) * 1000,
    p99Us: quantile(perCall, 0.99) * 1000,
    meanUsPerCallInBlocksOf100: (perBlock.reduce((a, b) => a + b, 0) / perBlock.length) * 1000,
  },
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
const kb = (b) => `${(b / 1024).toFixed(1)} KB`;
console.log(`\ncuecast SDK benchmark, ${result.date}, ${result.machine.cpus} × ${result.machine.model}${quick ? " (quick)" : ""}`);
console.log("npm payload          raw        gzip -9    brotli");
for (const k of ["wasm", "js", "total"]) {
  console.log(`  ${k.padEnd(18)} ${kb(size[k].raw).padEnd(10)} ${kb(size[k].gzip).padEnd(10)} ${kb(size[k].brotli)}`);
}
for (const [name, a] of Object.entries(anchors)) {
  const ratio = (size.total.gzip / a.gzip).toFixed(2);
  console.log(`  ${name.padEnd(32)} ${kb(a.raw).padEnd(10)} ${kb(a.gzip).padEnd(10)} ${kb(a.brotli)}   (cuecast/anchor gzip: ${ratio})`);
}
console.log(`track()              median ${result.track.medianUs.toFixed(1)} µs, p99 ${result.track.p99Us.toFixed(1)} µs over ${result.track.calls} calls (mean ${result.track.meanUsPerCallInBlocksOf100.toFixed(1)} µs timed in blocks of 100)`);
console.log(`reference            ${result.flush1000.requests} plain fetch() calls of the same sizes, no SDK: main thread ${result.flush1000.referencePlainFetchMs.toFixed(1)} ms`);
console.log(`track+flush 1000     main thread ${result.flush1000.mainThreadMs.toFixed(1)} ms (track ${result.flush1000.trackMainThreadMs.toFixed(1)} + flush ${result.flush1000.flushMainThreadMs.toFixed(1)}), wall ${result.flush1000.wallMs.toFixed(1)} ms (median of ${result.flush1000.rounds})`);
const out = path.join(root, "target/bench");
fs.mkdirSync(out, { recursive: true });
fs.writeFileSync(path.join(out, "sdk.json"), JSON.stringify(result, null, 2) + "\n");
console.log(`written ${path.relative(root, path.join(out, "sdk.json"))}`);
