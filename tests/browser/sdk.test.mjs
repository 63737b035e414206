// The built npm package, installed from its tarball, in a real page in
// Debian's headless Chromium, sending to a real loopback receiver.
import { test, before, after, beforeEach } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startReceiver, startSite, launchChromium, openPage } from "./harness.mjs";

const fixtures = path.join(path.dirname(fileURLToPath(import.meta.url)), "../fixtures");
const golden = JSON.parse(fs.readFileSync(path.join(fixtures, "batch.json"), "utf8"));
const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const ISO_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

let browser, site, receiver;
const opened = [];

before(async () => {
  [browser, site, receiver] = await Promise.all([launchChromium(), startSite(), startReceiver()]);
});
after(async () => {
  await browser.close();
  await Promise.all([site.close(), receiver.close()]);
});
beforeEach(async () => {
  for (const p of opened.splice(0)) {
    // Nothing the SDK does may throw into the host page.
    assert.deepEqual(p.logs.filter((l) => l.startsWith("pageerror")), [], "no uncaught error in the page");
    await p.context.close();
  }
  receiver.reset();
});

async function open(options = {}, file = "sdk.html") {
  const p = await openPage(browser, site, receiver, options, file);
  opened.push(p);
  return p;
}

/** Runs `fn` in the page and returns the thrown error's fields, or null. */
async function thrown(page, fn, arg) {
  return page.evaluate(([src, arg]) => {
    try {
      new Function("cc", "arg", src)(window.cc, arg);
      return null;
    } catch (e) {
      return { name: e.name, message: e.message, field: e.field, code: e.code };
    }
  }, [fn, arg]);
}

test("typed events, a custom event and auto-captured clicks and forms reach the receiver with the contract's fields", async () => {
  const { page } = await open({ writeKey: "pk_live_demo" });
  await page.evaluate(() => {
    cc.identify("user-42", { plan: "pro" });
    cc.track("report.exported", { format: "csv", when: new Date(Date.UTC(2026, 11, 4)) });
    cc.shoutoutClicked({ shoutoutId: "spring-promo", action: "cta" });
    cc.surveySubmitted({ surveyId: "nps-q3", kind: "nps", score: 9, comment: "Love it", needsHelp: false });
    cc.surveySubmitted({ surveyId: "onboarding-feedback", answers: [{ questionId: "q1", answer: "Yes" }] });
    cc.onboardingTaskCompleted({ taskId: "connect-crm", checklistId: "getting-started", completed: 3, total: 5 });
    cc.walkthruGoalReached({ walkthruId: "create-invoice", goal: "invoice-sent" });
  });
  await page.click("#promo-cta-text"); // a descendant of the ShoutOut element
  await page.click("#promo-dismiss");
  await page.click("#task-crm");
  await page.click("#survey-submit");
  await page.click("#nps-submit");
  const report = await page.evaluate(() => cc.flush());
  assert.deepEqual(report, { sent: 12, failed: 0, pending: 0, dropped: 0 });

  assert.equal(receiver.requests.filter((r) => r.method === "OPTIONS").length, 0, "text/plain needs no CORS preflight");
  const [post] = receiver.posts();
  assert.equal(post.headers["content-type"], "text/plain;charset=UTF-8");
  const batch = post.body;
  assert.deepEqual(Object.keys(batch).sort(), Object.keys(golden).sort(), "batch envelope has the golden fields");
  assert.equal(batch.v, 1);
  assert.equal(batch.writeKey, "pk_live_demo");
  assert.match(batch.batchId, UUID_V7);
  assert.match(batch.sentAt, ISO_MS);
  assert.equal(batch.attempt, 1);
  assert.deepEqual(batch.sdk, { name: "cuecast", version: "0.1.0" });

  const names = batch.events.map((e) => e.event);
  assert.deepEqual(names, [
    "user.identified", "report.exported", "shoutout.clicked", "survey.submitted", "survey.submitted",
    "onboarding.task_completed", "walkthru.goal_reached",
    "shoutout.clicked", "shoutout.clicked", "onboarding.task_completed", "survey.submitted", "survey.submitted",
  ]);
  const ids = new Set();
  for (const e of batch.events) {
    assert.deepEqual(Object.keys(e).sort(), Object.keys(golden.events[0]).sort(), `${e.event} has the golden event fields`);
    assert.match(e.id, UUID_V7);
    ids.add(e.id);
    assert.match(e.timestamp, ISO_MS);
    assert.equal(e.userId, "user-42");
    assert.match(e.anonymousId, /^[0-9a-f-]{36}$/);
    assert.equal(e.anonymousId, batch.events[0].anonymousId);
    assert.equal(e.sessionId, batch.events[0].sessionId);
    assert.equal(e.context.page.url, `${site.url}/sdk.html${await page.evaluate(() => location.hash)}`);
    assert.equal(e.context.page.path, "/sdk.html");
    assert.equal(e.context.page.title, "cuecast test page");
    assert.match(e.context.userAgent, /Chrome/);
    assert.ok(e.context.locale && e.context.timezone, "locale and timezone");
    assert.ok(e.context.screen.width > 0 && e.context.screen.height > 0);
    assert.deepEqual(e.context.library, { name: "cuecast", version: "0.1.0" });
  }
  assert.equal(ids.size, 12, "every event has its own id");
  const [identified, custom, shoutout, nps, answers, task, walkthru, capturedCta, capturedDismiss, capturedTask, capturedSurvey, capturedNps] = batch.events;
  assert.deepEqual(identified.traits, { plan: "pro" });
  assert.deepEqual(custom.properties, { format: "csv", when: "2026-12-04T00:00:00.000Z" });
  assert.deepEqual(shoutout.properties, { shoutoutId: "spring-promo", action: "cta" });
  assert.deepEqual(nps.properties, { surveyId: "nps-q3", kind: "nps", score: 9, comment: "Love it", needsHelp: false });
  assert.deepEqual(answers.properties, { surveyId: "onboarding-feedback", answers: [{ questionId: "q1", answer: "Yes" }] });
  assert.deepEqual(task.properties, { taskId: "connect-crm", checklistId: "getting-started", completed: 3, total: 5 });
  assert.deepEqual(walkthru.properties, { walkthruId: "create-invoice", goal: "invoice-sent" });
  assert.deepEqual(capturedCta.properties, { shoutoutId: "spring-promo", action: "cta" });
  assert.deepEqual(capturedDismiss.properties, { shoutoutId: "spring-promo", action: "dismiss" });
  assert.deepEqual(capturedTask.properties, { taskId: "connect-crm", checklistId: "getting-started" });
  assert.deepEqual(capturedSurvey.properties, {
    surveyId: "onboarding-feedback",
    answers: [
      { questionId: "q1", answer: "Yes" },
      { questionId: "tools", answer: ["csv", "pdf"] },
      { questionId: "q3", answer: "More exports please" },
      { questionId: "formats", answer: ["csv", "pdf"] },
    ],
  }, "password, hidden, ignored and unchecked fields are never captured");
  assert.deepEqual(capturedNps.properties, { surveyId: "nps-q3", kind: "nps", score: 4, comment: "Too slow" });
});

test("auto-capture works for elements added after init, and can be switched off", async () => {
  const { page } = await open();
  await page.evaluate(() => {
    document.body.insertAdjacentHTML("beforeend", '<a id="late" href="#x" data-cuecast-shoutout="late-promo">Read more</a>');
  });
  await page.click("#late");
  await page.evaluate(() => cc.flush());
  assert.deepEqual(receiver.events().map((e) => e.properties), [{ shoutoutId: "late-promo", action: "link" }]);

  receiver.reset();
  const off = await open({ autoCapture: false });
  await off.page.click("#promo-cta");
  await off.page.click("#survey-submit");
  assert.deepEqual(await off.page.evaluate(() => cc.flush()), { sent: 0, failed: 0, pending: 0, dropped: 0 });
  assert.equal(receiver.posts().length, 0);
});

test("20 events are sent at once; fewer are sent by the flush interval without flush()", async () => {
  const { page } = await open({ flushInterval: 600 });
  const started = Date.now();
  await page.evaluate(() => { for (let i = 0; i < 20; i++) cc.track("tick", { i }); });
  await receiver.until(() => receiver.posts().length === 1, 5000);
  assert.ok(Date.now() - started < 500, "the 20th event triggers the send");
  assert.equal(receiver.posts()[0].body.events.length, 20);
  const t0 = Date.now();
  await page.evaluate(() => { cc.track("a"); cc.track("b"); cc.track("c"); });
  await receiver.until(() => receiver.posts().length === 2, 5000);
  const waited = Date.now() - t0;
  assert.ok(waited >= 450 && waited < 3000, `sent by the 600 ms timer, after ${waited} ms`);
  assert.deepEqual(receiver.posts()[1].body.events.map((e) => e.event), ["a", "b", "c"]);
});

test("1,000 events tracked at once are all delivered by one flush, in 50 batches of 20", async () => {
  // Every send is a keepalive request; the browser counts one against the
  // page's 64 KB until its answer is read, so a send loop that never reads
  // answers fails after a few batches.
  const { page } = await open();
  const report = await page.evaluate(async () => {
    for (let i = 0; i < 1000; i++) cc.track("bulk", { i, comment: "fine" });
    return cc.flush();
  });
  assert.deepEqual(report, { sent: 1000, failed: 0, pending: 0, dropped: 0 });
  assert.equal(receiver.posts().length, 50);
  assert.deepEqual(receiver.events().map((e) => e.properties.i), [...Array(1000).keys()], "in order");
});

test("429 with Retry-After is retried after the given wait, same batch id, attempt 2", async () => {
  const { page } = await open();
  receiver.respond({ status: 429, headers: { "retry-after": "1" } });
  await page.evaluate(() => { cc.track("a"); cc.track("b"); });
  const first = await page.evaluate(() => cc.flush());
  assert.deepEqual(first, { sent: 0, failed: 0, pending: 2, dropped: 0 });
  await receiver.until(() => receiver.posts().length === 2, 5000);
  const [a, b] = receiver.posts();
  assert.equal(b.body.batchId, a.body.batchId);
  assert.deepEqual(b.body.events.map((e) => e.id), a.body.events.map((e) => e.id), "same event ids");
  assert.deepEqual([a.body.attempt, b.body.attempt], [1, 2]);
  assert.ok(b.at - a.at >= 950, `waited ${b.at - a.at} ms for Retry-After: 1`);
  assert.ok(b.at - a.at < 2500, `but not much longer (${b.at - a.at} ms)`);
  assert.deepEqual(await page.evaluate(() => cc.flush()), { sent: 2, failed: 0, pending: 0, dropped: 0 });
});

test("500s are retried with exponential backoff from 0.5 s, within ±20 % jitter", async () => {
  const { page } = await open();
  receiver.respond({ status: 500 }, { status: 503 }, { status: 502 });
  await page.evaluate(() => cc.track("x"));
  await page.evaluate(() => cc.flush());
  await receiver.until(() => receiver.posts().length === 4, 8000);
  const posts = receiver.posts();
  const gaps = posts.slice(1).map((p, i) => p.at - posts[i].at);
  for (const [i, base] of [500, 1000, 2000].entries()) {
    assert.ok(gaps[i] >= base * 0.8 - 20 && gaps[i] <= base * 1.2 + 400, `retry ${i + 1} after ${gaps[i]} ms (base ${base})`);
  }
  assert.deepEqual(posts.map((p) => p.body.attempt), [1, 2, 3, 4]);
  assert.equal(new Set(posts.map((p) => p.body.batchId)).size, 1);
  assert.deepEqual(await page.evaluate(() => cc.flush()), { sent: 1, failed: 0, pending: 0, dropped: 0 });
});

test("a relay that is down (connection refused) gets the batch once it is back", async () => {
  const probe = await startReceiver();
  const { endpoint, port } = probe;
  await probe.close(); // nothing listens there now
  const { page } = await open({ endpoint, retry: { minDelay: 200, maxDelay: 400 } });
  await page.evaluate(() => { cc.track("while-down-1"); cc.track("while-down-2"); });
  assert.deepEqual(await page.evaluate(() => cc.flush()), { sent: 0, failed: 0, pending: 2, dropped: 0 });
  const back = await startReceiver(port);
  try {
    await back.until(() => back.events().length === 2, 5000);
    assert.deepEqual(back.events().map((e) => e.event), ["while-down-1", "while-down-2"]);
    assert.ok(back.posts()[0].body.attempt >= 2, "sent again, as a retry of the same batch");
    assert.deepEqual(await page.evaluate(() => cc.flush()), { sent: 2, failed: 0, pending: 0, dropped: 0 });
  } finally {
    await back.close();
  }
});

test("offline: nothing is sent and no retry is spent; back online, everything goes out by itself", async () => {
  const { page, context, logs } = await open({ debug: true });
  await context.setOffline(true);
  await page.waitForFunction(() => !navigator.onLine);
  await page.evaluate(() => { cc.track("offline-1"); cc.track("offline-2"); });
  assert.deepEqual(await page.evaluate(() => cc.flush()), { sent: 0, failed: 0, pending: 2, dropped: 0 });
  await new Promise((r) => setTimeout(r, 3000)); // long past the 0.5 s, 1 s and 2 s retry delays
  await page.evaluate(() => cc.track("offline-3"));
  assert.equal(receiver.posts().length, 0);
  assert.ok(!logs.some((l) => /retry \d+ in/.test(l)), "no retry was scheduled while offline");
  await context.setOffline(false);
  await receiver.until(() => receiver.events().length === 3, 8000);
  assert.deepEqual(receiver.events().map((e) => e.event), ["offline-1", "offline-2", "offline-3"]);
  assert.deepEqual(receiver.posts().map((p) => p.body.attempt), receiver.posts().map(() => 1), "first attempts, not retries");
});

test("events tracked right before navigating away are sent on the way out (keepalive), 10 of 10 trials", async () => {
  const { page } = await open();
  for (let trial = 0; trial < 10; trial++) {
    await page.goto(`${site.url}/sdk.html#${encodeURIComponent(JSON.stringify({ endpoint: receiver.endpoint, writeKey: "pk_test" }))}`);
    await page.waitForFunction(() => window.cc);
    const id = await page.evaluate((trial) => {
      const id = cc.shoutoutClicked({ shoutoutId: `promo-${trial}`, action: "link" });
      location.href = "/elsewhere.html"; // within the same task: no time to flush normally
      return id;
    }, trial);
    await page.waitForURL(/elsewhere/);
    await receiver.until(() => receiver.events().some((e) => e.id === id), 5000);
  }
  const ids = receiver.events().map((e) => e.id);
  assert.equal(new Set(ids).size, 10, "each event once");
});

test("a page that tracks 200 events and closes sends what fits in the 60 KB keepalive budget, and no more", async () => {
  // Nothing leaves before the close: all 200 events (~100 KB) wait in the queue.
  const { page } = await open({ flushAt: 1000, flushInterval: 3_600_000, maxBatchBytes: 512 * 1024 });
  await page.evaluate(() => { for (let i = 0; i < 200; i++) cc.track("bulk", { i, note: "x".repeat(300) }); });
  assert.equal(receiver.posts().length, 0);
  await page.close({ runBeforeUnload: false });
  await new Promise((r) => setTimeout(r, 1500));
  const posts = receiver.posts();
  const bytes = posts.reduce((sum, p) => sum + Buffer.byteLength(p.raw), 0);
  assert.ok(posts.length >= 1, "the queue was sent on close");
  assert.ok(bytes <= 60 * 1024, `keepalive bodies in flight stay within 60 KB: ${bytes} bytes`);
  assert.ok(bytes > 40 * 1024, `and the budget is used: ${bytes} bytes`);
  const sent = posts.flatMap((p) => p.body.events.map((e) => e.properties.i));
  assert.deepEqual(sent, sent.map((_, k) => k), "the oldest events, in order");
  assert.ok(sent.length < 200, `the rest did not fit (${sent.length} of 200 sent); durable.test.mjs checks the next page sends it`);
});

test("load(): calls made before the module has loaded are queued and replayed in order", async () => {
  const { page, logs } = await open({}, "early.html");
  assert.deepEqual(await page.evaluate(() => window.earlyReturns), [undefined, undefined, undefined, undefined], "buffered calls return undefined");
  assert.deepEqual(await page.evaluate(() => cc.flush()), { sent: 3, failed: 0, pending: 0, dropped: 0 });
  const events = receiver.events();
  assert.deepEqual(events.map((e) => e.event), ["app.started", "user.identified", "shoutout.clicked"]);
  assert.equal(events[0].userId, undefined);
  assert.equal(events[2].userId, "user-7", "replayed in order: identify took effect before the click");
  assert.deepEqual(events[2].properties, { shoutoutId: "welcome", action: "cta" });
  assert.ok(logs.some((l) => l.startsWith("warning: [cuecast] a call made before loading was refused:") && l.includes("shoutoutId is required")), logs.join("\n"));
  // Once loaded, calls go straight through and return the id.
  assert.match(await page.evaluate(() => cc.track("later")), /^[0-9a-f-]{36}$/);
});

test("400 drops the batch, reports it failed, and never retries it", async () => {
  const { page } = await open();
  receiver.respond({ status: 400 });
  await page.evaluate(() => { cc.track("a"); cc.track("b"); cc.track("c"); });
  assert.deepEqual(await page.evaluate(() => cc.flush()), { sent: 0, failed: 3, pending: 0, dropped: 0 });
  await new Promise((r) => setTimeout(r, 1200));
  assert.equal(receiver.posts().length, 1, "no retry of a 400");
  await page.evaluate(() => cc.track("d"));
  assert.deepEqual(await page.evaluate(() => cc.flush()), { sent: 1, failed: 0, pending: 0, dropped: 0 });
});

test("413 splits the batch in halves that keep their events", async () => {
  const { page } = await open();
  receiver.respond({ status: 413 });
  await page.evaluate(() => { for (const n of ["a", "b", "c", "d"]) cc.track(n); });
  const report = await page.evaluate(() => cc.flush());
  assert.deepEqual(report, { sent: 4, failed: 0, pending: 0, dropped: 0 }, "the same flush sends both halves");
  const [whole, first, second] = receiver.posts().map((p) => p.body);
  assert.deepEqual(whole.events.map((e) => e.event), ["a", "b", "c", "d"]);
  assert.deepEqual(first.events.map((e) => e.event), ["a", "b"]);
  assert.deepEqual(second.events.map((e) => e.event), ["c", "d"]);
  assert.deepEqual([...first.events, ...second.events].map((e) => e.id), whole.events.map((e) => e.id));
  assert.notEqual(first.batchId, whole.batchId);
  assert.deepEqual([first.attempt, second.attempt], [1, 1], "each half is a new batch");
});

test("every bad input throws a CuecastError naming the field, and nothing is queued", async () => {
  const { page } = await open();
  const cases = [
    ["cc.track('')", "event", "cuecast.track: event must be a non-empty string"],
    ["cc.track(42)", "event", "cuecast.track: event must be a non-empty string"],
    ["cc.track('x'.repeat(201))", "event", "cuecast.track: event must be at most 200 characters, got 201"],
    ["cc.track('ok', { fn: () => 1 })", "properties.fn", "cuecast.track: properties.fn is a function, which cannot be sent"],
    ["cc.track('ok', { s: Symbol('s') })", "properties.s", "cuecast.track: properties.s is a Symbol, which cannot be sent"],
    ["const o = { a: {} }; o.a.back = o; cc.track('ok', o)", "properties.a.back", "cuecast.track: properties.a.back refers back to itself (a cycle), which cannot be sent"],
    ["cc.track('ok', { big: 2 ** 53 + 2 })", "properties.big", "cuecast.track: properties.big is an integer beyond 2^53 - 1, which JSON cannot carry exactly; send it as a string"],
    ["cc.track('ok', { n: NaN })", "properties.n", "cuecast.track: properties.n must be a finite number, got NaN or Infinity"],
    ["cc.track('ok', { b: 10n })", "properties.b", "cuecast.track: properties.b is a BigInt; send it as a string or a number"],
    ["cc.track('ok', { m: new Map() })", "properties.m", "cuecast.track: properties.m is a Map or Set; convert it to a plain object or array"],
    ["cc.track('ok', { list: [1, () => 2] })", "properties.list[1]", "cuecast.track: properties.list[1] is a function, which cannot be sent"],
    ["cc.track('ok', { blob: 'x'.repeat(33000) })", "properties", null],
    ["cc.track('ok', [1, 2])", "properties", "cuecast.track: properties must be an object, got an array"],
    ["cc.shoutoutClicked({})", "shoutoutId", "cuecast.shoutoutClicked: shoutoutId is required"],
    ["cc.shoutoutClicked({ shoutoutId: 'p', action: 'close' })", "action", "cuecast.shoutoutClicked: action must be one of cta, dismiss, link, got \"close\""],
    ["cc.shoutoutClicked('spring')", "", "cuecast.shoutoutClicked: expects an object, got \"spring\""],
    ["cc.surveySubmitted({ surveyId: 'nps', kind: 'nps', score: 11 })", "score", "cuecast.surveySubmitted: score must be an integer from 0 to 10, got 11"],
    ["cc.surveySubmitted({ surveyId: 'nps', kind: 'nps', score: 7.5 })", "score", "cuecast.surveySubmitted: score must be an integer from 0 to 10, got 7.5"],
    ["cc.surveySubmitted({ kind: 'nps', score: 7 })", "surveyId", "cuecast.surveySubmitted: surveyId is required"],
    ["cc.surveySubmitted({ surveyId: 's', answers: [{ answer: 'Yes' }] })", "answers[0].questionId", "cuecast.surveySubmitted: answers[0].questionId is required"],
    ["cc.surveySubmitted({ surveyId: 's', score: 3, needsHelp: 'yes' })", "needsHelp", "cuecast.surveySubmitted: needsHelp must be a boolean, got \"yes\""],
    ["cc.onboardingTaskCompleted({ taskId: 't', completed: 6, total: 5 })", "completed", "cuecast.onboardingTaskCompleted: completed must not exceed total (5), got 6"],
    ["cc.onboardingTaskCompleted({ checklistId: 'c' })", "taskId", "cuecast.onboardingTaskCompleted: taskId is required"],
    ["cc.walkthruGoalReached({ goal: 'g' })", "walkthruId", "cuecast.walkthruGoalReached: walkthruId is required"],
    ["cc.identify('')", "userId", "cuecast.identify: userId must be a non-empty string, got \"\""],
    ["cc.identify('u', 'pro')", "traits", "cuecast.identify: traits must be an object, got \"pro\""],
  ];
  for (const [src, field, message] of cases) {
    const err = await thrown(page, src);
    assert.ok(err, `${src} should throw`);
    assert.equal(err.name, "CuecastError", src);
    assert.equal(err.field, field, src);
    if (message) assert.equal(err.message, message, src);
    else assert.match(err.message, /is too large \(\d+ bytes, the limit is 32768\)/, src);
  }
  assert.deepEqual(await page.evaluate(() => cc.flush()), { sent: 0, failed: 0, pending: 0, dropped: 0 });
  assert.equal(receiver.posts().length, 0, "nothing was queued");
});

test("init() rejects a missing or non-http(s) endpoint and a missing write key, naming the field", async () => {
  const { page } = await open();
  const rejections = await page.evaluate(async () => {
    const { init } = await import("cuecast");
    const out = [];
    for (const options of [
      { writeKey: "pk" },
      { endpoint: "ftp://relay.example.com/v1/batch", writeKey: "pk" },
      { endpoint: "javascript:alert(1)", writeKey: "pk" },
      { endpoint: "https://relay.example.com/v1/batch" },
      { endpoint: "https://relay.example.com/v1/batch", writeKey: "pk", flushAt: 0 },
      { endpoint: "https://relay.example.com/v1/batch", writekey: "pk" },
      undefined,
    ]) {
      try { await init(options); out.push(null); } catch (e) { out.push([e.name, e.field, e.message]); }
    }
    return out;
  });
  assert.deepEqual(rejections, [
    ["CuecastError", "endpoint", "cuecast.init: endpoint is required"],
    ["CuecastError", "endpoint", 'cuecast.init: endpoint must be an http:// or https:// URL, got "ftp://relay.example.com/v1/batch"'],
    ["CuecastError", "endpoint", 'cuecast.init: endpoint must be an http:// or https:// URL, got "javascript:alert(1)"'],
    ["CuecastError", "writeKey", "cuecast.init: writeKey is required"],
    ["CuecastError", "flushAt", "cuecast.init: flushAt must be an integer from 1 to 1000, got 0"],
    ["CuecastError", "writekey", "cuecast.init: writekey is not an option (known: endpoint, writeKey, flushAt, flushInterval, maxBatchBytes, maxQueueEvents, maxQueueBytes, sessionTimeout, autoCapture, debug, retry)"],
    ["CuecastError", "options", "cuecast.init: options must be an object {endpoint, writeKey}, got null"],
  ]);
});

test("a path endpoint is resolved against the page; a host without a scheme is rejected", async () => {
  const { page, logs } = await open();
  const result = await page.evaluate(async () => {
    const { init } = await import("cuecast");
    await init({ endpoint: "/v1/batch", writeKey: "pk_other", debug: true, autoCapture: false });
    try {
      await init({ endpoint: "relay.example.com/v1/batch", writeKey: "pk" });
      return null;
    } catch (e) {
      return e.message;
    }
  });
  assert.ok(logs.some((l) => l.includes(`ready: sending to ${site.url}/v1/batch`)), logs.join("\n"));
  assert.equal(result, 'cuecast.init: endpoint must be an http:// or https:// URL, got "relay.example.com/v1/batch"');
});

test("init() twice for the same relay returns the running client: clicks are captured once", async () => {
  const { page } = await open();
  await page.evaluate(async (endpoint) => {
    const { init } = await import("cuecast");
    window.cc2 = await init({ endpoint, writeKey: "pk_test" });
  }, receiver.endpoint);
  await page.click("#promo-cta");
  await page.evaluate(() => cc2.flush());
  assert.equal(receiver.events().length, 1);
});

test("a client the page does not keep survives garbage collection and keeps capturing", async () => {
  const { page } = await open({ flushInterval: 200 }, "forgotten.html");
  for (let i = 0; i < 5; i++) {
    await page.evaluate(() => { globalThis.gc(); return new Promise((r) => setTimeout(r, 20)); });
  }
  await page.click("#promo");
  await receiver.until(() => receiver.events().length === 1, 5000);
  assert.deepEqual(receiver.events()[0].properties, { shoutoutId: "kept-alive", action: "cta" });
});

test("a misconfigured data attribute is skipped with a console warning, never an exception", async () => {
  const { page, logs } = await open();
  await page.click("#bad-action");
  assert.deepEqual(await page.evaluate(() => cc.flush()), { sent: 0, failed: 0, pending: 0, dropped: 0 });
  assert.ok(logs.some((l) => l.startsWith("warning: [cuecast] auto-capture skipped shoutout.clicked: action must be one of")), logs.join("\n"));
});

test("an event tracked while a batch waits for its retry does not delay the retry", async () => {
  const { page } = await open();
  receiver.respond({ status: 500 });
  await page.evaluate(() => cc.track("first"));
  await page.evaluate(() => cc.flush());
  const failedAt = receiver.posts()[0].at;
  await new Promise((r) => setTimeout(r, 100));
  await page.evaluate(() => cc.track("second"));
  await receiver.until(() => receiver.posts().length === 2, 3000);
  const retry = receiver.posts()[1];
  assert.ok(retry.at - failedAt < 1500, `retried after ${retry.at - failedAt} ms, not after the 5 s flush interval`);
  assert.deepEqual(retry.body.events.map((e) => e.event), ["first"]);
});

test("an opt-out in one tab holds in the other tabs of the origin", async () => {
  const { page, context } = await open();
  const other = await context.newPage();
  await other.goto(page.url());
  await other.waitForFunction(() => window.cc);
  await page.evaluate(() => cc.optOut());
  const poll = { timeout: 5000, polling: 50 };
  await other.waitForFunction(() => window.cc.track("probe-out") === undefined, null, poll);
  // Probes tracked before the opt-out reached this tab are dropped with it, never sent.
  const report = await other.evaluate(() => cc.flush());
  const { dropped, droppedWhy, ...rest } = report;
  assert.deepEqual(rest, { sent: 0, failed: 0, pending: 0 }, JSON.stringify(report));
  if (dropped) assert.equal(droppedWhy, "the user opted out");
  assert.equal(receiver.posts().length, 0);
  await page.evaluate(() => cc.optIn());
  await other.waitForFunction(() => typeof window.cc.track("probe-in") === "string", null, poll);
  await other.evaluate(() => cc.flush());
  assert.deepEqual(receiver.events().map((e) => e.event), ["probe-in"]);
});

test("identity persists across reloads; reset() forgets it; optOut() stops tracking and is remembered", async () => {
  const { page } = await open();
  await page.evaluate(() => { cc.identify("user-7", { plan: "team" }); cc.track("before"); });
  await page.evaluate(() => cc.flush());
  await page.reload();
  await page.waitForFunction(() => window.cc);
  await page.evaluate(() => cc.track("after-reload"));
  await page.evaluate(() => cc.flush());
  let [identified, before, afterReload] = receiver.events();
  assert.equal(afterReload.userId, "user-7");
  assert.equal(afterReload.anonymousId, before.anonymousId);
  assert.equal(afterReload.sessionId, before.sessionId, "a reload within 30 minutes keeps the session");
  assert.equal(identified.event, "user.identified");

  await page.evaluate(() => { cc.reset(); cc.track("after-reset"); });
  await page.evaluate(() => cc.flush());
  const afterReset = receiver.events().at(-1);
  assert.equal(afterReset.userId, undefined);
  assert.notEqual(afterReset.anonymousId, before.anonymousId);
  assert.notEqual(afterReset.sessionId, before.sessionId);

  await page.evaluate(() => { cc.track("queued-then-dropped"); cc.optOut(); });
  const id = await page.evaluate(() => cc.track("while-out"));
  assert.equal(id, undefined);
  // Dropped: "queued-then-dropped", and possibly copies of events already sent
  // whose deletion had not reached IndexedDB when the page reloaded (adopted,
  // leased for a resend): the opt-out drops those too, and nothing is sent.
  const outReport = await page.evaluate(() => cc.flush());
  const { dropped: droppedOut, ...outRest } = outReport;
  assert.deepEqual(outRest, { sent: 0, failed: 0, pending: 0, droppedWhy: "the user opted out" }, JSON.stringify(outReport));
  assert.ok(droppedOut >= 1, JSON.stringify(outReport));
  await page.reload();
  await page.waitForFunction(() => window.cc);
  await page.evaluate(() => cc.track("still-out"));
  const stillOut = await page.evaluate(() => cc.flush());
  const { dropped: droppedStill, droppedWhy: whyStill, ...stillRest } = stillOut;
  assert.deepEqual(stillRest, { sent: 0, failed: 0, pending: 0 }, JSON.stringify(stillOut));
  if (droppedStill) assert.equal(whyStill, "the user opted out");
  await page.evaluate(() => { cc.optIn(); cc.track("back-in"); });
  await page.evaluate(() => cc.flush());
  assert.deepEqual(receiver.events().slice(3).map((e) => e.event), ["after-reset", "back-in"]);
});

test("debug: true logs what is queued, sent, retried and dropped", async () => {
  const { page, logs } = await open({ debug: true });
  receiver.respond({ status: 500 }, { status: 400 });
  await page.evaluate(() => cc.track("x"));
  await page.evaluate(() => cc.flush());
  await page.evaluate(() => cc.flush());
  const text = logs.join("\n");
  for (const needle of [/queued [0-9a-f-]{36}/, /sending batch .* \(1 events, attempt 1\)/, /got 500; retry 2 in \d+ ms/, /dropped batch .*status 400/]) {
    assert.match(text, needle);
  }
});
