// The cuecast relay console: a hash-routed page over the admin API
// (docs/ADMIN_API.md). Sign in with the admin token, then Webhooks (health,
// create/edit with a live preview, secrets), Deliveries (polled every 2 s,
// attempts, replay), Events and Sources.
//
// Rules this file keeps:
// - Text from the relay (event properties, responses, errors) is only ever
//   set as text (`h()` below), never parsed as HTML: any browser that sends
//   events controls it.
// - The token lives in sessionStorage (gone with the tab) and in the
//   Authorization header; never in a URL, never logged.
// - Every page sets `data-state="ready"` on <main> and the performance mark
//   "cuecast:list-rendered" once its data is on screen, and the Webhooks and
//   Events pages the mark "cuecast:details-rendered" once what they fetch
//   after the list (health, the webhooks each event went to) is there too,
//   for the test and the benchmark (tests/browser/console.test.mjs, bench/console.mjs).

const TOKEN_KEY = "cuecast:console:v1:token";
const API = "/admin/v1";
const POLL_MS = 2000;
const HEALTH_POLL_MS = 5000;
const PREVIEW_DELAY_MS = 300;
const STATUSES = ["pending", "delivered", "failed", "dead"];

const main = document.getElementById("main");
const nav = document.querySelector("nav");
const signOutButton = document.getElementById("sign-out");
const banner = document.getElementById("banner");

// ---------------------------------------------------------------- DOM helpers

/**
 * Builds an element: `h("a", { href, class: "x", onclick }, "text", child)`.
 * Attributes starting with `on` become listeners; `true`/`false` toggle
 * boolean attributes; null and undefined children are skipped.
 */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value == null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "value") el.value = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  el.append(...nodes(children));
  return el;
}

/** Children as nodes: nested arrays flattened, null, undefined and false left out, the rest as text. */
const nodes = (children) => children.flat(Infinity).filter((c) => c != null && c !== false).map((c) => (c instanceof Node ? c : String(c)));

/** Replaces `el`'s content with `children` (as `h` takes them). */
const fill = (el, ...children) => el.replaceChildren(...nodes(children));

let uid = 0;
const nextId = (prefix) => `${prefix}-${++uid}`;

/** A labelled input, select or textarea with its hint and an empty error slot. */
function field({ label, name, hint, control = "input", options, ...attrs }) {
  const id = nextId(`f-${name}`);
  const hintId = hint ? `${id}-hint` : null;
  const errorId = `${id}-error`;
  const input = control === "select"
    ? h("select", { id, name, "aria-describedby": hintId, ...attrs }, options.map(([v, text]) => h("option", { value: v }, text)))
    : h(control, { id, name, "aria-describedby": hintId, ...attrs });
  if (attrs.value != null) input.value = attrs.value;
  return h("div", { class: "field", "data-field": name },
    h("label", { for: id }, label),
    hint && h("p", { class: "hint", id: hintId }, hint),
    input,
    h("p", { class: "field-error", id: errorId, hidden: true }));
}

const code = (text) => h("code", {}, text);
const pre = (text) => h("pre", { tabindex: 0 }, text);

function fmtTime(ms) {
  if (ms == null) return "–";
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  const text = today ? d.toLocaleTimeString() : d.toLocaleString();
  return h("time", { datetime: d.toISOString(), title: d.toISOString() }, text);
}

function fmtIn(ms) {
  if (ms == null) return null;
  const s = Math.round((ms - Date.now()) / 1000);
  return s <= 0 ? "due now" : s < 120 ? `in ${s} s` : `in ${Math.round(s / 60)} min`;
}

const badge = (status) => h("span", { class: `badge ${status}` }, status);

function json(value) {
  return JSON.stringify(value, null, 2);
}

/** `{a: 1, b: "x"}` as short `a: 1` lines for a table cell. */
function properties(props) {
  const entries = Object.entries(props ?? {});
  if (!entries.length) return h("span", { class: "muted" }, "no properties");
  return h("ul", { class: "props" }, entries.slice(0, 6).map(([k, v]) =>
    h("li", {}, h("span", { class: "key" }, k), " ", typeof v === "string" ? v : JSON.stringify(v))),
  entries.length > 6 ? h("li", { class: "muted" }, `+${entries.length - 6} more`) : null);
}

/** Copies `text`; falls back to selecting `input` where the Clipboard API is missing (plain http). */
async function copy(text, input, status) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    input?.select();
    document.execCommand?.("copy");
  }
  status.textContent = "Copied to the clipboard.";
}

/** A read-only secret with a Copy button: shown once, so it says so. */
function secretPanel(title, secret, extra) {
  const input = h("input", { id: nextId("secret"), readonly: true, value: secret, class: "secret", spellcheck: "false" });
  const status = h("p", { class: "hint", role: "status" });
  const titleId = nextId("secret-title");
  return h("section", { class: "panel secret-panel", "aria-labelledby": titleId },
    h("h2", { id: titleId }, title),
    h("p", {}, "Copy it now: the relay keeps only a hint of it and will not show it again. Receivers use it to check the ",
      code("webhook-signature"), " header."),
    h("label", { for: input.id }, "Signing secret"),
    h("div", { class: "row" }, input, h("button", { type: "button", onclick: () => copy(secret, input, status) }, "Copy")),
    status, extra);
}

/**
 * A button that asks for a second press before `action` (deleting and
 * revoking cannot be undone); reverts after 5 s.
 */
function confirmButton(label, confirmLabel, action, className = "danger") {
  let armed = null;
  const button = h("button", { type: "button", class: className, onclick: async () => {
    if (!armed) {
      button.textContent = confirmLabel;
      armed = setTimeout(() => { armed = null; button.textContent = label; }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.disabled = true;
    try { await action(); } finally { button.disabled = false; button.textContent = label; }
  } }, label);
  return button;
}

// ---------------------------------------------------------------- the admin API

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `the relay answered ${status}`);
    this.status = status;
    this.code = body?.error?.code;
    this.fields = body?.error?.fields ?? [];
  }
}

const token = () => sessionStorage.getItem(TOKEN_KEY);

/** One admin call; throws ApiError on a non-2xx answer and signs out on 401. */
async function api(method, path, body, { signal, with: given } = {}) {
  const headers = { authorization: `Bearer ${given ?? token()}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(API + path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, { error: { code: "network", message: "the relay cannot be reached" } });
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: { message: text.slice(0, 300) } }; }
  if (response.ok) return data;
  const error = new ApiError(response.status, data);
  if (response.status === 401 && !given) {
    sessionStorage.removeItem(TOKEN_KEY);
    show(signIn, "The relay refused the token (it may have changed): sign in again.");
  }
  throw error;
}

const q = (params) => {
  const s = new URLSearchParams(Object.entries(params).filter(([, v]) => v != null && v !== ""));
  return s.size ? `?${s}` : "";
};

// ---------------------------------------------------------------- form errors

/** `webhook.events[2]` → `events`: the input a field error belongs to. */
const baseField = (name) => String(name).replace(/^webhook\./, "").split(/[.[]/)[0];

/** Hides the errors inside `scope` (a form, or one field's box) and unmarks its inputs. */
function clearErrors(scope) {
  for (const el of scope.querySelectorAll(".field-error, .form-error")) { el.hidden = true; el.textContent = ""; }
  for (const el of scope.querySelectorAll("[aria-invalid]")) {
    el.removeAttribute("aria-invalid");
    const ids = (el.getAttribute("aria-describedby") ?? "").split(" ").filter((id) => id && !id.endsWith("-error"));
    if (ids.length) el.setAttribute("aria-describedby", ids.join(" ")); else el.removeAttribute("aria-describedby");
  }
}

// A field's error goes as soon as the person changes that field: it no longer describes what is there.
document.addEventListener("input", (e) => {
  if (e.target.closest?.("[aria-invalid]")) clearErrors(e.target.closest("[data-field]") ?? e.target.form);
});

/**
 * Puts each of `problems` ({field, message}) under its input and focuses the
 * first; what belongs to no input goes to the form's own error line.
 */
function showErrors(form, problems, fallback) {
  clearErrors(form);
  const orphans = [];
  let first = null;
  for (const { field: name, message } of problems) {
    const box = form.querySelector(`[data-field="${CSS.escape(baseField(name))}"]`);
    const slot = box?.querySelector(":scope > .field-error");
    if (!slot) { orphans.push(name ? `${name}: ${message}` : message); continue; }
    slot.textContent = slot.textContent ? `${slot.textContent} ${message}` : message;
    slot.hidden = false;
    box.closest("details")?.setAttribute("open", "");
    const input = box.querySelector("input, select, textarea");
    if (input) {
      input.setAttribute("aria-invalid", "true");
      const ids = new Set((input.getAttribute("aria-describedby") ?? "").split(" ").filter(Boolean));
      ids.add(slot.id);
      input.setAttribute("aria-describedby", [...ids].join(" "));
      first ??= input;
    }
  }
  if (!problems.length && fallback) orphans.push(fallback);
  const summary = form.querySelector(".form-error");
  if (orphans.length && summary) { summary.textContent = orphans.join(" "); summary.hidden = false; }
  (first ?? summary)?.focus();
}

/**
 * Sends a form's request, showing a 400's field errors (or any other failure)
 * in the form; a 409 (the id is taken) goes under the `conflict` field.
 */
async function submitting(form, run, { conflict } = {}) {
  const button = form.querySelector("button[type=submit]");
  clearErrors(form);
  if (button) button.disabled = true;
  try {
    return await run();
  } catch (e) {
    if (e.status === 401) return undefined;
    const fields = e.status === 409 && conflict && !e.fields.length ? [{ field: conflict, message: e.message }] : e.fields ?? [];
    showErrors(form, fields, e.message);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/** A 400-shaped error for a problem found before anything is sent. */
const invalid = (name, message) => new ApiError(400, { error: { code: "invalid", message, fields: [{ field: name, message }] } });

const formError = () => h("p", { class: "form-error", role: "alert", tabindex: -1, hidden: true });

// ---------------------------------------------------------------- routing

let view = null; // the AbortController of the page on screen: aborts its requests and stops its polls

function show(page, ...args) {
  view?.abort();
  view = new AbortController();
  const signedIn = Boolean(token());
  nav.hidden = !signedIn;
  signOutButton.hidden = !signedIn;
  main.removeAttribute("data-state");
  fill(main, h("p", { class: "loading" }, "Loading…"));
  const ctx = { signal: view.signal };
  Promise.resolve().then(() => page(ctx, ...args)).catch((e) => {
    if (e.name === "AbortError" || e.status === 401 || ctx.signal.aborted) return;
    fill(main, h("h1", {}, "Something went wrong"), h("p", { class: "form-error" }, e.message));
  });
}

/** Puts a page's content on screen and tells the test and the bench it is there. */
function render(ctx, title, ...content) {
  if (ctx.signal.aborted) return;
  document.title = `${title} · cuecast console`;
  fill(main, ...content);
  main.dataset.state = "ready";
  performance.mark("cuecast:list-rendered");
}

/** Marks that a page's second wave (health, which webhooks events went to) is on screen too. */
function details(ctx) {
  if (!ctx.signal.aborted) performance.mark("cuecast:details-rendered");
}

const routes = [
  [/^\/webhooks\/?$/, () => webhooksPage],
  [/^\/webhooks\/new$/, () => webhookForm],
  [/^\/webhooks\/([^/]+)$/, () => webhookForm],
  [/^\/deliveries\/?$/, () => deliveriesPage],
  [/^\/deliveries\/([^/]+)$/, () => deliveryPage],
  [/^\/events\/?$/, () => eventsPage],
  [/^\/events\/([^/]+)$/, () => eventPage],
  [/^\/sources\/?$/, () => sourcesPage],
];

function parseHash() {
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  return { path: path && path !== "/" ? path : "/webhooks", query: new URLSearchParams(query) };
}

function route() {
  banner.hidden = true;
  if (!token()) return show(signIn);
  const { path, query } = parseHash();
  for (const [pattern, page] of routes) {
    const m = pattern.exec(path);
    if (!m) continue;
    const section = path.split("/")[1];
    for (const a of nav.querySelectorAll("a")) {
      if (a.dataset.section === section) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    const id = m[1] && m[1] !== "new" ? decodeURIComponent(m[1]) : null;
    return show(page(), query, id);
  }
  show((ctx) => render(ctx, "Not found", h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/webhooks" }, "Back to the webhooks"))));
}

/** Rewrites the hash's query (filters) without a new history entry or a re-render. */
function setQuery(path, params) {
  history.replaceState(null, "", `#${path}${q(params)}`);
}

/** Moves focus to the new page's heading after a navigation, so a screen reader starts there. */
function focusHeading() {
  main.querySelector("h1")?.focus();
}

/**
 * Calls `tick` every POLL_MS until the page is left, skipping while the tab
 * is hidden and never overlapping two calls.
 */
function poll(ctx, tick, every = POLL_MS) {
  let timer = null;
  const loop = async () => {
    if (ctx.signal.aborted) return;
    if (!document.hidden) {
      try { await tick(); } catch (e) { if (e.name !== "AbortError" && e.status !== 401) note(`Live updates paused: ${e.message}`); }
    }
    if (!ctx.signal.aborted) timer = setTimeout(loop, every);
  };
  timer = setTimeout(loop, every);
  ctx.signal.addEventListener("abort", () => clearTimeout(timer));
}

function note(message) {
  banner.textContent = message;
  banner.hidden = false;
}

/**
 * Brings `tbody` to one row per item, in order, reusing the rows whose item
 * did not change, so a poll neither flickers nor takes the keyboard focus
 * away (a replaced row gives focus to its twin in the new row).
 */
function syncRows(tbody, items, key, row) {
  const old = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  const focused = document.activeElement?.closest("tr")?.parentNode === tbody ? document.activeElement : null;
  let changed = 0;
  let at = tbody.firstChild;
  for (const item of items) {
    const k = String(key(item));
    const sig = JSON.stringify(item);
    let tr = old.get(k);
    if (tr && tr.dataset.sig !== sig) {
      const fresh = row(item);
      fresh.dataset.key = k;
      fresh.dataset.sig = sig;
      const focusKey = focused && tr.contains(focused) ? focused.dataset.focus : null;
      tr.replaceWith(fresh);
      if (at === tr) at = fresh;
      tr = fresh;
      if (focusKey) tr.querySelector(`[data-focus="${focusKey}"]`)?.focus();
      changed++;
    } else if (!tr) {
      tr = row(item);
      tr.dataset.key = k;
      tr.dataset.sig = sig;
      changed++;
    }
    old.delete(k);
    if (tr !== at) tbody.insertBefore(tr, at); else at = at.nextSibling;
  }
  for (const tr of old.values()) tr.remove();
  return changed;
}

/** A table whose first row holds the column names; on narrow screens each cell shows its name itself. */
function table(label, columns) {
  const tbody = h("tbody");
  const el = h("table", { class: "list" },
    h("caption", { class: "visually-hidden" }, label),
    // A column of buttons has no visible name; a screen reader still gets one.
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c || h("span", { class: "visually-hidden" }, "Actions"))))),
    tbody);
  return { el, tbody };
}

// The inner div keeps a cell's content one block when narrow screens lay the cell out as a grid.
const cell = (label, ...content) => h("td", { "data-label": label }, h("div", {}, ...content));

// ---------------------------------------------------------------- sign in

function signIn(ctx, message) {
  const form = h("form", { class: "panel narrow", novalidate: true },
    h("h1", { tabindex: -1 }, "Sign in"),
    h("p", {}, "Enter the admin token of this relay (", code("[admin] token"), " in its configuration, or ", code("CUECAST_ADMIN_TOKEN"), "). It is kept in this tab only, until you sign out or close it."),
    message ? h("p", { class: "notice", role: "status" }, message) : null,
    field({ label: "Admin token", name: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" }),
    formError(),
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const given = form.elements.token.value.trim();
    if (!given) return showErrors(form, invalid("token", "Enter the token.").fields);
    const ok = await submitting(form, async () => {
      try {
        await api("GET", "/webhooks", undefined, { with: given, signal: ctx.signal });
      } catch (err) {
        if (err.status === 401) throw invalid("token", "The relay does not accept this token.");
        throw err;
      }
      return true;
    });
    if (!ok) return;
    sessionStorage.setItem(TOKEN_KEY, given);
    if (!location.hash || location.hash === "#/") location.hash = "#/webhooks"; else route();
  });
  render(ctx, "Sign in", form);
  form.elements.token.focus();
}

signOutButton.addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  show(signIn, "Signed out.");
});

// ---------------------------------------------------------------- webhooks

/** Why a webhook is disabled, or null when it is enabled (a reason string, or `{reason, at}`). */
const disabledReason = (w) => (w.disabled == null ? null : typeof w.disabled === "string" ? w.disabled : w.disabled.reason ?? "");

/**
 * The webhooks with their last hour as `health`: the hour window of `/stats`
 * and the newest error among each webhook's recent, failed and dead deliveries
 * (the webhook list itself carries no health).
 */
async function webhooksWithHealth(ctx) {
  const [{ items }, stats] = await Promise.all([
    api("GET", "/webhooks", undefined, ctx),
    api("GET", "/stats", undefined, ctx).catch(() => null),
  ]);
  return Promise.all(items.map(async (w) => ({ ...w, health: await health(ctx, w.id, stats) })));
}

/** One webhook's last hour: its `/stats` hour window plus the newest error of its recent, failed and dead deliveries. */
async function health(ctx, id, stats) {
  const since = Date.now() - 3600_000;
  const queries = [{ limit: 20 }, { status: "dead", limit: 1 }, { status: "failed", limit: 1 }];
  const lists = await Promise.all(queries.map((query) =>
    api("GET", `/deliveries${q({ webhook: id, ...query })}`, undefined, ctx).then((r) => r.items, () => [])));
  const newest = lists.flat().filter((d) => d.last_error && d.updated_at >= since).sort((a, b) => b.updated_at - a.updated_at)[0];
  const hour = stats?.webhooks?.find((s) => s.id === id)?.hour ?? {};
  return { ...hour, last_error: newest?.last_error ?? null };
}

async function webhooksPage(ctx) {
  // The list first; its health (a few queries per webhook) fills in after.
  const { items } = await api("GET", "/webhooks", undefined, ctx);
  const { el, tbody } = table("Webhooks", ["Webhook", "Sends to", "Last hour", "Last error", "State"]);
  syncRows(tbody, items, (w) => w.id, webhookRow);
  render(ctx, "Webhooks",
    h("div", { class: "title" }, h("h1", { tabindex: -1 }, "Webhooks"), h("a", { class: "button", href: "#/webhooks/new" }, "New webhook")),
    items.length ? el : h("p", { class: "empty" }, "No webhooks yet. Create one here, or add ", code("[[webhook]]"), " tables to the configuration."));
  focusHeading();
  const refresh = async () => syncRows(tbody, await webhooksWithHealth(ctx), (w) => w.id, webhookRow);
  await refresh();
  details(ctx);
  // Health at a glance stays current without a reload (less often than the deliveries: it costs a few queries per webhook).
  poll(ctx, refresh, HEALTH_POLL_MS);
}

function webhookRow(w) {
  if (!w.health) {
    return h("tr", {}, cell("Webhook", h("a", { href: `#/webhooks/${encodeURIComponent(w.id)}`, "data-focus": "open" }, w.id)),
      cell("Sends to", h("span", { class: "method" }, w.method ?? "POST"), " ", h("span", { class: "url" }, w.url)),
      cell("Last hour", h("span", { class: "muted" }, "…")), cell("Last error", h("span", { class: "muted" }, "…")), stateCell(w));
  }
  const health = w.health;
  return h("tr", {},
    cell("Webhook", h("a", { href: `#/webhooks/${encodeURIComponent(w.id)}`, "data-focus": "open" }, w.id),
      h("div", { class: "muted small" }, (w.events ?? []).join(", ")), w.origin === "config" ? h("span", { class: "tag" }, w.edited ? "config, edited" : "config") : null),
    cell("Sends to", h("span", { class: "method" }, w.method ?? "POST"), " ", h("span", { class: "url" }, w.url)),
    cell("Last hour", h("span", { class: "health" },
      h("a", { href: `#/deliveries${q({ webhook: w.id, status: "delivered" })}`, class: "ok", title: "delivered in the last hour" }, `${health.delivered ?? 0} delivered`),
      h("a", { href: `#/deliveries${q({ webhook: w.id, status: "failed" })}`, class: health.failed ? "bad" : "muted", title: "failed for good in the last hour (not retried)" }, `${health.failed ?? 0} failed`),
      health.dead ? h("a", { href: `#/deliveries${q({ webhook: w.id, status: "dead" })}`, class: "bad" }, `${health.dead} dead`) : null,
      health.p50_ms != null ? h("span", { class: "muted", title: "attempt duration, median and 99th percentile" }, `${health.p50_ms} / ${health.p99_ms} ms`) : null)),
    cell("Last error", health.last_error ? h("span", { class: "error-text" }, health.last_error) : h("span", { class: "muted" }, "none")),
    stateCell(w));
}

function stateCell(w) {
  return cell("State", disabledReason(w) != null ? h("span", { class: "badge dead" }, "disabled") : h("span", { class: "badge delivered" }, "enabled"),
    disabledReason(w) ? h("div", { class: "muted small" }, disabledReason(w)) : null,
    notInForce(w));
}

/** Why a stored definition is not in force (e.g. https_only set since it was saved), if it is not. */
function notInForce(w) {
  if (!w.problems?.length) return null;
  return h("div", { class: "error-text small" }, "Not in force: ", w.problems.map((p) => `${p.field}: ${p.message}`).join("; "));
}

/** The JSON definition the form describes (keys as in a `[[webhook]]` table), or field problems. */
function readWebhook(form) {
  const f = form.elements;
  const problems = [];
  const events = [...form.querySelectorAll("input[name=event]:checked")].map((c) => c.value)
    .concat(f.more_events.value.split(/[\s,]+/).filter(Boolean));
  const headers = {};
  f.headers.value.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    const at = line.indexOf(":");
    if (at <= 0) problems.push({ field: "headers", message: `Line ${i + 1}: write it as Name: value.` });
    else headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  });
  const def = { id: f.id.value.trim(), events, method: f.method.value, url: f.url.value.trim() };
  if (f.when.value.trim()) def.when = f.when.value.trim();
  if (Object.keys(headers).length) def.headers = headers;
  if (f.body.value.trim()) def.body = f.body.value;
  if (f.timeout.value.trim()) def.timeout = f.timeout.value.trim();
  if (f.rate_limit.value.trim()) def.rate_limit = f.rate_limit.value.trim();
  if (f.concurrency.value.trim()) {
    const n = Number(f.concurrency.value);
    if (!Number.isInteger(n) || n < 1) problems.push({ field: "concurrency", message: "A whole number, 1 or more." });
    else def.concurrency = n;
  }
  const retry = f.retry.value.split(/[\s,]+/).filter(Boolean);
  if (retry.length) def.retry = retry;
  return { def, problems };
}

/** Does an event name match one of the webhook's patterns (`name`, `prefix.*`, `*`)? */
const matchesEvents = (name, patterns) =>
  patterns.some((p) => p === "*" || p === name || (p.endsWith(".*") && name.startsWith(p.slice(0, -1))));

async function webhookForm(ctx, _query, id) {
  const [webhook, names, recent] = await Promise.all([
    id ? api("GET", `/webhooks/${encodeURIComponent(id)}`, undefined, ctx) : null,
    api("GET", "/event-names", undefined, ctx).then((r) => r.names, () => []),
    api("GET", "/events?limit=20", undefined, ctx).then((r) => r.items, () => []),
  ]);
  const w = webhook ?? {};
  const chosen = new Set(w.events ?? []);
  const known = names;
  const more = [...chosen].filter((e) => !names.includes(e));
  const headerLines = Array.isArray(w.headers) ? w.headers.map(([k, v]) => `${k}: ${v}`) : Object.entries(w.headers ?? {}).map(([k, v]) => `${k}: ${v}`);

  const form = h("form", { class: "webhook-form", novalidate: true });
  const eventsBox = h("fieldset", { class: "field", "data-field": "events" },
    h("legend", {}, "Events"),
    h("p", { class: "hint", id: "events-hint" }, "The event names that trigger this webhook: the built-in kinds and the names this relay has seen."),
    known.length ? null : h("p", { class: "muted" }, "No names known yet: type them in the next field."),
    h("div", { class: "checks" }, known.map((n) => {
      const cid = nextId("event");
      return h("div", { class: "check" }, h("input", { type: "checkbox", id: cid, name: "event", value: n, checked: chosen.has(n) }), h("label", { for: cid }, n));
    })),
    h("p", { class: "field-error", id: "events-error", hidden: true }));
  form.append(
    formError(),
    field({ label: "ID", name: "id", hint: "A stable name: deliveries refer to it. Letters, digits, - and _.", required: true, value: w.id ?? "", readonly: Boolean(id), autocomplete: "off", spellcheck: "false" }),
    eventsBox,
    field({ label: "Other event names or patterns", name: "more_events", hint: "Comma separated, e.g. onboarding.* or * for every event.", value: more.join(", "), autocomplete: "off", spellcheck: "false" }),
    field({ label: "Condition", name: "when", hint: "Optional. An expression over the event, e.g. properties.score <= 6.", value: w.when ?? "", autocomplete: "off", spellcheck: "false" }),
    h("div", { class: "row2" },
      field({ label: "Method", name: "method", control: "select", options: [["POST", "POST"], ["GET", "GET"]], value: w.method ?? "POST" }),
      field({ label: "URL", name: "url", type: "url", hint: "May use the event: https://example.com/u/{{ userId }}", required: true, value: w.url ?? "", autocomplete: "off", spellcheck: "false", inputmode: "url" })),
    field({ label: "Headers", name: "headers", control: "textarea", rows: 3, hint: "One per line, as Name: value.", value: headerLines.join("\n"), spellcheck: "false" }),
    field({ label: "Body template", name: "body", control: "textarea", rows: 6, hint: "Empty: the default {\"type\", \"timestamp\", \"data\"}. {{ properties.x }} inserts a property.", value: w.body ?? "", spellcheck: "false", class: "mono" }),
    h("details", { class: "more" }, h("summary", {}, "Timeout, rate limit, retries"),
      h("div", { class: "row2" },
        field({ label: "Timeout", name: "timeout", hint: "Per attempt, e.g. 10s.", value: w.timeout ?? "", placeholder: "10s", autocomplete: "off" }),
        field({ label: "Rate limit", name: "rate_limit", hint: "e.g. 10/s; empty: no limit.", value: w.rate_limit ?? "", autocomplete: "off" })),
      h("div", { class: "row2" },
        field({ label: "Concurrency", name: "concurrency", hint: "Attempts in flight at once.", value: w.concurrency ?? "", inputmode: "numeric", placeholder: "64", autocomplete: "off" }),
        field({ label: "Retry schedule", name: "retry", hint: "The delay before each attempt, e.g. 0s, 5s, 5m.", value: (w.retry ?? []).join(", "), autocomplete: "off" }))),
    h("div", { class: "actions" },
      h("button", { type: "submit" }, id ? "Save changes" : "Create webhook"),
      h("a", { href: "#/webhooks", class: "button quiet" }, "Cancel")));

  // The live preview: the request this definition would send for a real recent event.
  const eventSelect = h("select", { id: "preview-event" },
    recent.map((e) => h("option", { value: e.id }, `${e.name} · ${new Date(e.received_at).toLocaleTimeString()}`)),
    h("option", { value: "" }, "The built-in sample event"));
  let pickedByHand = false;
  const pickEvent = () => {
    if (pickedByHand) return;
    const patterns = readWebhook(form).def.events;
    const match = recent.find((e) => matchesEvents(e.name, patterns));
    eventSelect.value = match?.id ?? recent[0]?.id ?? "";
  };
  eventSelect.addEventListener("change", () => { pickedByHand = true; schedulePreview(); });
  const verdict = h("p", { class: "verdict", "aria-live": "polite" });
  const output = h("div", { class: "preview-output" });
  const previewPanel = h("section", { class: "panel preview", "aria-labelledby": "preview-title" },
    h("h2", { id: "preview-title" }, "Preview"),
    h("label", { for: "preview-event" }, "Render for"), eventSelect, verdict, output);

  let previewTimer = null;
  let previewing = null;
  let seq = 0;
  function schedulePreview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(preview, PREVIEW_DELAY_MS);
  }
  async function preview() {
    const { def, problems } = readWebhook(form);
    const mine = ++seq;
    if (problems.length) { verdict.textContent = "Fix the form to see the preview."; fill(output, ); return; }
    previewing?.abort();
    previewing = new AbortController();
    ctx.signal.addEventListener("abort", () => previewing.abort(), { once: true });
    const body = { webhook: { ...def, id: def.id || "preview" } };
    if (eventSelect.value) body.event_id = eventSelect.value;
    try {
      const r = await api("POST", "/preview", body, { signal: previewing.signal });
      if (mine !== seq) return;
      verdict.textContent = r.error ? "This event cannot be rendered." : r.matches ? "This event matches: the webhook would send this request." : "This event does not match the events or the condition: nothing would be sent.";
      verdict.className = `verdict ${r.error ? "bad" : r.matches ? "ok" : "muted"}`;
      const req = r.request;
      fill(output, 
        r.error ? h("p", { class: "error-text" }, r.error) : null,
        req ? h("div", {},
          h("p", { class: "request-line" }, h("span", { class: "method" }, req.method), " ", h("span", { class: "url" }, req.url)),
          h("h3", {}, "Headers"), pre((req.headers ?? []).map(([k, v]) => `${k}: ${v}`).join("\n") || "(none)"),
          req.body != null ? [h("h3", {}, "Body"), pre(prettyBody(req.body))] : null) : null);
    } catch (e) {
      if (e.name === "AbortError" || mine !== seq) return;
      verdict.className = "verdict bad";
      verdict.textContent = "The preview cannot be rendered yet.";
      fill(output, h("ul", { class: "error-list" }, (e.fields?.length ? e.fields.map((p) => `${p.field}: ${p.message}`) : [e.message]).map((m) => h("li", {}, m))));
    }
  }
  form.addEventListener("input", (e) => { if (e.target.name === "event" || e.target.name === "more_events") pickEvent(); schedulePreview(); });
  form.addEventListener("change", schedulePreview);

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const { def, problems } = readWebhook(form);
    if (problems.length) return showErrors(form, problems);
    const saved = await submitting(form, () => id
      ? api("PUT", `/webhooks/${encodeURIComponent(id)}`, def, ctx)
      : api("POST", "/webhooks", def, ctx), { conflict: "id" });
    if (!saved) return;
    if (id) {
      note(`Saved ${id}.`);
      location.hash = "#/webhooks";
      return;
    }
    const created = saved.webhook ?? def;
    render(ctx, "Webhook created",
      h("h1", { tabindex: -1 }, `Webhook ${created.id} created`),
      secretPanel("Its signing secret", saved.secret,
        h("p", { class: "actions" },
          h("a", { class: "button", href: `#/webhooks/${encodeURIComponent(created.id)}` }, "Done"),
          h("a", { class: "button quiet", href: `#/deliveries${q({ webhook: created.id })}` }, "Watch its deliveries"))));
    focusHeading();
  });

  const title = id ? `Webhook ${id}` : "New webhook";
  const status = id ? webhookStatus(w) : null;
  render(ctx, title,
    h("p", { class: "crumbs" }, h("a", { href: "#/webhooks" }, "Webhooks"), " / "),
    h("h1", { tabindex: -1 }, title),
    status,
    h("div", { class: "split" }, form, previewPanel),
    id ? webhookManage(ctx, w) : null);
  focusHeading();
  pickEvent();
  preview();
  // Its last hour takes a few queries: shown once they answer, without holding up the form.
  if (id) {
    const stats = await api("GET", "/stats", undefined, ctx).catch(() => null);
    status.replaceWith(webhookStatus({ ...w, health: await health(ctx, id, stats) }));
  }
}

function webhookStatus(w) {
  const health = w.health;
  return h("p", { class: "status-line" },
    disabledReason(w) != null ? h("span", { class: "badge dead" }, "disabled") : h("span", { class: "badge delivered" }, "enabled"), " ",
    health ? `Last hour: ${health.delivered ?? 0} delivered, ${health.failed ?? 0} failed, ${health.dead ?? 0} dead. ` : "Last hour: … ",
    health?.last_error ? h("span", { class: "error-text" }, `Last error: ${health.last_error}. `) : null,
    h("a", { href: `#/deliveries${q({ webhook: w.id })}` }, "Its deliveries"),
    w.origin === "config" ? h("span", { class: "muted" }, w.edited ? " · from the configuration file, changed here since" : " · from the configuration file") : null,
    notInForce(w));
}

/** Enable/disable, secrets, a test send and delete: the actions on a saved webhook. */
function webhookManage(ctx, w) {
  const path = `/webhooks/${encodeURIComponent(w.id)}`;
  const result = h("div", { "aria-live": "polite" });

  const stateForm = h("form", { class: "inline-form", novalidate: true });
  const disabled = disabledReason(w) != null;
  if (disabled) {
    stateForm.append(h("p", {}, "Disabled", disabledReason(w) ? `: ${disabledReason(w)}` : "", ". New deliveries become dead letters until it is enabled."),
      formError(), h("button", { type: "submit" }, "Enable"));
  } else {
    stateForm.append(field({ label: "Reason to disable (optional)", name: "reason", autocomplete: "off" }), formError(), h("button", { type: "submit", class: "quiet" }, "Disable"));
  }
  stateForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = disabled ? {} : { reason: stateForm.elements.reason.value.trim() || undefined };
    if (await submitting(stateForm, () => api("POST", `${path}/${disabled ? "enable" : "disable"}`, body, ctx).then(() => true))) route();
  });

  const rotateForm = h("form", { class: "inline-form", novalidate: true },
    h("ul", { class: "secrets" }, (w.secrets ?? []).map((s) => h("li", {}, code(s.hint), s.expires_at ? [" · stops signing at ", fmtTime(s.expires_at)] : " · current"))),
    (w.secrets ?? []).length ? null : h("p", { class: "muted" }, "Unsigned: no secret."),
    field({ label: "Old secret keeps signing for", name: "grace", value: "24h", hint: "e.g. 24h, 1h, 0s to stop it at once.", autocomplete: "off" }),
    formError(),
    h("button", { type: "submit", class: "quiet" }, "Rotate the secret"));
  rotateForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const grace = rotateForm.elements.grace.value.trim();
    const r = await submitting(rotateForm, () => api("POST", `${path}/rotate-secret`, grace ? { grace } : {}, ctx));
    if (!r) return;
    fill(result, secretPanel("The new signing secret", r.secret,
      r.previous_expires_at ? h("p", {}, "The previous secret keeps signing until ", fmtTime(r.previous_expires_at), ".") : null));
    result.querySelector("input")?.focus();
  });

  const testButton = h("button", { type: "button", class: "quiet", onclick: async () => {
    testButton.disabled = true;
    try {
      const a = await api("POST", `${path}/test`, {}, ctx);
      fill(result, h("section", { class: "panel" }, h("h2", {}, "Test send"),
        h("p", {}, a.status ? `Answered ${a.status}` : "No answer", a.duration_ms != null ? ` in ${a.duration_ms} ms` : "", a.error ? `: ${a.error}` : "."),
        a.response ? pre(a.response) : null));
    } catch (err) {
      if (err.status !== 401) fill(result, h("p", { class: "error-text" }, err.message));
    } finally { testButton.disabled = false; }
  } }, "Send a test event");

  const del = confirmButton("Delete webhook", "Press again to delete", async () => {
    await api("DELETE", path, undefined, ctx);
    note(`Deleted ${w.id}; its pending deliveries are dead letters now.`);
    location.hash = "#/webhooks";
  });

  return h("section", { class: "manage", "aria-labelledby": "manage-title" },
    h("h2", { id: "manage-title" }, "Manage"),
    h("div", { class: "cards" },
      h("div", { class: "panel" }, h("h3", {}, "State"), stateForm),
      h("div", { class: "panel" }, h("h3", {}, "Signing secret"), rotateForm),
      h("div", { class: "panel" }, h("h3", {}, "Try it"), h("p", {}, "Sends a sample event now and shows the answer."), testButton),
      h("div", { class: "panel" }, h("h3", {}, "Delete"), h("p", {}, "Pending deliveries become dead letters."), del)),
    result);
}

/** A JSON body pretty-printed; anything else as it is. */
function prettyBody(body) {
  try { return json(JSON.parse(body)); } catch { return body; }
}

// ---------------------------------------------------------------- deliveries

async function deliveriesPage(ctx, query) {
  const filters = { webhook: query.get("webhook") ?? "", status: query.get("status") ?? "" };
  const hooks = await api("GET", "/webhooks", undefined, ctx).then((r) => r.items.map((w) => w.id), () => []);
  if (filters.webhook && !hooks.includes(filters.webhook)) hooks.push(filters.webhook);
  const list = () => api("GET", `/deliveries${q({ ...filters, limit: 50 })}`, undefined, ctx);
  let first = await list();
  let older = []; // pages loaded with "Show older": kept as they are, not polled
  let next = first.next;

  const { el, tbody } = table("Deliveries, newest first", ["Updated", "Event", "Webhook", "Status", "Attempts", "Next attempt or last error", ""]);
  const live = h("p", { class: "visually-hidden", "aria-live": "polite" });
  const updated = h("p", { class: "muted small" });
  const empty = h("p", { class: "empty" }, "No deliveries match.");
  const moreButton = h("button", { type: "button", class: "quiet", onclick: async () => {
    moreButton.disabled = true;
    try {
      const page = await api("GET", `/deliveries${q({ ...filters, limit: 50, cursor: next })}`, undefined, ctx);
      older = older.concat(page.items);
      next = page.next;
      draw();
    } finally { moreButton.disabled = false; }
  } }, "Show older");

  const draw = () => {
    const seen = new Set(first.items.map((d) => d.id));
    const items = first.items.concat(older.filter((d) => !seen.has(d.id)));
    const changed = syncRows(tbody, items, (d) => d.id, (d) => deliveryRow(ctx, d));
    empty.hidden = items.length > 0;
    el.hidden = items.length === 0;
    moreButton.hidden = !next;
    updated.textContent = `${items.length} shown · updated ${new Date().toLocaleTimeString()}`;
    return changed;
  };

  const webhookSelect = field({ label: "Webhook", name: "webhook", control: "select", options: [["", "All webhooks"], ...hooks.map((id) => [id, id])], value: filters.webhook });
  const statusSelect = field({ label: "Status", name: "status", control: "select", options: [["", "Any status"], ...STATUSES.map((s) => [s, s])], value: filters.status });
  const filterForm = h("form", { class: "filters", role: "search", "aria-label": "Filter deliveries" }, webhookSelect, statusSelect);
  const replayForm = h("form", { class: "inline-form", novalidate: true }, formError(), h("button", { type: "submit" }, ""));
  const replayButton = replayForm.querySelector("button");
  const setReplay = () => {
    replayForm.hidden = !filters.webhook;
    replayButton.textContent = `Replay all dead deliveries of ${filters.webhook}`;
  };
  replayForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const r = await submitting(replayForm, () => api("POST", "/deliveries/replay", { webhook: filters.webhook, status: "dead" }, ctx));
    if (r) { live.textContent = `Replayed ${r.replayed} dead ${r.replayed === 1 ? "delivery" : "deliveries"}.`; note(live.textContent); await refresh(); }
  });
  filterForm.addEventListener("change", async () => {
    filters.webhook = filterForm.elements.webhook.value;
    filters.status = filterForm.elements.status.value;
    setQuery("/deliveries", filters);
    setReplay();
    older = [];
    first = await list();
    next = first.next;
    draw();
  });
  filterForm.addEventListener("submit", (e) => e.preventDefault());

  let paused = false;
  const pauseButton = h("button", { type: "button", class: "quiet", "aria-pressed": "false", onclick: () => {
    paused = !paused;
    pauseButton.setAttribute("aria-pressed", String(paused));
    pauseButton.textContent = paused ? "Resume live updates" : "Pause live updates";
  } }, "Pause live updates");

  const refresh = async () => {
    const before = new Set(first.items.map((d) => d.id));
    first = await list();
    if (!older.length) next = first.next;
    const changed = draw();
    const added = first.items.filter((d) => !before.has(d.id)).length;
    // Said once per change, not on every poll: a screen reader hears what is new.
    if (changed) live.textContent = added ? `${added} new ${added === 1 ? "delivery" : "deliveries"}.` : `${changed} ${changed === 1 ? "delivery" : "deliveries"} changed.`;
  };

  setReplay();
  draw();
  render(ctx, "Deliveries",
    h("div", { class: "title" }, h("h1", { tabindex: -1 }, "Deliveries"), pauseButton),
    filterForm, replayForm, updated, live, el, empty, moreButton);
  focusHeading();
  poll(ctx, () => (paused ? undefined : refresh()));
}

function deliveryRow(ctx, d) {
  const replayable = d.status === "dead" || d.status === "failed";
  const replay = replayable ? h("button", { type: "button", class: "quiet small", "data-focus": "replay", "aria-label": `Replay delivery ${short(d.id)}`, onclick: async (e) => {
    e.currentTarget.disabled = true;
    try { await api("POST", `/deliveries/${encodeURIComponent(d.id)}/replay`, {}, ctx); note(`Delivery ${short(d.id)} queued again.`); }
    catch (err) { if (err.status !== 401) note(err.message); }
  } }, "Replay") : null;
  return h("tr", { class: `status-${d.status}` },
    cell("Updated", fmtTime(d.updated_at)),
    cell("Event", h("a", { href: `#/events/${encodeURIComponent(d.event_id)}` }, eventName(d.event))),
    cell("Webhook", d.webhook_id),
    cell("Status", badge(d.status)),
    cell("Attempts", String(d.attempts ?? 0)),
    cell("Next attempt or last error",
      d.next_attempt_at && d.status !== "delivered" && d.status !== "dead" ? h("span", {}, fmtIn(d.next_attempt_at), " ") : null,
      d.last_error ? h("span", { class: "error-text" }, d.last_error) : null),
    cell("", h("a", { href: `#/deliveries/${encodeURIComponent(d.id)}`, "data-focus": "open", "aria-label": `Attempts of delivery ${short(d.id)}` }, "Attempts"), " ", replay));
}

const short = (id) => String(id).slice(0, 8);
const eventName = (event) => (typeof event === "string" ? event : event?.event ?? event?.name ?? "event");

async function deliveryPage(ctx, _query, id) {
  const load = () => api("GET", `/deliveries/${encodeURIComponent(id)}`, undefined, ctx);
  const body = h("div");
  const draw = ({ delivery: d, attempts }) => {
    const replayable = d.status === "dead" || d.status === "failed";
    const { el, tbody } = table("Attempts, in order", ["#", "At", "Answer", "Duration", "Response", "Error"]);
    syncRows(tbody, attempts.map((a, i) => ({ ...a, n: i + 1 })), (a) => a.n, (a) => h("tr", {},
      cell("#", String(a.n)), cell("At", fmtTime(a.at)),
      cell("Answer", a.status != null ? h("span", { class: a.status < 300 ? "ok" : "bad" }, String(a.status)) : h("span", { class: "muted" }, "none")),
      cell("Duration", a.duration_ms != null ? `${a.duration_ms} ms` : "–"),
      cell("Response", a.response ? pre(a.response) : h("span", { class: "muted" }, "–")),
      cell("Error", a.error ? h("span", { class: "error-text" }, a.error) : "–")));
    const replay = replayable ? h("button", { type: "button", onclick: async () => {
      try { await api("POST", `/deliveries/${encodeURIComponent(id)}/replay`, {}, ctx); note("Queued again."); update(await load()); }
      catch (err) { if (err.status !== 401) note(err.message); }
    } }, "Replay this delivery") : null;
    fill(body, 
      h("dl", { class: "facts" },
        h("dt", {}, "Status"), h("dd", {}, badge(d.status)),
        h("dt", {}, "Webhook"), h("dd", {}, h("a", { href: `#/webhooks/${encodeURIComponent(d.webhook_id)}` }, d.webhook_id)),
        h("dt", {}, "Event"), h("dd", {}, h("a", { href: `#/events/${encodeURIComponent(d.event_id)}` }, eventName(d.event)), " ", h("span", { class: "muted small" }, d.event_id)),
        h("dt", {}, "Message id"), h("dd", {}, code(d.msg_id ?? "–")),
        // Every attempt ever made, replays included (the delivery's own count restarts with a replay).
        h("dt", {}, "Attempts"), h("dd", {}, String(attempts.length)),
        d.next_attempt_at && (d.status === "pending" || d.status === "failed") ? [h("dt", {}, "Next attempt"), h("dd", {}, fmtTime(d.next_attempt_at), " ", fmtIn(d.next_attempt_at) ?? "")] : null,
        d.last_error ? [h("dt", {}, "Last error"), h("dd", { class: "error-text" }, d.last_error)] : null,
        h("dt", {}, "Updated"), h("dd", {}, fmtTime(d.updated_at))),
      replay,
      h("h2", {}, "Attempts"),
      attempts.length ? el : h("p", { class: "empty" }, "No attempt yet."),
      requestSection);
  };
  // The request, rendered once from the stored event and the webhook's current
  // definition (each attempt signs it with its own timestamp).
  const requestSection = h("section", { "aria-labelledby": "request-title" }, h("h2", { id: "request-title" }, "Request"));
  const first = await load();
  api("POST", `/webhooks/${encodeURIComponent(first.delivery.webhook_id)}/preview`,
    { event_id: first.delivery.event_id, msg_id: first.delivery.msg_id }, ctx).then((r) => {
    const req = r.request;
    requestSection.append(h("div", {},
      h("p", { class: "muted small" }, "As the webhook's current definition renders the stored event; each attempt carries its own timestamp and signature."),
      r.error ? h("p", { class: "error-text" }, r.error) : null,
      req ? h("div", {},
        h("p", { class: "request-line" }, h("span", { class: "method" }, req.method), " ", h("span", { class: "url" }, req.url)),
        h("h3", {}, "Headers"), pre((req.headers ?? []).map(([k, v]) => `${k}: ${v}`).join("\n") || "(none)"),
        req.body != null ? [h("h3", {}, "Body"), pre(prettyBody(req.body))] : null) : null));
  }, (e) => {
    if (e.status !== 401) requestSection.append(h("p", { class: "muted" }, e.status === 404 ? "The webhook no longer exists." : e.message));
  });
  const live = h("p", { class: "visually-hidden", "aria-live": "polite" });
  let sig = "";
  const update = (fresh) => {
    if (JSON.stringify(fresh) === sig) return;
    // Announced only when something changed: the status and the attempt count.
    if (sig) live.textContent = `Status ${fresh.delivery.status}, ${fresh.attempts.length} ${fresh.attempts.length === 1 ? "attempt" : "attempts"}.`;
    sig = JSON.stringify(fresh);
    draw(fresh);
  };
  update(first);
  render(ctx, `Delivery ${short(id)}`,
    h("p", { class: "crumbs" }, h("a", { href: "#/deliveries" }, "Deliveries"), " / "),
    h("h1", { tabindex: -1 }, `Delivery ${short(id)}`),
    live, body);
  focusHeading();
  poll(ctx, async () => update(await load()));
}

// ---------------------------------------------------------------- events

async function eventsPage(ctx, query) {
  const filters = { name: query.get("name") ?? "", user_id: query.get("user_id") ?? "" };
  const [names, first] = await Promise.all([
    api("GET", "/event-names", undefined, ctx).then((r) => r.names, () => []),
    api("GET", `/events${q({ ...filters, limit: 50 })}`, undefined, ctx),
  ]);
  let items = first.items;
  let next = first.next;
  const { el, tbody } = table("Events, newest first", ["Received", "Event", "User", "Properties", "Webhooks"]);
  const empty = h("p", { class: "empty" }, "No events match.");
  const moreButton = h("button", { type: "button", class: "quiet", onclick: async () => {
    const page = await api("GET", `/events${q({ ...filters, limit: 50, cursor: next })}`, undefined, ctx);
    items = items.concat(page.items);
    next = page.next;
    draw();
  } }, "Show older");
  const deliveredTo = new Map(); // event id → its deliveries, fetched after the list is on screen
  const row = (e) => h("tr", {},
    cell("Received", fmtTime(e.received_at)),
    cell("Event", h("a", { href: `#/events/${encodeURIComponent(e.id)}`, "data-focus": "open" }, e.name)),
    cell("User", e.user_id ?? h("span", { class: "muted" }, e.anonymous_id ? `anonymous ${short(e.anonymous_id)}` : "–")),
    cell("Properties", properties(e.properties)),
    cell("Webhooks", deliveredTo.has(e.id) ? webhookList(deliveredTo.get(e.id)) : h("span", { class: "muted" }, "…")));
  const draw = () => {
    syncRows(tbody, items.map((e) => ({ ...e, _to: deliveredTo.get(e.id) ?? null })), (e) => e.id, row);
    empty.hidden = items.length > 0;
    el.hidden = items.length === 0;
    moreButton.hidden = !next;
  };
  const filterForm = h("form", { class: "filters", role: "search", "aria-label": "Filter events" },
    field({ label: "Event", name: "name", control: "select", options: [["", "Any event"], ...names.map((n) => [n, n])], value: filters.name }),
    field({ label: "User id", name: "user_id", autocomplete: "off", value: filters.user_id, spellcheck: "false" }),
    h("button", { type: "submit" }, "Search"));
  filterForm.addEventListener("submit", (e) => {
    e.preventDefault();
    location.hash = `#/events${q({ name: filterForm.elements.name.value, user_id: filterForm.elements.user_id.value.trim() })}`;
  });
  draw();
  render(ctx, "Events", h("h1", { tabindex: -1 }, "Events"), filterForm, el, empty, moreButton);
  focusHeading();
  // Which webhooks each shown event went to: one small request per event, a few at a time.
  const queue = items.slice(0, 50).map((e) => e.id);
  const worker = async () => {
    while (queue.length && !ctx.signal.aborted) {
      const eid = queue.shift();
      const r = await api("GET", `/events/${encodeURIComponent(eid)}`, undefined, ctx).catch(() => null);
      deliveredTo.set(eid, r?.deliveries ?? []);
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  draw();
  details(ctx);
}

function webhookList(deliveries) {
  if (!deliveries.length) return h("span", { class: "muted" }, "none");
  return h("ul", { class: "to" }, deliveries.map((d) => h("li", {},
    h("a", { href: `#/deliveries/${encodeURIComponent(d.id)}` }, d.webhook_id), " ", badge(d.status))));
}

async function eventPage(ctx, _query, id) {
  const r = await api("GET", `/events/${encodeURIComponent(id)}`, undefined, ctx);
  const e = r.event ?? {};
  const { el, tbody } = table("Deliveries of this event", ["Webhook", "Status", "Attempts", "Updated", "Last error"]);
  syncRows(tbody, r.deliveries ?? [], (d) => d.id, (d) => h("tr", {},
    cell("Webhook", h("a", { href: `#/deliveries/${encodeURIComponent(d.id)}` }, d.webhook_id)),
    cell("Status", badge(d.status)), cell("Attempts", String(d.attempts ?? 0)), cell("Updated", fmtTime(d.updated_at)),
    cell("Last error", d.last_error ? h("span", { class: "error-text" }, d.last_error) : "–")));
  const name = e.event ?? e.name ?? "Event";
  render(ctx, name,
    h("p", { class: "crumbs" }, h("a", { href: "#/events" }, "Events"), " / "),
    h("h1", { tabindex: -1 }, name),
    h("dl", { class: "facts" },
      h("dt", {}, "Id"), h("dd", {}, code(e.id ?? id)),
      h("dt", {}, "Received"), h("dd", {}, fmtTime(r.received_at)),
      h("dt", {}, "Timestamp"), h("dd", {}, e.timestamp ?? "–"),
      h("dt", {}, "User id"), h("dd", {}, e.userId ?? "–"),
      h("dt", {}, "Anonymous id"), h("dd", {}, e.anonymousId ?? "–")),
    h("h2", {}, "Sent to"),
    (r.deliveries ?? []).length ? el : h("p", { class: "empty" }, "No webhook matched this event."),
    h("h2", {}, "Properties"), pre(json(e.properties ?? {})),
    h("details", {}, h("summary", {}, "The whole event"), pre(json(e))));
  focusHeading();
}

// ---------------------------------------------------------------- sources

async function sourcesPage(ctx) {
  const { items } = await api("GET", "/sources", undefined, ctx);
  const origins = (text) => text.split(/[\s,]+/).filter(Boolean);

  const create = h("form", { class: "panel spaced", novalidate: true, "aria-labelledby": "new-source" },
    h("h2", { id: "new-source" }, "New source"),
    formError(),
    h("div", { class: "row2" },
      field({ label: "Write key", name: "write_key", hint: "Empty: one is generated (pk_…).", autocomplete: "off", spellcheck: "false" }),
      field({ label: "Allowed origins", name: "origins", control: "textarea", rows: 2, hint: "One per line, e.g. https://app.example.com, or * for any.", spellcheck: "false" })),
    h("button", { type: "submit" }, "Create source"));
  create.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { origins: origins(create.elements.origins.value) };
    if (create.elements.write_key.value.trim()) body.write_key = create.elements.write_key.value.trim();
    const made = await submitting(create, () => api("POST", "/sources", body, ctx), { conflict: "write_key" });
    if (made) { note(`Source ${made.write_key} created.`); route(); }
  });

  const { el, tbody } = table("Sources", ["Write key", "Allowed origins", "From", "State", ""]);
  const row = (s) => {
    const status = h("span", { role: "status", class: "visually-hidden" });
    const keyInput = h("input", { readonly: true, value: s.write_key, class: "visually-hidden", tabindex: -1, "aria-hidden": "true" });
    const edit = h("form", { class: "inline-form", novalidate: true, hidden: true },
      field({ label: `Origins of ${s.write_key}`, name: "origins", control: "textarea", rows: 2, value: (s.origins ?? []).join("\n"), spellcheck: "false" }),
      formError(),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Save origins"),
        h("button", { type: "button", class: "quiet", onclick: () => { edit.hidden = true; editButton.hidden = false; editButton.focus(); } }, "Cancel")));
    edit.addEventListener("submit", async (e) => {
      e.preventDefault();
      const saved = await submitting(edit, () => api("PUT", `/sources/${encodeURIComponent(s.write_key)}`, { origins: origins(edit.elements.origins.value) }, ctx));
      if (saved) { note(`Origins of ${s.write_key} saved.`); route(); }
    });
    const editButton = h("button", { type: "button", class: "quiet small", "data-focus": "edit", onclick: () => { edit.hidden = false; editButton.hidden = true; edit.elements.origins.focus(); } }, "Edit origins");
    const revoked = s.revoked_at != null;
    return h("tr", { class: revoked ? "revoked" : "" },
      cell("Write key", code(s.write_key), " ", h("button", { type: "button", class: "quiet small", "aria-label": `Copy ${s.write_key}`, onclick: () => copy(s.write_key, keyInput, status) }, "Copy"), keyInput, status),
      cell("Allowed origins", (s.origins ?? []).length ? h("ul", { class: "to" }, s.origins.map((o) => h("li", {}, o === "*" ? "any origin (*)" : o))) : h("span", { class: "muted" }, "none"), edit),
      cell("From", s.origin === "config" ? (s.edited ? "configuration, edited here" : "configuration") : "console or API"),
      cell("State", revoked ? [h("span", { class: "badge dead" }, "revoked"), " ", fmtTime(s.revoked_at)] : h("span", { class: "badge delivered" }, "active")),
      cell("", revoked ? null : [editButton, " ", confirmButton("Revoke", "Press again to revoke", async () => {
        await api("DELETE", `/sources/${encodeURIComponent(s.write_key)}`, undefined, ctx);
        note(`${s.write_key} revoked: its batches are refused from now on.`);
        route();
      }, "danger small")]));
  };
  syncRows(tbody, items, (s) => s.write_key, row);
  render(ctx, "Sources",
    h("h1", { tabindex: -1 }, "Sources"),
    h("p", {}, "A source is a write key the SDK sends with, and the origins (sites) allowed to use it."),
    items.length ? el : h("p", { class: "empty" }, "No sources yet."),
    create);
  focusHeading();
}

// ---------------------------------------------------------------- start

window.addEventListener("hashchange", route);
// The skip link must not change the hash: that is the router's.
document.querySelector(".skip").addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});
route();
