// The whole chain as a user builds it: a product page (tests/browser/app/) built by Vite from
// a package.json that installs the packed `cuecast` tarball, served from dist/ on loopback and
// clicked through in Chromium; the relay binary (embedded SQLite) delivers to five local
// receivers standing in for Slack, Zendesk, a marketing-list API, a spreadsheet web app (GET)
// and an e-mail API. Each receiver checks the Standard Webhooks signature with its own secret,
// and must get exactly the requests the clicks call for, with the rendered bodies.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startReceiver, startSite, startRelay, launchChromium, verifySignature } from "./harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, "app/dist");
const services = ["slack", "zendesk", "marketing", "sheet", "email"];
const secrets = Object.fromEntries(services.map((s) => [s, `whsec_${crypto.randomBytes(24).toString("base64")}`]));

let browser, site, relay;
const hooks = {};

before(async () => {
  assert.ok(fs.existsSync(path.join(dist, "index.html")), "tests/browser/app/dist is built by cargo xtask test (vite build)");
  [browser, site] = await Promise.all([launchChromium(), startSite({ roots: { "/": dist } })]);
  for (const s of services) hooks[s] = await startReceiver();
  // The five use cases of examples/relay/configs/, pointed at the local receivers.
  relay = await startRelay(({ listen, dir }) => `
listen = "${listen}"
storage = "sqlite://${dir}/cuecast.db"
[egress]
allow_cidrs = ["127.0.0.0/8"]
[[source]]
write_key = "pk_live_app"
origins = ["${site.url}"]

[[webhook]]
id = "slack-shoutout-cta"
events = ["shoutout.clicked"]
when = "properties.action == 'cta'"
url = "${hooks.slack.url}/services/T000/B000/XXXX"
body = '''{"text": ":mega: {{ userId or anonymousId }} clicked the call to action of ShoutOut {{ properties.shoutoutId }} on {{ context.page.path }}"}'''
secret = "${secrets.slack}"

[[webhook]]
id = "zendesk-nps-help"
events = ["survey.submitted"]
when = "properties.kind == 'nps' and properties.needsHelp"
url = "${hooks.zendesk.url}/api/v2/tickets.json"
headers = { Authorization = "Basic c3VwcG9ydEBhY21lLmV4YW1wbGUvdG9rZW46c2VjcmV0" }
body = '''
{"ticket": {
  "subject": "Help requested in survey {{ properties.surveyId }} (score {{ properties.score }})",
  "comment": {"body": "User {{ userId or anonymousId }} asked for help{% if properties.comment %}: {{ properties.comment }}{% endif %} (page {{ context.page.url }})"},
  "external_id": "{{ id }}",
  "tags": ["cuecast", "survey-{{ properties.surveyId }}"]}}
'''
secret = "${secrets.zendesk}"

[[webhook]]
id = "marketing-onboarding"
events = ["onboarding.task_completed"]
url = "${hooks.marketing.url}/3.0/lists/abc123/members"
headers = { Authorization = "Bearer mk-test-token" }
body = '''{"external_id": "{{ userId }}", "status_if_new": "subscribed", "tags": ["onboarding-{{ properties.taskId }}", "checklist-{{ properties.checklistId }}"]}'''
secret = "${secrets.marketing}"

[[webhook]]
id = "sheet-nps"
events = ["survey.*"]
when = "properties.kind == 'nps'"
method = "GET"
url = "${hooks.sheet.url}/macros/s/acme-nps/exec?user={{ userId }}&score={{ properties.score }}&help={{ 'yes' if properties.needsHelp else 'no' }}&comment={{ properties.comment }}&event={{ id }}"
secret = "${secrets.sheet}"

[[webhook]]
id = "email-walkthru-goal"
events = ["walkthru.goal_reached"]
url = "${hooks.email.url}/v3/mail/send"
headers = { Authorization = "Bearer SG.test-key" }
body = '''
{"personalizations": [{"to": [{"email": "success-team@acme.example"}]}],
 "from": {"email": "cuecast@acme.example"},
 "subject": "{{ userId }} finished the walk-through {{ properties.walkthruId }}",
 "content": [{"type": "text/plain", "value": "Goal {{ properties.goal }} reached at {{ timestamp }}."}]}
'''
secret = "${secrets.email}"
`);
});

after(async () => {
  await relay?.stop();
  relay?.cleanup();
  await browser?.close();
  await Promise.all([site?.close(), ...Object.values(hooks).map((h) => h.close())]);
});

/** Waits until every receiver has at least its expected count, then a quiet period for extras. */
async function settle(expected, timeoutMs = 60_000, quietMs = 2_000) {
  const deadline = Date.now() + timeoutMs;
  for (const [s, n] of Object.entries(expected)) {
    await hooks[s].until(() => hooks[s].requests.length >= n, Math.max(1, deadline - Date.now())).catch(() => {});
  }
  await new Promise((r) => setTimeout(r, quietMs));
  const got = Object.fromEntries(services.map((s) => [s, hooks[s].requests.map((r) => `${r.method} ${r.url}`)]));
  for (const [s, n] of Object.entries(expected)) {
    assert.equal(hooks[s].requests.length, n, `${s}: expected ${n} requests, got ${JSON.stringify(got, null, 1)}\nrelay: ${relay.stderr()}`);
  }
}

test("a user's clicks in the Vite-built app reach Slack, Zendesk, the marketing list, the sheet and e-mail, once each, rendered and signed", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  const pageUrl = `${site.url}/?relay=${encodeURIComponent(relay.endpoint)}&key=pk_live_app`;
  await page.goto(pageUrl);
  await page.waitForSelector("body[data-ready=true]", { timeout: 30_000 });

  // Two ShoutOuts: one dismissed (no Slack message), one call to action.
  await page.click("#news-dismiss");
  await page.click("#promo-cta");
  // NPS 4 with a comment and a request for help: a Zendesk ticket and a sheet row.
  await page.check("#score-4");
  await page.fill("textarea[name=comment]", 'Exports of "large" invoices time out & fail');
  await page.check("input[name=needsHelp]");
  await page.click("#nps-submit");
  // A non-NPS survey (captured from the form): neither Zendesk nor the sheet.
  await page.click("#feedback-submit");
  // Two of the three onboarding tasks: two marketing-list calls.
  await page.click("#task-profile");
  await page.click("#task-crm");
  // The walk-through to its goal: one e-mail.
  await page.click("#walkthru .step[data-step='1'] .next");
  await page.click("#walkthru .step[data-step='2'] .next");
  await page.click("#send-invoice");
  assert.equal(await page.textContent("#progress"), "2/3");

  // The SDK sends within 5 s of the first queued event; the relay delivers at once.
  await settle({ slack: 1, zendesk: 1, marketing: 2, sheet: 1, email: 1 });

  const all = services.flatMap((s) => hooks[s].requests.map((r) => ({ s, r })));
  for (const { s, r } of all) {
    assert.ok(verifySignature(r, secrets[s], r.method === "GET" ? r.url : r.raw), `${s}: the signature verifies with its own secret`);
    assert.equal(r.headers["user-agent"]?.startsWith("cuecast-relay/"), true);
  }
  assert.equal(new Set(all.map(({ r }) => r.headers["webhook-id"])).size, all.length, "one webhook-id per delivery");

  const [slack] = hooks.slack.requests;
  assert.equal(slack.method, "POST");
  assert.equal(slack.headers["content-type"], "application/json");
  assert.deepEqual(slack.body, { text: ":mega: user-42 clicked the call to action of ShoutOut spring-promo on /" });

  const [zendesk] = hooks.zendesk.requests;
  assert.equal(zendesk.headers.authorization, "Basic c3VwcG9ydEBhY21lLmV4YW1wbGUvdG9rZW46c2VjcmV0");
  const eventId = zendesk.body?.ticket?.external_id;
  assert.match(eventId ?? "", /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, "the event's UUIDv7");
  assert.deepEqual(zendesk.body, {
    ticket: {
      subject: "Help requested in survey nps-2026-q4 (score 4)",
      comment: { body: `User user-42 asked for help: Exports of "large" invoices time out & fail (page ${pageUrl})` },
      external_id: eventId,
      tags: ["cuecast", "survey-nps-2026-q4"],
    },
  });

  const [sheet] = hooks.sheet.requests;
  assert.equal(sheet.method, "GET");
  const query = new URL(sheet.url, "http://x");
  assert.equal(query.pathname, "/macros/s/acme-nps/exec");
  assert.deepEqual(Object.fromEntries(query.searchParams), {
    user: "user-42", score: "4", help: "yes", comment: 'Exports of "large" invoices time out & fail', event: eventId,
  });

  assert.deepEqual(
    hooks.marketing.requests.map((r) => [r.method, r.url, r.headers.authorization, r.body]).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
    ["complete-profile", "connect-crm"].map((task) => ["POST", "/3.0/lists/abc123/members", "Bearer mk-test-token", {
      external_id: "user-42", status_if_new: "subscribed", tags: [`onboarding-${task}`, "checklist-getting-started"],
    }]),
  );

  const [email] = hooks.email.requests;
  assert.equal(email.url, "/v3/mail/send");
  assert.equal(email.headers.authorization, "Bearer SG.test-key");
  const sentAt = email.body?.content?.[0]?.value?.match(/reached at (.*)\.$/)?.[1];
  assert.ok(sentAt && Math.abs(Date.parse(sentAt) - Date.now()) < 120_000, `the event's timestamp, got ${sentAt}`);
  assert.deepEqual(email.body, {
    personalizations: [{ to: [{ email: "success-team@acme.example" }] }],
    from: { email: "cuecast@acme.example" },
    subject: "user-42 finished the walk-through create-invoice",
    content: [{ type: "text/plain", value: `Goal invoice-sent reached at ${sentAt}.` }],
  });

  assert.deepEqual(errors, [], "no errors in the page");
  await context.close();
});
