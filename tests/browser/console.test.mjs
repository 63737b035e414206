// The web console (/console) in headless Chromium against the real relay
// binary (embedded SQLite, admin token set) and a loopback webhook receiver:
// sign in, create a webhook through the form (a bad URL's error first), send
// an event, watch it delivered; make the receiver fail, watch the retries
// and the dead letter, replay it from the dead letters; events and sources.
// Screenshots of every page at desktop width and at 360 px are written to
// target/console-screenshots/ for a person to look at.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { startReceiver, launchChromium, startRelay, verifySignature } from "./harness.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const shots = path.resolve(here, "../../target/console-screenshots");
const TOKEN = `adm-${crypto.randomBytes(12).toString("hex")}`;
const WRITE_KEY = "pk_console_test";
const HOOK = "console-hook";

let browser, hooks, relay, context, page;
const logs = [];
const requested = [];
let secret = null;
const sent = []; // event ids, in the order sent

before(async () => {
  [browser, hooks] = await Promise.all([launchChromium(), startReceiver()]);
  relay = await startRelay(({ listen, dir }) => `
listen = "${listen}"
storage = "sqlite://${dir}/cuecast.db"
[admin]
token = "${TOKEN}"
[egress]
allow_cidrs = ["127.0.0.0/8"]
[limits]
sweep_interval = "200ms"
[[source]]
write_key = "${WRITE_KEY}"
origins = ["*"]
`);
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  // Anything the CSP blocks (it allows the relay's own files only) ends up in `logs`.
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));
  });
  page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  page.on("request", (r) => requested.push(r.url()));
  fs.mkdirSync(shots, { recursive: true });
});

after(async () => {
  await context?.close();
  await browser?.close();
  await relay?.stop();
  relay?.cleanup();
  await hooks?.close();
});

/** Sends one `survey.submitted` event as the SDK does (wire v1, text/plain); returns its id, or the status when not 202. */
async function sendEvent(score, writeKey = WRITE_KEY) {
  const id = crypto.randomUUID();
  const batch = {
    v: 1, writeKey, batchId: crypto.randomUUID(), sentAt: new Date().toISOString(), attempt: 1,
    sdk: { name: "cuecast", version: "0.1.0" },
    events: [{ id, event: "survey.submitted", timestamp: new Date().toISOString(), anonymousId: "anon-console", userId: "user-console",
      properties: { surveyId: "nps-q4", kind: "nps", score, comment: `<b>score ${score}</b>` }, context: {}, traits: {} }],
  };
  const r = await fetch(relay.endpoint, {
    method: "POST", body: JSON.stringify(batch), headers: { "content-type": "text/plain;charset=UTF-8", origin: "https://app.example.com" },
  });
  if (writeKey !== WRITE_KEY) return r.status;
  assert.equal(r.status, 202, await r.text());
  sent.push(id);
  return id;
}

/** Waits until the deliveries list shows the delivery of `eventId` with `status`, as the page polls. */
async function rowStatus(eventId, status, timeout = 15_000) {
  await page.waitForFunction(([id, want]) => {
    const row = document.querySelector(`tbody tr:has(a[href="#/events/${id}"])`);
    return row?.querySelector(".badge")?.textContent === want;
  }, [eventId, status], { timeout });
  return page.locator(`tbody tr:has(a[href="#/events/${eventId}"])`);
}

/** The error text shown next to the input labelled `label` (via its aria-describedby). */
async function errorOf(label) {
  return page.getByLabel(label, { exact: true }).evaluate((input) =>
    (input.getAttribute("aria-describedby") ?? "").split(" ").map((id) => document.getElementById(id))
      .filter((el) => el?.classList.contains("field-error") && !el.hidden).map((el) => el.textContent).join(" "));
}

async function ready() {
  await page.waitForSelector("main[data-state=ready]");
}

test("/console serves the page and its assets with their types, a strict CSP and cache headers; off without a token", async () => {
  const index = await fetch(`${relay.url}/console`);
  assert.equal(index.status, 200);
  assert.equal(index.headers.get("content-type"), "text/html; charset=utf-8");
  assert.equal(index.headers.get("cache-control"), "no-cache");
  assert.match(index.headers.get("content-security-policy"), /default-src 'none'; script-src 'self';/);
  const html = await index.text();
  assert.equal((await fetch(`${relay.url}/console/`)).status, 200);
  const assets = [...html.matchAll(/(?:src|href)="(\/console\/[^"]+\?v=[0-9a-f]+)"/g)].map((m) => m[1]);
  assert.equal(assets.length, 2, html);
  for (const asset of assets) {
    const r = await fetch(relay.url + asset);
    assert.equal(r.status, 200, asset);
    assert.match(r.headers.get("content-type"), asset.includes(".js") ? /^text\/javascript/ : /^text\/css/);
    assert.match(r.headers.get("cache-control"), /immutable/);
  }

  const off = await startRelay(({ listen, dir }) => `listen = "${listen}"\nstorage = "sqlite://${dir}/cuecast.db"\n`);
  try {
    const r = await fetch(`${off.url}/console`);
    assert.equal(r.status, 404);
    assert.match(await r.text(), /console is off/);
  } finally {
    await off.stop();
    off.cleanup();
  }
});

test("signing in: a wrong token is refused next to its field; the right one is kept in sessionStorage, never in a URL", async () => {
  await page.goto(`${relay.url}/console/`);
  await page.screenshot({ path: `${shots}/sign-in-desktop.png` });
  await page.getByLabel("Admin token").fill("not-the-token");
  await page.keyboard.press("Enter");
  await page.locator(".field-error:not([hidden])").waitFor();
  assert.match(await errorOf("Admin token"), /does not accept this token/);
  // Keyboard only: the focus is back on the field, the Enter key submits.
  assert.equal(await page.evaluate(() => document.activeElement.name), "token");
  await page.getByLabel("Admin token").fill(TOKEN);
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Webhooks", level: 1 }).waitFor();
  await ready();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("cuecast:console:v1:token")), TOKEN);
  assert.match(await page.locator("main").textContent(), /No webhooks yet/);
});

test("a webhook created through the form: the bad URL's error shows next to the URL, the live preview renders, the secret is shown once", async () => {
  await page.getByRole("link", { name: "New webhook" }).click();
  await page.getByRole("heading", { name: "New webhook" }).waitFor();
  await ready();
  await page.getByLabel("ID", { exact: true }).fill(HOOK);
  // The event picker lists the built-in kinds (from /admin/v1/event-names).
  await page.getByRole("checkbox", { name: "survey.submitted" }).check();
  await page.getByLabel("Condition").fill("properties.score <= 6");
  await page.getByLabel("URL", { exact: true }).fill("ftp://127.0.0.1/hook");
  await page.getByLabel("Body template").fill('{"text": "NPS {{ properties.score }}: {{ properties.comment }}"}');
  await page.getByText("Timeout, rate limit, retries").click();
  await page.getByLabel("Retry schedule").fill("0s, 200ms");
  await page.getByRole("button", { name: "Create webhook" }).click();
  await page.locator(".field-error:not([hidden])").first().waitFor();
  assert.match(await errorOf("URL"), /http/, "the URL's problem is shown under the URL");
  assert.equal(await page.evaluate(() => document.activeElement.name), "url", "the first invalid field has the focus");
  assert.equal(await page.getByLabel("URL", { exact: true }).getAttribute("aria-invalid"), "true");

  await page.getByLabel("URL", { exact: true }).fill(`${hooks.url}/hook`);
  // The preview follows the form: the body template rendered for the sample event.
  await page.getByLabel("Body template").fill('{"text": "NPS {{ properties.score }} from the console"}');
  await page.waitForFunction(() => /from the console/.test(document.querySelector(".preview")?.textContent ?? ""), null, { timeout: 5000 });
  assert.match(await page.locator(".preview .request-line").textContent(), new RegExp(`POST\\s+${hooks.url}/hook`));
  assert.equal(await errorOf("URL"), "", "the error goes once the URL is changed");
  await page.screenshot({ path: `${shots}/webhook-new-desktop.png`, fullPage: true });

  await page.getByRole("button", { name: "Create webhook" }).click();
  await page.getByRole("heading", { name: `Webhook ${HOOK} created` }).waitFor();
  secret = await page.getByRole("textbox", { name: "Signing secret" }).inputValue();
  assert.match(secret, /^whsec_/);
  await page.getByRole("button", { name: "Copy" }).click();
  await page.getByText("Copied to the clipboard.").waitFor();
  await page.screenshot({ path: `${shots}/webhook-secret-desktop.png` });
  await page.getByRole("link", { name: "Done" }).click();
  await page.getByRole("heading", { name: `Webhook ${HOOK}` }).waitFor();
  await ready();
  // The secret is never shown again: only its hint.
  assert.ok(!(await page.locator("main").textContent()).includes(secret));
});

test("an event sent to the relay shows as delivered in the live list, signed with the secret shown once", async () => {
  await page.goto(`${relay.url}/console/#/deliveries?webhook=${HOOK}`);
  await ready();
  const id = await sendEvent(3);
  // No reload: the list polls every 2 s.
  const row = await rowStatus(id, "delivered");
  assert.match(await row.textContent(), /console-hook/);
  const [request] = hooks.posts();
  assert.deepEqual(request.body, { text: "NPS 3 from the console" }, "the body template as saved");
  assert.ok(verifySignature(request, secret, request.raw), "signed with the secret the form showed");
  assert.equal(await page.locator("[aria-live=polite]").count() > 0, true, "the list announces changes");
});

test("a failing receiver: the retries and the dead letter show, and replaying the dead letters delivers", async () => {
  hooks.reset();
  hooks.respond({ status: 500 }, { status: 500 });
  const id = await sendEvent(4);
  const row = await rowStatus(id, "dead");
  assert.equal(await row.locator('td[data-label="Attempts"]').textContent(), "2", "two attempts, as the retry schedule says");
  assert.equal(hooks.posts().length, 2);

  // The attempts of that delivery, with the receiver's answers.
  await row.getByRole("link", { name: /Attempts of delivery/ }).click();
  await page.getByRole("heading", { name: /^Delivery / }).waitFor();
  await ready();
  const attempts = page.locator("table.list tbody tr");
  assert.equal(await attempts.count(), 2);
  for (const text of await attempts.allTextContents()) assert.match(text, /500[\s\S]*scripted 500/);
  // The request those attempts sent, rendered from the stored event, with the delivery's webhook-id.
  const request = page.locator("section", { has: page.getByRole("heading", { name: "Request" }) });
  await request.locator("pre").first().waitFor();
  assert.match(await request.textContent(), /POST[\s\S]*webhook-id: msg_[0-9a-f]{32}/);
  await page.screenshot({ path: `${shots}/delivery-desktop.png`, fullPage: true });

  // Healthy again (the receiver answers 202 once its script is used up): replay the dead letters of the webhook.
  await page.goto(`${relay.url}/console/#/deliveries?webhook=${HOOK}&status=dead`);
  await ready();
  await page.screenshot({ path: `${shots}/deliveries-dead-desktop.png`, fullPage: true });
  await page.getByRole("button", { name: `Replay all dead deliveries of ${HOOK}` }).click();
  await page.locator("#banner", { hasText: "Replayed 1 dead delivery." }).waitFor();
  await page.getByLabel("Status").selectOption("");
  await rowStatus(id, "delivered");
  await hooks.until(() => hooks.posts().length >= 3);
  const msgIds = new Set(hooks.posts().map((r) => r.headers["webhook-id"]));
  assert.equal(msgIds.size, 1, "the replay is the same message, so the receiver can deduplicate");
  assert.equal(await page.locator("tbody tr .badge", { hasText: "dead" }).count(), 0);
});

test("events: the recent events with their properties and the webhooks they went to", async () => {
  await page.getByRole("link", { name: "Events" }).click();
  await page.getByRole("heading", { name: "Events", level: 1 }).waitFor();
  await ready();
  const row = page.locator(`tbody tr:has(a[href="#/events/${sent[1]}"])`);
  // Properties are shown as text, never as markup.
  const text = await row.textContent();
  assert.match(text, /score\s*4/);
  assert.match(text, /<b>score 4<\/b>/);
  assert.equal(await row.locator("b").count(), 0);
  await page.waitForFunction((id) => document.querySelector(`tbody tr:has(a[href="#/events/${id}"]) .to a`)?.textContent === "console-hook", sent[1]);
  await row.getByRole("link", { name: "survey.submitted" }).click();
  await page.getByRole("heading", { name: "survey.submitted" }).waitFor();
  await ready();
  assert.match(await page.locator("main").textContent(), /Sent to[\s\S]*console-hook[\s\S]*delivered/);
});

test("editing a webhook: the preview renders a real recent event; rotate the secret; disable and enable", async () => {
  await page.goto(`${relay.url}/console/#/webhooks/${HOOK}`);
  await ready();
  // The newest stored event that the webhook's events match is chosen: the second one sent (score 4).
  assert.equal(await page.getByLabel("Render for").inputValue(), sent[1]);
  await page.waitForFunction(() => /NPS 4 from the console/.test(document.querySelector(".preview")?.textContent ?? ""));
  await page.getByLabel("Body template").fill('{"text": "score={{ properties.score }}"}');
  await page.waitForFunction(() => /score=4/.test(document.querySelector(".preview")?.textContent ?? ""));

  await page.getByRole("button", { name: "Rotate the secret" }).click();
  const fresh = await page.getByRole("textbox", { name: "Signing secret" }).inputValue();
  assert.match(fresh, /^whsec_/);
  assert.notEqual(fresh, secret);
  await page.getByText("The previous secret keeps signing until").waitFor();

  await page.getByLabel("Reason to disable (optional)").fill("receiver maintenance");
  await page.getByRole("button", { name: "Disable" }).click();
  await page.getByText("Disabled: receiver maintenance.").waitFor();
  await page.getByRole("button", { name: "Enable" }).click();
  await page.getByRole("button", { name: "Disable" }).waitFor();
  // The body edit above was not saved.
  assert.match(await page.getByLabel("Body template").inputValue(), /from the console/);
});

test("sources: create one (its origin's error next to the field first), edit its origins, revoke it", async () => {
  await page.getByRole("link", { name: "Sources" }).click();
  await page.getByRole("heading", { name: "Sources", level: 1 }).waitFor();
  await ready();
  assert.match(await page.locator("main").textContent(), new RegExp(WRITE_KEY));
  await page.getByLabel("Write key").fill("pk_console_made");
  await page.getByLabel("Allowed origins").fill("not an origin");
  await page.getByRole("button", { name: "Create source" }).click();
  await page.locator(".field-error:not([hidden])").first().waitFor();
  assert.notEqual(await errorOf("Allowed origins"), "", "the origins' problem is shown under the origins");
  await page.getByLabel("Allowed origins").fill("https://app.example.com");
  await page.getByRole("button", { name: "Create source" }).click();
  const row = page.locator("tbody tr", { hasText: "pk_console_made" });
  await row.waitFor();
  await row.getByRole("button", { name: "Edit origins" }).click();
  await row.getByLabel("Origins of pk_console_made").fill("https://app.example.com\nhttps://admin.example.com");
  await row.getByRole("button", { name: "Save origins" }).click();
  await page.locator("tbody tr", { hasText: "https://admin.example.com" }).waitFor();
  const again = page.locator("tbody tr", { hasText: "pk_console_made" });
  await again.getByRole("button", { name: "Revoke" }).click();
  await again.getByRole("button", { name: "Press again to revoke" }).click();
  await page.locator("tbody tr", { hasText: "pk_console_made" }).locator(".badge", { hasText: "revoked" }).waitFor();
  assert.equal(await sendEvent(1, "pk_console_made"), 401, "a revoked key is refused");
});

test("every page at desktop width and at 360 px: no sideways scrolling, every control labelled; screenshots written", async () => {
  const deliveryHref = await page.evaluate(async (token) => {
    const r = await fetch("/admin/v1/deliveries?limit=1", { headers: { authorization: `Bearer ${token}` } });
    return (await r.json()).items[0].id;
  }, TOKEN);
  const pages = {
    webhooks: "#/webhooks", "webhook-new": "#/webhooks/new", "webhook-edit": `#/webhooks/${HOOK}`,
    deliveries: "#/deliveries", delivery: `#/deliveries/${deliveryHref}`, events: "#/events", event: `#/events/${sent[1]}`, sources: "#/sources",
  };
  for (const [width, suffix] of [[1280, "desktop"], [360, "360"]]) {
    await page.setViewportSize({ width, height: width > 400 ? 900 : 780 });
    for (const [name, hash] of Object.entries(pages)) {
      await page.goto(`${relay.url}/console/${hash}`);
      await ready();
      await page.waitForTimeout(300); // the preview and the events' webhooks fill in after the first paint
      const problems = await page.evaluate(() => {
        const unlabelled = [...document.querySelectorAll("main input, main select, main textarea")]
          .filter((el) => el.getAttribute("aria-hidden") !== "true" && !el.labels?.length && !el.getAttribute("aria-label"))
          .map((el) => el.outerHTML.slice(0, 80));
        return { overflow: document.documentElement.scrollWidth - window.innerWidth, unlabelled };
      });
      assert.ok(problems.overflow <= 0, `${name} at ${width}px scrolls sideways by ${problems.overflow}px`);
      assert.deepEqual(problems.unlabelled, [], `${name}: every control has a label`);
      await page.screenshot({ path: `${shots}/${name}-${suffix}.png`, fullPage: true });
    }
  }
  await page.setViewportSize({ width: 360, height: 780 });
  await page.goto(`${relay.url}/console/`);
  await page.evaluate(() => sessionStorage.clear());
  await page.reload();
  await page.getByLabel("Admin token").waitFor();
  await page.screenshot({ path: `${shots}/sign-in-360.png` });
});

test("nothing blocked by the CSP, no page error, the token in no URL and no console message; skip link; sign out", async () => {
  assert.deepEqual(logs.filter((l) => /^pageerror|CSP violation|Content Security Policy/.test(l)), []);
  assert.ok(!logs.some((l) => l.includes(TOKEN)), "the token is never logged");
  assert.ok(!requested.some((u) => u.includes(TOKEN)), "the token is never in a URL");
  // Signing out forgets it.
  await page.goto(`${relay.url}/console/`);
  await page.getByLabel("Admin token").fill(TOKEN);
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Webhooks", level: 1 }).waitFor();
  // The skip link comes first in the tab order; it moves to the content and leaves the route alone.
  assert.equal(await page.evaluate(() => document.querySelector("a[href], button, input, select, textarea").textContent), "Skip to content");
  await page.locator(".skip").focus();
  await page.keyboard.press("Enter");
  assert.equal(await page.evaluate(() => [document.activeElement.id, location.hash].join(" ")), "main #/webhooks");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByText("Signed out.").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("cuecast:console:v1:token")), null);
});
