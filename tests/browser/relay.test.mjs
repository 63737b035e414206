// The whole chain on loopback: the packed SDK in Chromium → the real relay
// binary (embedded SQLite) → webhook receivers, with signatures verified by
// the harness's `verifySignature` (Standard Webhooks, written from the spec,
// not taken from the relay).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import { startReceiver, startSite, launchChromium, openPage, startRelay, verifySignature } from "./harness.mjs";

const SECRET = "whsec_" + Buffer.from("cuecast-browser-test-secret-32b!").toString("base64");

let browser, site, hooks, relay, relayUrl;

before(async () => {
  [browser, site, hooks] = await Promise.all([launchChromium(), startSite(), startReceiver()]);
  relay = await startRelay(({ listen, dir }) => `
listen = "${listen}"
storage = "sqlite://${dir}/cuecast.db"
[egress]
allow_cidrs = ["127.0.0.0/8"]
[[source]]
write_key = "pk_live_chain"
origins = ["${site.url}"]
[[source]]
write_key = "pk_other_site"
origins = ["https://app.example.com"]
[[webhook]]
id = "slack-nps-detractors"
events = ["survey.submitted"]
when = "properties.kind == 'nps' and properties.score <= 6"
url = "${hooks.url}/slack"
body = '''{"text": "NPS {{ properties.score }} from {{ userId or anonymousId }}: {{ properties.comment }}"}'''
secret = "${SECRET}"
[[webhook]]
id = "sheet-onboarding"
events = ["onboarding.*"]
method = "GET"
url = "${hooks.url}/sheet?user={{ userId }}&task={{ properties.taskId }}"
secret = "${SECRET}"
`);
  relayUrl = relay.url;
});

after(async () => {
  await relay?.stop();
  relay?.cleanup();
  await browser.close();
  await Promise.all([site.close(), hooks.close()]);
});

const verify = (req, signedContent) => verifySignature(req, SECRET, signedContent);

test("events tracked in the page reach the webhooks through the relay, rendered and signed", async () => {
  const { page, context } = await openPage(browser, site, { endpoint: `${relayUrl}/v1/batch` }, { writeKey: "pk_live_chain" });
  await page.evaluate(() => {
    cc.identify("user-42");
    cc.surveySubmitted({ surveyId: "nps-q3", kind: "nps", score: 3, comment: "too slow" });
    cc.surveySubmitted({ surveyId: "nps-q3", kind: "nps", score: 9 }); // a promoter: no Slack message
    cc.onboardingTaskCompleted({ taskId: "connect-crm", checklistId: "getting-started" });
  });
  assert.deepEqual(await page.evaluate(() => cc.flush()), { sent: 4, failed: 0, pending: 0, dropped: 0 });
  await hooks.until(() => hooks.requests.length >= 2, 10_000);
  await new Promise((r) => setTimeout(r, 300)); // nothing else may arrive
  assert.equal(hooks.requests.length, 2, JSON.stringify(hooks.requests.map((r) => r.url)));
  const slack = hooks.requests.find((r) => r.url === "/slack");
  assert.equal(slack.method, "POST");
  assert.deepEqual(slack.body, { text: "NPS 3 from user-42: too slow" });
  assert.ok(verify(slack, slack.raw), "Slack request signature verifies");
  const sheet = hooks.requests.find((r) => r.url.startsWith("/sheet"));
  assert.equal(sheet.method, "GET");
  assert.equal(sheet.url, "/sheet?user=user-42&task=connect-crm");
  assert.ok(verify(sheet, sheet.url), "GET signs the request target");
  await context.close();
});

test("a write key the relay does not know is refused (401) and reported as failed", async () => {
  const { page, context } = await openPage(browser, site, { endpoint: `${relayUrl}/v1/batch` }, { writeKey: "pk_unknown" });
  await page.evaluate(() => cc.track("x"));
  assert.deepEqual(await page.evaluate(() => cc.flush()), { sent: 0, failed: 1, pending: 0, dropped: 0 });
  await context.close();
});

test("a page on an origin the write key does not allow reads the 403 and drops the batch instead of retrying", async () => {
  const { page, context } = await openPage(browser, site, { endpoint: `${relayUrl}/v1/batch` }, { writeKey: "pk_other_site" });
  await page.evaluate(() => cc.track("x"));
  assert.deepEqual(await page.evaluate(() => cc.flush()), { sent: 0, failed: 1, pending: 0, dropped: 0 });
  await context.close();
});

test("a resent batch is recognised by the relay: each event reaches the webhook once", async () => {
  hooks.reset();
  const { page, context } = await openPage(browser, site, { endpoint: `${relayUrl}/v1/batch` }, { writeKey: "pk_live_chain" });
  // Send the same batch body twice, as a retry after a lost answer would.
  const statuses = await page.evaluate(async (endpoint) => {
    const id = crypto.randomUUID();
    const body = JSON.stringify({
      v: 1, writeKey: "pk_live_chain", batchId: crypto.randomUUID(), sentAt: new Date().toISOString(), attempt: 1,
      sdk: { name: "cuecast", version: "0.1.0" },
      events: [{ id, event: "onboarding.task_completed", timestamp: new Date().toISOString(), anonymousId: "a-1", userId: "u-1",
        properties: { taskId: "import" }, context: {}, traits: {} }],
    });
    const out = [];
    for (let i = 0; i < 2; i++) {
      const r = await fetch(endpoint, { method: "POST", body, headers: { "content-type": "text/plain" } });
      out.push([r.status, await r.json()]);
    }
    return out;
  }, `${relayUrl}/v1/batch`);
  assert.deepEqual(statuses, [[202, { accepted: 1, duplicates: 0 }], [202, { accepted: 0, duplicates: 1 }]]);
  await hooks.until(() => hooks.requests.length >= 1, 10_000);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(hooks.requests.length, 1);
  await context.close();
});
