// Nothing is lost: page unloads, reloads, offline periods, several tabs,
// storage that is blocked or full. The packed npm package in Debian's
// headless Chromium against loopback receivers; pages of one browser context
// share their origin's storage like tabs of one profile.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startReceiver, startSite, launchChromium } from "./harness.mjs";

let browser, site;
// Receivers and contexts a test opened: closed after the file even when the
// test failed half-way (an open server would keep node from exiting).
const opened = [];
const keep = (x) => (opened.push(x), x);

before(async () => {
  [browser, site] = await Promise.all([launchChromium(), startSite()]);
});
after(async () => {
  await browser.close();
  await Promise.all([site.close(), ...opened.map((x) => x.close().catch(() => {}))]);
});

/** The figures the benchmark reports (`cargo xtask bench` reads this line). */
function figure(name, value) {
  console.log(`# figure ${JSON.stringify({ name, value })}`);
}

const url = (options, file = "sdk.html", query = "") =>
  `${site.url}/${file}${query}#${encodeURIComponent(JSON.stringify({ writeKey: "pk_test", ...options }))}`;

/** A page of `context` with cuecast started (as `window.cc`), its console kept in `logs`. */
async function tab(context, options, file = "sdk.html") {
  const page = await context.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  await page.goto(url(options, file));
  await page.waitForFunction(() => window.cc || window.ccError);
  return { page, logs };
}

const noPageErrors = (logs) => assert.deepEqual(logs.filter((l) => l.startsWith("pageerror")), [], "no uncaught error in the page");

/** Ids received, and how many arrived more than once (the relay drops those by id). */
function dedupe(receiver) {
  const ids = receiver.events().map((e) => e.id);
  return { unique: new Set(ids), duplicates: ids.length - new Set(ids).size };
}

/**
 * A receiver that holds each answer for `delayMs` and remembers when each
 * request was in flight, to tell whether one event was ever being sent twice
 * at the same time.
 */
async function slowReceiver(delayMs) {
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8") || "null");
      const record = { body, start: Date.now(), end: Infinity };
      requests.push(record);
      setTimeout(() => {
        res.writeHead(202, { "access-control-allow-origin": "*", "content-type": "application/json" });
        res.end(JSON.stringify({ accepted: body?.events?.length ?? 0, duplicates: 0 }));
        record.end = Date.now();
      }, delayMs);
    });
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    endpoint: `http://127.0.0.1:${server.address().port}/v1/batch`,
    events: () => requests.flatMap((r) => r.body?.events ?? []),
    /** Pairs of requests that carried the same event while both were open. */
    overlaps() {
      const found = [];
      for (let i = 0; i < requests.length; i++) {
        for (let j = i + 1; j < requests.length; j++) {
          const [a, b] = [requests[i], requests[j]];
          if (a.start >= b.end || b.start >= a.end) continue;
          const ids = new Set(a.body.events.map((e) => e.id));
          const shared = b.body.events.filter((e) => ids.has(e.id)).map((e) => e.id);
          if (shared.length) found.push(shared);
        }
      }
      return found;
    },
    close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
  };
}

async function until(predicate, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("navigating away within 1 ms of track(): 50 of 50 events arrive (on the way out or from the next page), each id once after dedupe", async () => {
  const receiver = keep(await startReceiver());
  const context = await browser.newContext();
  const { page, logs } = await tab(context, { endpoint: receiver.endpoint });
  const ids = [];
  for (let trial = 0; trial < 50; trial++) {
    const viaLink = trial % 2 === 0;
    const id = await page.evaluate(([trial, viaLink, next]) => {
      const id = cc.shoutoutClicked({ shoutoutId: `promo-${trial}`, action: "link" });
      if (viaLink) {
        const a = document.createElement("a");
        a.href = next;
        document.body.append(a);
        a.click();
      } else {
        location.href = next;
      }
      return id;
    }, [trial, viaLink, url({ endpoint: receiver.endpoint }, "sdk.html", `?trial=${trial}`)]);
    ids.push(id);
    await page.waitForURL(new RegExp(`trial=${trial}#`));
    await page.waitForFunction(() => window.cc);
  }
  await receiver.until(() => ids.every((id) => dedupe(receiver).unique.has(id)), 30_000).catch(() => {});
  // Batches sent on the way out are stored as in flight (their answers die
  // with the page) and sent again once their lease runs out: wait until the
  // last page holds nothing, then count what the relay would drop as duplicates.
  await until(() => page.evaluate(async () => (await cc.flush()).pending === 0), 40_000, "storage emptied");
  const { unique, duplicates } = dedupe(receiver);
  const lost = ids.filter((id) => !unique.has(id));
  figure("navigate_away_lost", lost.length);
  figure("navigate_away_duplicates", duplicates);
  assert.deepEqual(lost, [], `lost ${lost.length} of 50`);
  assert.equal(unique.size, 50, "nothing else was sent");
  noPageErrors(logs);
  await context.close();
  await receiver.close();
});

test("a relay that is down across two page loads: stored events arrive after it is back, in order, each once after dedupe, with their ids and times", async () => {
  const probe = keep(await startReceiver());
  const { endpoint, port } = probe;
  await probe.close(); // connections are refused now
  const options = { endpoint, retry: { minDelay: 200, maxDelay: 1000 } };
  const context = await browser.newContext();
  const { page, logs } = await tab(context, options);
  const first = await page.evaluate(() => [cc.track("down-1"), cc.track("down-2"), cc.track("down-3")]);
  await page.evaluate(() => cc.flush());
  await page.reload();
  await page.waitForFunction(() => window.cc);
  const second = await page.evaluate(() => [cc.track("down-4"), cc.track("down-5")]);
  await page.evaluate(() => cc.flush());
  const stored = await page.evaluate(async () => {
    const db = await new Promise((ok, no) => { const r = indexedDB.open("cuecast"); r.onsuccess = () => ok(r.result); r.onerror = no; });
    return new Promise((ok) => { const r = db.transaction("events").objectStore("events").getAllKeys(); r.onsuccess = () => ok(r.result); });
  });
  assert.equal(stored.length, 5, `all five are stored in IndexedDB: ${stored}`);
  assert.ok(stored.every((k) => /^cuecast:v1:[0-9a-f]{16}:[0-9a-f-]{36}:[0-9a-f-]{36}$/.test(k)), `versioned, scoped keys: ${stored[0]}`);

  const back = keep(await startReceiver(port));
  const reloadedAt = Date.now();
  await page.reload();
  await page.waitForFunction(() => window.cc);
  await back.until(() => dedupe(back).unique.size === 5, 30_000);
  figure("first_resend_after_reload_ms", back.posts()[0].at - reloadedAt);
  const events = back.events();
  const order = [...new Map(events.map((e) => [e.id, e.event])).values()];
  assert.deepEqual(order, ["down-1", "down-2", "down-3", "down-4", "down-5"], "in the order they were tracked");
  assert.deepEqual([...dedupe(back).unique], [...first, ...second], "with the ids they were given");
  const firstPost = back.posts().find((p) => p.body.events.some((e) => e.event === "down-1"));
  assert.ok(firstPost.body.attempt >= 2, `a retry of the stored batch (attempt ${firstPost.body.attempt})`);
  await until(() => page.evaluate(async () => (await cc.flush()).pending === 0), 20_000, "storage emptied");
  const left = await page.evaluate(async () => {
    const db = await new Promise((ok) => { const r = indexedDB.open("cuecast"); r.onsuccess = () => ok(r.result); });
    return new Promise((ok) => { const r = db.transaction("events").objectStore("events").count(); r.onsuccess = () => ok(r.result); });
  });
  assert.equal(left, 0, "acknowledged events leave storage");
  assert.deepEqual(await page.evaluate(() => Object.keys(localStorage).filter((k) => k.split(":").length === 5)), [],
    "and so do the copies made when the page was hidden");
  figure("relay_down_duplicates", dedupe(back).duplicates);
  noPageErrors(logs);
  await context.close();
  await back.close();
});

test("offline for 30 s: nothing is sent and no retry is spent; back online, everything arrives by itself", async () => {
  const receiver = keep(await startReceiver());
  const context = await browser.newContext();
  const { page, logs } = await tab(context, { endpoint: receiver.endpoint, debug: true, flushInterval: 200 });
  await context.setOffline(true);
  await page.waitForFunction(() => !navigator.onLine);
  const ids = [];
  for (let i = 0; i < 6; i++) {
    ids.push(await page.evaluate((i) => cc.track("on-the-train", { i }), i));
    await new Promise((r) => setTimeout(r, 5000));
  }
  assert.equal(receiver.posts().length, 0);
  assert.ok(!logs.some((l) => /retry \d+ in/.test(l)), "no retry was scheduled while offline");
  await context.setOffline(false);
  await receiver.until(() => dedupe(receiver).unique.size === 6, 10_000);
  assert.deepEqual([...dedupe(receiver).unique], ids);
  assert.deepEqual(receiver.posts().map((p) => p.body.attempt), receiver.posts().map(() => 1), "first attempts, not retries");
  figure("offline_lost", 6 - dedupe(receiver).unique.size);
  noPageErrors(logs);
  await context.close();
  await receiver.close();
});

for (const tabs of [2, 3]) {
  test(`${tabs} tabs tracking at once, one closed mid-flush: every event arrives, none is ever being sent twice at once`, async () => {
    const receiver = keep(await slowReceiver(300));
    const context = await browser.newContext();
    const options = { endpoint: receiver.endpoint, flushAt: 5, flushInterval: 100, retry: { minDelay: 200, maxDelay: 1000 } };
    const pages = [];
    for (let i = 0; i < tabs; i++) pages.push(await tab(context, options));
    const tracked = await Promise.all(pages.map(({ page }, t) => page.evaluate(async (t) => {
      const ids = [];
      for (let i = 0; i < 40; i++) {
        ids.push(cc.track("multi-tab", { t, i }));
        if (i % 7 === 0) await new Promise((r) => setTimeout(r, 20));
      }
      return ids;
    }, t)));
    // The first tab closes while its batches are in flight or queued.
    const closing = pages[0];
    closing.page.evaluate(() => cc.flush()).catch(() => {});
    await new Promise((r) => setTimeout(r, 50));
    await closing.page.close();
    const all = tracked.flat();
    // The others adopt what it left once its lease runs out (15 s).
    await until(() => all.every((id) => receiver.events().some((e) => e.id === id)), 40_000,
      `all ${all.length} events (have ${new Set(receiver.events().map((e) => e.id)).size})`);
    assert.deepEqual(receiver.overlaps(), [], "no event was in two requests in flight at the same time");
    const ids = receiver.events().map((e) => e.id);
    figure(`multi_tab_${tabs}_lost`, all.filter((id) => !ids.includes(id)).length);
    figure(`multi_tab_${tabs}_duplicates`, ids.length - new Set(ids).size);
    for (const { logs } of pages.slice(1)) noPageErrors(logs);
    await context.close();
    await receiver.close();
  });
}

test("a page that tracks 200 events and closes: what fits in 60 KB goes at once, the rest with the next page of the origin", async () => {
  const receiver = keep(await startReceiver());
  const context = await browser.newContext();
  const options = { endpoint: receiver.endpoint, flushAt: 1000, flushInterval: 3_600_000, maxBatchBytes: 512 * 1024 };
  const { page } = await tab(context, options);
  const ids = await page.evaluate(() => Array.from({ length: 200 }, (_, i) => cc.track("bulk", { i, note: "x".repeat(300) })));
  await page.close({ runBeforeUnload: false });
  await new Promise((r) => setTimeout(r, 1500));
  const atClose = receiver.posts();
  const bytes = atClose.reduce((sum, p) => sum + Buffer.byteLength(p.raw), 0);
  assert.ok(atClose.length >= 1 && bytes <= 60 * 1024, `${atClose.length} keepalive requests, ${bytes} bytes`);
  const sentAtClose = new Set(receiver.events().map((e) => e.id));
  assert.ok(sentAtClose.size < 200, "not everything fits");
  const next = await tab(context, options);
  await receiver.until(() => ids.every((id) => dedupe(receiver).unique.has(id)), 30_000);
  const later = receiver.posts().slice(atClose.length).flatMap((p) => p.body.events.map((e) => e.properties.i));
  const rest = later.filter((i) => i >= sentAtClose.size);
  assert.deepEqual(rest.slice(0, 200 - sentAtClose.size), rest.slice(0, 200 - sentAtClose.size).map((_, k) => sentAtClose.size + k),
    "the next page sends the rest at once, oldest first");
  figure("close_200_duplicates", dedupe(receiver).duplicates);
  noPageErrors(next.logs);
  await context.close();
  await receiver.close();
});

test("a page closed before its storage has opened still leaves what did not fit in the keepalive budget to the next page", async () => {
  const receiver = keep(await startReceiver());
  const context = await browser.newContext();
  const options = { endpoint: receiver.endpoint, flushAt: 1000, flushInterval: 3_600_000, maxBatchBytes: 512 * 1024 };
  const page = await context.newPage();
  const logs = [];
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  // IndexedDB answers 5 s late in this page only: it closes before then.
  await page.addInitScript(() => {
    const open = IDBFactory.prototype.open;
    IDBFactory.prototype.open = function (...args) {
      const real = open.apply(this, args);
      const late = { result: undefined, onsuccess: null, onerror: null, onupgradeneeded: null };
      real.onupgradeneeded = () => ((late.result = real.result), late.onupgradeneeded && late.onupgradeneeded());
      real.onsuccess = () => setTimeout(() => ((late.result = real.result), late.onsuccess && late.onsuccess()), 5000);
      real.onerror = () => late.onerror && late.onerror();
      return late;
    };
  });
  await page.goto(url(options));
  await page.waitForFunction(() => window.cc);
  const ids = await page.evaluate(() => Array.from({ length: 200 }, (_, i) => cc.track("early", { i, note: "x".repeat(300) })));
  await page.close({ runBeforeUnload: false });
  await new Promise((r) => setTimeout(r, 1000));
  const sentAtClose = new Set(receiver.events().map((e) => e.id));
  assert.ok(sentAtClose.size > 0 && sentAtClose.size < 200, `${sentAtClose.size} sent as the page closed`);
  const next = await tab(context, options);
  await receiver.until(() => ids.every((id) => dedupe(receiver).unique.has(id)), 20_000);
  figure("early_close_200_duplicates", dedupe(receiver).duplicates);
  noPageErrors([...logs, ...next.logs]);
  await context.close();
  await receiver.close();
});

test("IndexedDB blocked: localStorage keeps the events across a reload; both blocked: memory, and the page sees no exception", async () => {
  const probe = keep(await startReceiver());
  const { endpoint, port } = probe;
  await probe.close();
  const blockIdb = () => Object.defineProperty(window, "indexedDB", { get() { throw new DOMException("blocked", "SecurityError"); } });
  const context = await browser.newContext();
  await context.addInitScript(blockIdb);
  const options = { endpoint, debug: true, retry: { minDelay: 200, maxDelay: 500 } };
  const { page, logs } = await tab(context, options);
  await until(() => logs.some((l) => l.includes("events are stored in localStorage")), 5000, logs.join("\n"));
  const ids = await page.evaluate(() => [cc.track("ls-1"), cc.track("ls-2")]);
  const keys = await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith("cuecast:v1:") && k.split(":").length === 5));
  assert.equal(keys.length, 2, keys.join());
  const back = keep(await startReceiver(port));
  await page.reload();
  await back.until(() => ids.every((id) => dedupe(back).unique.has(id)), 20_000);
  noPageErrors(logs);
  await context.close();

  const bare = await browser.newContext();
  await bare.addInitScript(blockIdb);
  await bare.addInitScript(() => Object.defineProperty(window, "localStorage", { get() { throw new DOMException("blocked", "SecurityError"); } }));
  const mem = await tab(bare, { endpoint: back.endpoint, debug: true });
  await until(() => mem.logs.some((l) => l.includes("events are stored in memory only")), 5000, mem.logs.join("\n"));
  const id = await mem.page.evaluate(() => cc.track("memory-only"));
  assert.deepEqual(await mem.page.evaluate(() => cc.flush()), { sent: 1, failed: 0, pending: 0, dropped: 0 });
  assert.ok(dedupe(back).unique.has(id));
  noPageErrors(mem.logs);
  await bare.close();
  await back.close();
});

test("a full storage quota never throws into the page, and the events are still sent", async () => {
  const receiver = keep(await startReceiver());
  const context = await browser.newContext();
  await context.addInitScript(() => {
    IDBObjectStore.prototype.put = function () { throw new DOMException("full", "QuotaExceededError"); };
  });
  const { page, logs } = await tab(context, { endpoint: receiver.endpoint, debug: true });
  const ids = await page.evaluate(() => Array.from({ length: 5 }, (_, i) => cc.track("quota", { i })));
  assert.deepEqual(await page.evaluate(() => cc.flush()), { sent: 5, failed: 0, pending: 0, dropped: 0 });
  assert.deepEqual([...dedupe(receiver).unique], ids);
  noPageErrors(logs);
  await context.close();
  await receiver.close();
});

test("without keepalive fetch, a hidden page hands its queue to sendBeacon as text/plain", async () => {
  const receiver = keep(await startReceiver());
  const context = await browser.newContext();
  await context.addInitScript(() => { delete Request.prototype.keepalive; });
  const { page, logs } = await tab(context, { endpoint: receiver.endpoint, flushInterval: 3_600_000, debug: true });
  const ids = await page.evaluate(() => [cc.track("beacon-1"), cc.track("beacon-2")]);
  await page.goto(`${site.url}/elsewhere.html`);
  await receiver.until(() => receiver.posts().length >= 1, 5000);
  const post = receiver.posts()[0];
  assert.match(post.headers["content-type"], /^text\/plain/);
  assert.deepEqual(post.body.events.map((e) => e.id), ids);
  assert.equal(post.headers["sec-fetch-mode"], "no-cors", "a beacon, not a fetch");
  noPageErrors(logs);
  await context.close();
  await receiver.close();
});

test("plain <script> loader: calls made before the module loaded are replayed in order, with the ids and times they were given", async () => {
  const receiver = keep(await startReceiver());
  const context = await browser.newContext();
  const { page, logs } = await tab(context, { endpoint: receiver.endpoint }, "loader.html");
  const early = await page.evaluate(() => window.earlyCalls);
  assert.deepEqual(early.map((c) => c.m), ["track", "identify", "shoutoutClicked"], "journaled before loading");
  await page.evaluate(() => cc.flush());
  const events = receiver.events();
  assert.deepEqual(events.map((e) => e.event), ["app.started", "user.identified", "shoutout.clicked"]);
  assert.deepEqual(events.map((e) => e.id), early.map((c) => c.id), "the ids given when the calls were made");
  const earlyAt = await page.evaluate(() => window.earlyAt);
  for (const e of events) assert.ok(Math.abs(Date.parse(e.timestamp) - earlyAt) < 1000, `made at ${e.timestamp}, not at replay`);
  assert.equal(events[2].userId, "user-7", "in order: identify took effect before the click");
  assert.equal(await page.evaluate(() => localStorage.getItem("cuecast:v1:early")), null, "the journal is emptied once replayed");
  assert.match(await page.evaluate(() => cuecast.track("later")), /^[0-9a-f-]{36}$/, "afterwards calls go straight through");
  noPageErrors(logs);
  await context.close();
  await receiver.close();
});

test("a page closed while the module is still loading loses no call: the next page replays them", async () => {
  const receiver = keep(await startReceiver());
  const context = await browser.newContext();
  const stuck = await context.newPage();
  await stuck.route("**/cuecast_bg.wasm", () => {}); // the module never arrives
  await stuck.goto(url({ endpoint: receiver.endpoint }, "loader.html"));
  const early = await stuck.evaluate(() => window.earlyCalls);
  assert.equal(await stuck.evaluate(() => window.cc), undefined, "still loading");
  await stuck.close();
  assert.equal(receiver.posts().length, 0);
  const next = await tab(context, { endpoint: receiver.endpoint });
  await receiver.until(() => early.every((c) => dedupe(receiver).unique.has(c.id)), 15_000);
  const replayed = receiver.events().filter((e) => early.some((c) => c.id === e.id));
  assert.deepEqual(replayed.map((e) => e.event), ["app.started", "user.identified", "shoutout.clicked"]);
  noPageErrors(next.logs);
  await context.close();
  await receiver.close();
});

test("a page entering the back/forward cache lets another tab take its events, and when restored does not send them again", async () => {
  const receiver = keep(await startReceiver());
  const context = await browser.newContext();
  const options = { endpoint: receiver.endpoint, flushInterval: 3_600_000, flushAt: 1000 };
  const a = await tab(context, options);
  // Only this page is offline, so hiding it stores its events instead of sending them.
  const cdp = await context.newCDPSession(a.page);
  await cdp.send("Network.emulateNetworkConditions", { offline: true, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  await a.page.waitForFunction(() => !navigator.onLine);
  const ids = await a.page.evaluate(() => Array.from({ length: 5 }, (_, i) => cc.track("frozen", { i })));
  const b = await tab(context, options);
  await new Promise((r) => setTimeout(r, 500)); // b has seen a's records and waits on a's lock
  // Headless Chromium keeps no back/forward cache, so the page lifecycle events are dispatched as
  // the browser would: pagehide with persisted = true on the way into the cache.
  await a.page.evaluate(() => window.dispatchEvent(new PageTransitionEvent("pagehide", { persisted: true })));
  await receiver.until(() => ids.every((id) => dedupe(receiver).unique.has(id)), 10_000);
  // Back online while still "frozen" (a real frozen page runs nothing; this one still has its
  // timers and the online event), then restored.
  await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  await a.page.waitForFunction(() => navigator.onLine);
  await a.page.evaluate(() => { window.frozenFlush = cc.flush(); });
  await new Promise((r) => setTimeout(r, 500));
  await a.page.evaluate(() => window.dispatchEvent(new PageTransitionEvent("pageshow", { persisted: true })));
  assert.equal((await a.page.evaluate(() => window.frozenFlush)).sent, 0, "a flush while frozen waits, then finds nothing of its own");
  await until(() => a.page.evaluate(async () => (await cc.flush()).pending === 0), 5000, "the restored page let go of them");
  await new Promise((r) => setTimeout(r, 1000));
  assert.deepEqual(receiver.events().map((e) => e.id), ids, "sent once, by the other tab, in order");
  noPageErrors(a.logs);
  noPageErrors(b.logs);
  await context.close();
});
