// The browser calls the wasm layer makes through plain JavaScript: fetch,
// sendBeacon and the DOM walk of auto-capture. Each is a few lines here and,
// through web-sys, gloo-net and serde_json's map, several kilobytes of wasm
// and glue (README, "Size"). The decisions stay in Rust: this file only
// performs IO and reports what happened. wasm-bindgen copies it into the
// package (`snippets/`) and imports it from the glue.

// POSTs `body` as text/plain (a CORS-simple request: no preflight) and
// resolves with [status, Retry-After], status 0 when there was no answer
// (network error, CORS refusal, timeout). Never rejects.
export async function post(url, body, timeoutMs, keepalive) {
  const controller = new AbortController();
  // Without a deadline a relay that accepts and never answers would hold
  // the one in-flight batch forever.
  const deadline = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const r = await fetch(url, {
      method: "POST",
      body,
      keepalive,
      signal: controller.signal,
      headers: { "Content-Type": "text/plain;charset=UTF-8" },
    });
    const retryAfter = r.headers.get("retry-after");
    // Read the (small) body: until it is consumed the browser counts a
    // keepalive request against the page's 64 KB, and later ones fail.
    await r.text().catch(() => {});
    return [r.status, retryAfter];
  } catch {
    return [0, null];
  } finally {
    clearTimeout(deadline);
  }
}

// Whether fetch supports `keepalive` here (older Firefox: no).
export const keepaliveSupported = () => typeof Request !== "undefined" && "keepalive" in Request.prototype;

// Queues `body` with navigator.sendBeacon as a text/plain Blob; false when
// the browser refused it (over its quota) or has no sendBeacon.
export function beacon(url, body) {
  try {
    return navigator.sendBeacon(url, new Blob([body], { type: "text/plain;charset=UTF-8" }));
  } catch {
    return false;
  }
}

// JavaScript value → JSON text, refusing what JSON.stringify would send
// differently from what the developer meant: returns the text, or
// [path, why] naming the field. undefined is null (absent as a property),
// a Date its ISO string; functions, Symbols, BigInts, NaN and Infinity,
// integers beyond 2^53 - 1, invalid Dates, Maps and Sets, cycles and more
// than 32 levels of nesting are refused.
export function encode(value, field) {
  const seen = [];
  const walk = (v, path) => {
    if (v == null) return null;
    const type = typeof v;
    const no = (why) => {
      throw [path, why];
    };
    if (type == "number") {
      if (!isFinite(v)) no("must be a finite number, got NaN or Infinity");
      if (Number.isInteger(v) && !Number.isSafeInteger(v))
        no("is an integer beyond 2^53 - 1, which JSON cannot carry exactly; send it as a string");
    }
    if (type != "object") {
      if (type == "function") no("is a function, which cannot be sent");
      if (type == "symbol") no("is a Symbol, which cannot be sent");
      if (type == "bigint") no("is a BigInt; send it as a string or a number");
      return v;
    }
    if (v instanceof Date) return isNaN(v) ? no("is an invalid Date") : v.toISOString();
    if (seen.includes(v)) no("refers back to itself (a cycle), which cannot be sent");
    if (seen.length >= 32) no("is nested more than 32 levels deep");
    if (v instanceof Map || v instanceof Set) no("is a Map or Set; convert it to a plain object or array");
    seen.push(v);
    let out;
    if (Array.isArray(v)) out = v.map((item, i) => walk(item, `${path}[${i}]`));
    else {
      out = {};
      for (const key of Object.keys(v)) {
        // Like JSON.stringify: a property set to undefined is absent.
        if (v[key] !== undefined) out[key] = walk(v[key], !path ? key : key[0] == "[" ? path + key : `${path}.${key}`);
      }
    }
    seen.pop();
    return out;
  };
  try {
    return JSON.stringify(walk(value, field));
  } catch (e) {
    // A getter that throws: say so rather than throw into the wasm.
    return Array.isArray(e) ? e : [field, `could not be read: ${e}`];
  }
}

// Declarative auto-capture: `data-cuecast-*` attributes become events.
// One delegated listener per event type on `document`, in the capture phase
// (a page calling stopPropagation() does not hide interactions), nothing per
// element, so elements added later work too. `found(event, properties)`
// hands each interaction to the Rust client, which validates and queues it.
//
// - click inside [data-cuecast-shoutout=ID] → shoutout.clicked (`action`
//   from the nearest data-cuecast-action inside it, else `link` inside an
//   a[href], else `cta`);
// - click inside [data-cuecast-task=ID] → onboarding.task_completed
//   (`checklistId` from the nearest data-cuecast-checklist);
// - submit of form[data-cuecast-survey=ID] → survey.submitted with the form's
//   named fields as `answers` (a field named `score` becomes the score,
//   `comment` the comment; data-cuecast-kind on the form sets `kind`).
//   Password, hidden and file inputs, buttons, disabled or unchecked
//   controls and fields inside [data-cuecast-ignore] are never captured.
export function capture(found) {
  document.addEventListener("click", (e) => fromClick(e, found), true);
  document.addEventListener("submit", (e) => fromSubmit(e, found), true);
}

function fromClick(e, found) {
  // A click on text lands on the text node; its element is the parent.
  const target = e.target instanceof Element ? e.target : e.target && e.target.parentElement;
  if (!target) return;
  const shoutout = target.closest("[data-cuecast-shoutout]");
  if (shoutout) {
    // The nearest marker between the clicked element and the ShoutOut wins.
    const inside = (el) => el && shoutout.contains(el) && el;
    const marked = inside(target.closest("[data-cuecast-action]"));
    const action = marked ? marked.getAttribute("data-cuecast-action") : inside(target.closest("a[href]")) ? "link" : "cta";
    found("shoutout.clicked", { shoutoutId: shoutout.getAttribute("data-cuecast-shoutout"), action });
    return;
  }
  const task = target.closest("[data-cuecast-task]");
  if (!task) return;
  const props = { taskId: task.getAttribute("data-cuecast-task") };
  const list = task.closest("[data-cuecast-checklist]");
  if (list) props.checklistId = list.getAttribute("data-cuecast-checklist");
  found("onboarding.task_completed", props);
}

const SKIPPED = ["password", "hidden", "file", "submit", "button", "reset", "image"];

function fromSubmit(e, found) {
  const form = e.target;
  if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-cuecast-survey")) return;
  const props = { surveyId: form.getAttribute("data-cuecast-survey") };
  if (form.hasAttribute("data-cuecast-kind")) props.kind = form.getAttribute("data-cuecast-kind");
  const answers = new Map();
  for (const el of form.elements) {
    for (const value of fieldValues(el)) {
      if (el.name === "score") {
        // A score is a number; one that does not parse stays a string so that
        // validation names it instead of silently dropping it.
        const text = value.trim();
        const n = Number(text);
        props.score = text !== "" && Number.isFinite(n) && String(n) === text ? n : value;
      } else if (el.name === "comment") {
        props.comment = value;
      } else {
        answers.set(el.name, [...(answers.get(el.name) || []), value]);
      }
    }
  }
  if (answers.size || !("score" in props)) {
    props.answers = [...answers].map(([questionId, v]) => ({ questionId, answer: v.length === 1 ? v[0] : v }));
  }
  found("survey.submitted", props);
}

// The submitted values of a form control: none when it is not captured,
// several for a <select multiple>.
function fieldValues(el) {
  if (!el.name || el.disabled || el.closest("[data-cuecast-ignore]")) return [];
  if (el instanceof HTMLInputElement) {
    const kind = el.type.toLowerCase();
    const unchecked = (kind === "checkbox" || kind === "radio") && !el.checked;
    return SKIPPED.includes(kind) || unchecked ? [] : [el.value];
  }
  if (el instanceof HTMLSelectElement) return Array.from(el.selectedOptions, (o) => o.value);
  if (el instanceof HTMLTextAreaElement) return [el.value];
  return [];
}

// Where queued events are kept between page loads (the rules, and which page
// sends what, are in persist.rs): IndexedDB with a localStorage "rescue"
// copy beside it, else localStorage alone, else nothing. Keys and values are
// strings the Rust side builds and parses; nothing here throws into the page.
export async function openShelf() {
  let local = null;
  try {
    localStorage.setItem("cuecast:v1:probe", "1");
    localStorage.removeItem("cuecast:v1:probe");
    local = localStorage;
  } catch {
    // Blocked, private mode or full: no localStorage.
  }
  const db = await openDb();
  if (db) return shelf("IndexedDB", db, local);
  return local ? shelf("localStorage", null, local) : null;
}

// IndexedDB itself throws in some sandboxed frames and `open` fails in some
// private modes: both fall back (null).
function openDb() {
  return new Promise((resolve) => {
    try {
      const request = indexedDB.open("cuecast", 1);
      request.onupgradeneeded = () => request.result.createObjectStore("events");
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => resolve(null);
    } catch {
      resolve(null);
    }
  });
}

const settled = (request) =>
  new Promise((resolve) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => resolve([]);
  });

function shelf(kind, db, local) {
  const localKeys = (low) => {
    const keys = [];
    for (let i = 0; i < local.length; i++) {
      const key = local.key(i);
      if (key && key.startsWith(low)) keys.push(key);
    }
    return keys;
  };
  // Reads one request's result from the object store, [] when it fails.
  const read = (method, low) => {
    if (!db) return [];
    try {
      const store = db.transaction("events").objectStore("events");
      return settled(store[method](IDBKeyRange.bound(low, low + "\uffff")));
    } catch {
      return [];
    }
  };
  return {
    kind,
    // Issues every write before returning (they are on their way even if the
    // page closes next); the promise says whether they were committed. A
    // quota error aborts the transaction: reported, not thrown.
    write(changes) {
      try {
        if (!db) {
          let ok = true;
          for (const [key, value] of changes) {
            try {
              if (value === null) local.removeItem(key);
              else local.setItem(key, value);
            } catch {
              ok = false;
            }
          }
          return ok ? Promise.resolve(true) : Promise.reject(false);
        }
        const tx = db.transaction("events", "readwrite");
        const store = tx.objectStore("events");
        for (const [key, value] of changes) {
          if (value === null) {
            store.delete(key);
            local && local.removeItem(key); // its rescue copy, if any
          } else {
            store.put(value, key);
          }
        }
        return new Promise((resolve, reject) => {
          tx.oncomplete = () => resolve(true);
          tx.onabort = tx.onerror = () => reject(false);
        });
      } catch {
        return Promise.reject(false);
      }
    },
    // Copies entries to localStorage at once, beside IndexedDB (the page may
    // be closing with writes uncommitted). A full quota only skips the copy.
    rescue(entries) {
      if (!db || !local) return;
      try {
        for (const [key, value] of entries) local.setItem(key, value);
      } catch {
        // Full: the rest stays in IndexedDB alone.
      }
    },
    // The keys, or the values, under `low`, from both stores.
    async keys(low) {
      return [...(local ? localKeys(low) : []), ...(await read("getAllKeys", low))];
    },
    async values(low) {
      const stored = local ? localKeys(low).map((k) => local.getItem(k)) : [];
      return [...stored, ...(await read("getAll", low))].filter((v) => typeof v === "string");
    },
  };
}

// The Web Locks API (navigator.locks), where the page has it (secure
// contexts in current browsers): one lock per page, held while it lives.
export const hasLocks = () => typeof navigator !== "undefined" && !!navigator.locks;

// Takes lock `name` and keeps it until the function it resolves with is
// called (or the page goes away). Resolves with null where the request is
// refused (an opaque origin): the page then goes on without its lock rather
// than waiting forever.
export function holdLock(name) {
  return new Promise((granted) => {
    navigator.locks.request(name, () => new Promise((release) => granted(release))).catch(() => granted(null));
  });
}

// Runs `task` (returns a promise) while holding lock `name`; resolves with
// whether it ran. Like every function here it never throws into the wasm
// (an exception there would leave the client's state borrowed).
export async function withLock(name, task) {
  try {
    await navigator.locks.request(name, task);
    return true;
  } catch {
    return false;
  }
}

// Calls `free` once lock `name` (another page's) is free: that page is gone
// or frozen. The lock is let go again at once.
export function whenFree(name, free) {
  navigator.locks.request(name, () => free()).catch(() => {});
}

// The names of the locks held now, by any page of this origin.
export async function heldLocks() {
  try {
    return (await navigator.locks.query()).held.map((lock) => lock.name);
  } catch {
    return [];
  }
}

// What the page says about itself, for every event's context: the parts that
// change (single-page apps), then those fixed for the page's life. A value
// the browser does not give is null.
export const pageContext = () => [location.href, location.pathname, document.referrer, document.title];

export function staticContext() {
  const read = (f) => {
    try {
      return f();
    } catch {
      return null;
    }
  };
  return [
    read(() => navigator.userAgent),
    read(() => navigator.language),
    read(() => Intl.DateTimeFormat().resolvedOptions().timeZone),
    read(() => screen.width),
    read(() => screen.height),
  ];
}

// A timer the Rust side holds: `tick` runs after `ms` (every `ms` when
// `every`); the returned function cancels it.
export function timer(ms, every, tick) {
  const id = every ? setInterval(tick, ms) : setTimeout(tick, ms);
  return () => (every ? clearInterval(id) : clearTimeout(id));
}

// The page's lifecycle, reported as `on(what, value)`: "hide" when it is
// hidden or left (`visibilitychange` to hidden is the last event a mobile
// browser reliably fires; `pagehide` covers navigation; never `unload`, which
// disables the back/forward cache), "freeze" and "thaw" when it enters and
// leaves the back/forward cache, "online", and "identity" with the new value
// when another tab stores `identityKey`.
export function lifecycle(identityKey, on) {
  addEventListener("storage", (e) => e.key === identityKey && e.newValue && on("identity", e.newValue));
  addEventListener("online", () => on("online"));
  document.addEventListener("visibilitychange", () => document.visibilityState === "hidden" && on("hide"));
  addEventListener("pagehide", (e) => {
    on("hide");
    if (e.persisted) on("freeze");
  });
  addEventListener("pageshow", (e) => e.persisted && on("thaw"));
}
