// The console's figures (issue 5): time to first paint and to "list rendered"
// of each console page against a relay holding 100,000 events and 300,000
// attempts. Fills a fresh SQLite file with `cuecast-adminbench fill`, starts
// the release relay on it, and opens each page in headless Chromium `--runs`
// times, each in a fresh browser context (nothing cached, as on a first
// visit), after signing in through sessionStorage as the console does.
//
// - fcp_ms: the browser's first-contentful-paint (the page shell).
// - list_ms: the performance mark "cuecast:list-rendered", set by console.js
//   once the page's data from the admin API is on screen.
// - details_ms (Webhooks and Events only): the mark "cuecast:details-rendered",
//   once what those pages fetch after the list is on screen too (each
//   webhook's health; the webhooks each of the 50 events went to).
// Each is the median over the runs, with the worst run beside it. Prints JSON
// and writes target/bench/console.json.
//
// Run (from the repository root; xtask's bench runs a fixed list of scripts, so not from there yet):
//   cargo build --release -p cuecast-relay --bins
//   node tests/browser/bench/console.mjs [--events 100000] [--attempts-per-delivery 3] [--runs 5] [--storage URL]
// --storage fills that database instead of a new SQLite file (e.g. a throw-away PostgreSQL database);
// the relay serves it with the configuration `fill` prints (its four webhooks), on a free port.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { startRelay, launchChromium } from "../harness.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
const arg = (name, fallback) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : fallback);
const events = Number(arg("--events", 100_000));
const perDelivery = Number(arg("--attempts-per-delivery", 3));
const runs = Number(arg("--runs", 5));
const relayBin = arg("--relay", path.join(root, "target/release/cuecast-relay"));
const benchBin = arg("--adminbench", path.join(root, "target/release/cuecast-adminbench"));
const TOKEN = `bench-${Date.now().toString(36)}`;

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const round = (x) => (x == null ? null : Math.round(x));

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cuecast-console-bench-"));
const storage = arg("--storage", `sqlite://${dir}/cuecast.db`);
const fill = spawnSync(benchBin, ["fill", "--storage", storage, "--events", String(events), "--attempts-per-delivery", String(perDelivery)],
  { stdio: ["ignore", "pipe", "inherit"], encoding: "utf8" });
if (fill.status !== 0) throw new Error(`${benchBin} fill failed (${fill.status ?? fill.signal}); build it with cargo build --release -p cuecast-relay --bins`);
// One JSON line: what it wrote, how long it took, and a configuration that serves the result.
const filled = JSON.parse(fill.stdout.trim().split("\n").pop());

const relay = await startRelay(({ listen }) => filled.config
  .replace(/^listen = .*$/m, `listen = "${listen}"`)
  .replace(/^token = .*$/m, `token = "${TOKEN}"`), { bin: relayBin, dir, readyMs: 120_000 });
const browser = await launchChromium();

try {
  // Real ids for the detail pages, taken from the filled database.
  const admin = (p) => fetch(`${relay.url}/admin/v1${p}`, { headers: { authorization: `Bearer ${TOKEN}` } }).then((r) => r.json());
  const [hooks, deliveries, recent] = await Promise.all([admin("/webhooks"), admin("/deliveries?limit=1"), admin("/events?limit=1")]);
  const pages = {
    webhooks: "#/webhooks",
    "webhook edit": `#/webhooks/${encodeURIComponent(hooks.items[0]?.id ?? "none")}`,
    deliveries: "#/deliveries",
    "deliveries (dead)": "#/deliveries?status=dead",
    delivery: `#/deliveries/${encodeURIComponent(deliveries.items[0]?.id ?? "none")}`,
    events: "#/events",
    event: `#/events/${encodeURIComponent(recent.items[0]?.id ?? "none")}`,
    sources: "#/sources",
  };
  const figures = {};
  for (const [name, hash] of Object.entries(pages)) {
    const fcp = [];
    const list = [];
    const more = [];
    const hasDetails = name === "webhooks" || name === "events";
    for (let i = 0; i < runs; i++) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      await context.addInitScript((token) => sessionStorage.setItem("cuecast:console:v1:token", token), TOKEN);
      const page = await context.newPage();
      await page.goto(`${relay.url}/console/${hash}`);
      await page.waitForSelector("main[data-state=ready]", { timeout: 60_000 });
      if (hasDetails) await page.waitForFunction(() => performance.getEntriesByName("cuecast:details-rendered").length > 0, null, { timeout: 60_000 });
      const t = await page.evaluate(() => ({
        fcp: performance.getEntriesByName("first-contentful-paint")[0]?.startTime,
        list: performance.getEntriesByName("cuecast:list-rendered")[0]?.startTime,
        details: performance.getEntriesByName("cuecast:details-rendered")[0]?.startTime,
      }));
      fcp.push(t.fcp);
      list.push(t.list);
      more.push(t.details);
      await context.close();
    }
    figures[name] = { fcp_ms: round(median(fcp)), list_ms: round(median(list)), list_max_ms: round(Math.max(...list)) };
    if (hasDetails) figures[name].details_ms = round(median(more));
  }
  const out = {
    date: new Date().toISOString().slice(0, 10),
    storage: storage.split(":")[0], events: filled.events, attempts: filled.attempts, runs, fill_s: filled.seconds,
    pages: figures,
  };
  const json = JSON.stringify(out, null, 2);
  fs.mkdirSync(path.join(root, "target/bench"), { recursive: true });
  fs.writeFileSync(path.join(root, "target/bench/console.json"), `${json}\n`);
  console.log(json);
} finally {
  await browser.close();
  await relay.stop();
  relay.cleanup();
}
