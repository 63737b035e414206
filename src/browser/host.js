// The browser calls the wasm layer makes through plain JavaScript: fetch,
// sendBeacon, the DOM walk of auto-capture, storage, Web Locks, timers and
// the page lifecycle, sequenced by one driver per client (`driver`). Each is
// a few lines here and, through web-sys, gloo and Rust futures, kilobytes of
// wasm and glue (README, "Size"). The decisions stay in Rust: this file only
// performs IO and reports what happened to the client's hooks. wasm-bindgen
// copies it beside the glue, which imports it; the package build bundles
// the three (index.js, glue, this) into one module.

// POSTs `body` as text/plain (a CORS-simple request: no preflight) and
// resolves with [status, Retry-After], status 0 when there was no answer
// (network error, CORS refusal, timeout). Never rejects.
async function post(url, body, timeoutMs, keepalive) {
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

// The typed helper of each event auto-capture finds.
const HELPERS = {
  "shoutout.clicked": "shoutoutClicked",
  "survey.submitted": "surveySubmitted",
  "onboarding.task_completed": "onboardingTaskCompleted",
};

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
function capture(found) {
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
async function openShelf() {
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

// Web Locks (navigator.locks, secure contexts in current browsers): each page
// holds a lock named after itself while it lives, so "its lock is free" is
// "that page is gone" (persist.rs has the whole protocol). None of these
// throws: a refused request (an opaque origin) goes on without the lock.

// Takes lock `name` and keeps it until the function it resolves with is
// called (or the page goes away); null where the request is refused.
function holdLock(name) {
  return new Promise((granted) => {
    navigator.locks.request(name, () => new Promise((release) => granted(release))).catch(() => granted(null));
  });
}

// Runs `task` (returns a promise) while holding lock `name`.
const withLock = (name, task) => navigator.locks.request(name, task).catch(() => {});

// Calls `free` once lock `name` (another page's) is free: that page is gone
// or frozen. The lock is let go again at once (`free` returns nothing).
const whenFree = (name, free) => navigator.locks.request(name, () => void free()).catch(() => {});

// The names of the locks held now, by any page of this origin.
async function heldLocks() {
  try {
    return (await navigator.locks.query()).held.map((lock) => lock.name);
  } catch {
    return [];
  }
}

// Small reads and writes of the page, none of which throws into the wasm
// (through web-sys each costs a binding, glue and the global-object lookup).
export const hasWindow = () => typeof window != "undefined";
export const now = () => Date.now();
export const online = () => navigator.onLine;
// `url` resolved against the page's address (null if it cannot be).
export function resolveUrl(url) {
  try {
    return new URL(url, location.href).href;
  } catch {
    return null;
  }
}
// Fills `bytes` from crypto.getRandomValues, or Math.random without Web
// Crypto (very old browsers, some sandboxed frames: ids stay unique, just
// less unpredictable).
export function random(bytes) {
  try {
    crypto.getRandomValues(bytes);
  } catch {
    for (let i = 0; i < bytes.length; i++) bytes[i] = Math.random() * 256;
  }
}
// localStorage, which throws in some private modes and sandboxed frames:
// null and false there, and when the quota is full.
export function load(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}
export function store(key, value) {
  try {
    localStorage.setItem(key, value);
    return true;
  } catch {
    return false;
  }
}
export const log = (message) => console.log("[cuecast]", message);
export const warn = (message) => console.warn(message);
// The error every public call throws: a CuecastError with `code` and `field`.
export function error(message, code, field) {
  const e = new Error(message);
  e.name = "CuecastError";
  e.code = code;
  e.field = field;
  return e;
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

// Calls the client's `hook`; the promise resolves with what it returned. A
// hook returns false when the client is inside another call (its state
// borrowed): it is called again on the next microtask. A borrow only lasts
// a synchronous call, so one that outlives 100 tries means a client that
// stopped (a trap in the wasm): give up rather than spin the page.
function call(client, hook, ...args) {
  return new Promise((done) => {
    let tries = 0;
    const go = () => {
      const result = client[hook](...args);
      if (result !== false) done(result);
      else if (++tries < 100) queueMicrotask(go);
    };
    go();
  });
}

// The IO of one client, sequenced: storage opened, this page's lock held,
// events of pages that are gone handed over, the lifecycle reported, batches
// posted, the wake-up timer set. `prefix` is the client's storage and lock
// namespace (`cuecast:v1:<scope>:`), `page` this page's id. Records are
// stored under `<prefix><owner page>:<event id>`.
export function driver(prefix, page, identityKey, captureClicks, debug) {
  let client, shelf, release, timeout;
  let ready = false;
  const settles = [];
  const watched = new Set();
  const locks = typeof navigator != "undefined" && navigator.locks;
  const pageLock = (owner) => `${prefix}page:${owner}`;
  const hold = async () => {
    if (locks) release = await holdLock(pageLock(page));
  };
  const becomeReady = () => {
    ready = true;
    call(client, "_ready", true);
  };
  const write = (entries) =>
    shelf && entries.length
      ? shelf.write(entries).catch(() => {
          if (debug) console.log("[cuecast]", "could not store queued events (quota or storage error); they are kept in memory");
        })
      : undefined;
  // Hands the records of pages that are gone to the client, which rewrites
  // them as its own before the adoption lock is let go (so two pages never
  // adopt the same record). A page still alive is watched instead. Without
  // Web Locks every other page's records are taken (the relay drops a
  // duplicate by its id).
  const takeOver = async () => {
    const held = locks ? await heldLocks() : [];
    const owners = new Set();
    for (const key of await shelf.keys(prefix)) {
      const rest = key.slice(prefix.length);
      if (rest.includes(":")) owners.add(rest.slice(0, rest.indexOf(":")));
    }
    const texts = [];
    for (const owner of owners) {
      if (owner == page) continue;
      if (held.includes(pageLock(owner))) watch(owner);
      else texts.push(...(await shelf.values(`${prefix}${owner}:`)));
    }
    if (texts.length) await write(await call(client, "_adopt", texts));
  };
  const adopt = () => (locks ? withLock(prefix + "adopt", takeOver) : takeOver());
  // `_wake(why)`: 0 the timer or events adopted, 1 back online, 2 the page
  // hidden or left, 3 the writes of the last task are due (WAKE_* in mod.rs).
  const wake = (why) => call(client, "_wake", why);
  const adoptAndSend = () => adopt().then(() => wake(0));
  const watch = (owner) => {
    if (watched.has(owner)) return;
    watched.add(owner);
    whenFree(pageLock(owner), () => {
      watched.delete(owner);
      adoptAndSend();
    });
  };
  return {
    // Starts it all for `client` (this page's handle on the Rust client).
    async start(c) {
      client = c;
      addEventListener("storage", (e) => e.key === identityKey && e.newValue && call(client, "_identity", e.newValue));
      addEventListener("online", () => wake(1));
      // `visibilitychange` to hidden is the last event a mobile browser
      // reliably fires; `pagehide` covers navigation; never `unload`, which
      // disables the back/forward cache.
      document.addEventListener("visibilitychange", () => document.visibilityState == "hidden" && wake(2));
      addEventListener("pagehide", (e) => {
        wake(2);
        if (!e.persisted) return;
        // Into the back/forward cache: a held lock keeps a page out of it,
        // and other pages may take its events meanwhile; nothing is sent
        // until it is back and knows which events are still its own.
        ready = false;
        call(client, "_ready", false);
        if (release) release();
        release = null;
      });
      addEventListener("pageshow", async (e) => {
        if (!e.persisted) return;
        if (shelf && locks) {
          await hold();
          const ours = await shelf.keys(`${prefix}${page}:`);
          await call(client, "_keepOnly", ours.map((key) => key.slice(prefix.length + page.length + 1)));
          await adopt();
        }
        becomeReady();
      });
      // What auto-capture finds goes through the typed helper of its event,
      // so it is validated as a call would be; a misconfigured element is
      // worth a warning even without debug, never an exception in the page.
      if (captureClicks)
        capture((event, props) => {
          try {
            client[HELPERS[event]](props);
          } catch (e) {
            console.warn(`[cuecast] auto-capture skipped ${event}:${e.message.slice(e.message.indexOf(":") + 1)}`);
          }
        });
      shelf = await openShelf();
      await call(client, "_attach", shelf && shelf.kind);
      if (shelf) {
        await hold();
        await adopt();
        // A backstop for the lock waits, which only cover the pages seen at the last look.
        setInterval(() => ready && adoptAndSend(), 10000);
      }
      becomeReady();
    },
    // POSTs a batch and reports the answer; `keepaliveBytes` > 0 sends it as
    // a keepalive request (counted by the client, echoed back).
    send(batchId, url, body, timeoutMs, keepaliveBytes) {
      post(url, body, timeoutMs, keepaliveBytes > 0).then(([status, retryAfter]) =>
        call(client, "_reply", batchId, status, retryAfter, keepaliveBytes, navigator.onLine),
      );
    },
    // What flush() returns: settled with the next report.
    flush() {
      return new Promise((resolve) => settles.push(resolve));
    },
    settle(sent, failed, pending, dropped, why) {
      const report = { sent, failed, pending, dropped };
      if (why) report.droppedWhy = why;
      for (const resolve of settles.splice(0)) resolve(report);
    },
    // Wakes the client in `ms` (replacing the previous wake-up); < 0 cancels.
    wake(ms) {
      clearTimeout(timeout);
      if (ms >= 0) timeout = setTimeout(() => wake(0), ms);
    },
    // The client's writes of this JS task, gathered and written right after it.
    soon() {
      queueMicrotask(() => wake(3));
    },
    // `[key, value or null]` entries, in order; never throws.
    write,
    // A synchronous copy to localStorage (the page may be closing).
    rescue(entries) {
      if (shelf) shelf.rescue(entries);
      // Storage not open yet (the page is closed in its first moments):
      // straight to localStorage, where the next page looks too.
      else if (shelf === undefined) for (const [key, value] of entries) store(key, value);
    },
  };
}
