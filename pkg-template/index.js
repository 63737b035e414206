// cuecast: the package entry. It loads the WebAssembly module on the first
// `init()` and hands back the Rust client. Importing this file never touches
// `window`, so server-side rendering and Node can import it safely.
import loadWasm, { init as startClient } from "./cuecast.js";

let loading;

const CLIENT_METHODS = [
  "track", "shoutoutClicked", "surveySubmitted", "onboardingTaskCompleted",
  "walkthruGoalReached", "identify", "reset", "optOut", "optIn",
];

// Where there is no browser window (SSR, Node, workers) every call does
// nothing; with `debug: true` it says so instead of failing silently.
function noopClient(options) {
  const debug = Boolean(options && options.debug);
  const say = (what) => {
    if (debug) console.log("[cuecast]", `${what}: no browser window here (server-side rendering?); nothing is sent`);
  };
  const client = {
    flush: async () => {
      say("flush");
      return { sent: 0, failed: 0, pending: 0, dropped: 0 };
    },
  };
  for (const name of CLIENT_METHODS) client[name] = () => say(name);
  client._replayAt = () => {}; // calls queued by load() before this stub came back
  return client;
}

// Calls made before the module has loaded are also written to localStorage
// (`loader.js` writes them there too), so a page closed while loading loses
// none: the next load() of the same relay and key replays them, with the time
// each was made and an id fixed when it was made (a call replayed twice is
// one event at the relay, which drops duplicates by id).
const EARLY_KEY = "cuecast:v1:early";

// A UUIDv4 (crypto.randomUUID needs a secure context; this works on plain http).
function newId() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 15) | 64;
  b[8] = (b[8] & 63) | 128;
  const h = Array.from(b, (x) => (x + 256).toString(16).slice(1)).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function readEarly() {
  try {
    return JSON.parse(localStorage.getItem(EARLY_KEY) || "[]");
  } catch {
    return []; // no storage (SSR, blocked) or a corrupt entry
  }
}

function writeEarly(calls) {
  try {
    if (calls.length) localStorage.setItem(EARLY_KEY, JSON.stringify(calls));
    else localStorage.removeItem(EARLY_KEY);
  } catch {
    // Full or blocked: the calls still live in memory for this page.
  }
}

/**
 * Starts cuecast. See index.d.ts for the options. Calls that earlier pages
 * made before the module had loaded, and left stored, are replayed first.
 * @param {import("./index").Options} options
 * @param {Array} [early] this page's calls made before loading (internal: load(), loader.js)
 * @returns {Promise<import("./index").Client>}
 */
export async function init(options, early = []) {
  if (typeof window === "undefined" || typeof document === "undefined") {
    return noopClient(options);
  }
  let settings = options;
  let wasmUrl;
  if (options && typeof options === "object" && "wasmUrl" in options) {
    ({ wasmUrl, ...settings } = options);
  }
  loading ??= loadWasm({ module_or_path: wasmUrl ?? new URL("./cuecast_bg.wasm", import.meta.url) });
  try {
    await loading;
  } catch (e) {
    loading = undefined; // let a later init() try again (e.g. after a network blip)
    throw e;
  }
  const client = startClient(settings);
  replayEarly(client, scopeOf(settings), early);
  return client;
}

const scopeOf = (options) => `${options && options.writeKey} ${options && options.endpoint}`;

// Replays the stored calls of this relay and key, then `early` (this page's,
// in memory with their original arguments), by time, each id once.
function replayEarly(client, scope, early) {
  const calls = new Map(readEarly().filter((c) => c.s === scope).map((c) => [c.id, c]));
  for (const call of early.splice(0)) calls.set(call.id, call);
  for (const c of [...calls.values()].sort((a, b) => a.t - b.t)) {
    // With the clock and the event id of the moment it was made.
    client._replayAt(c.t, c.id);
    try {
      if (!CLIENT_METHODS.includes(c.m)) throw new Error(`${c.m} is not a client method`);
      client[c.m](...c.a);
    } catch (e) {
      console.warn("[cuecast] a call made before loading was refused:", e && e.message);
    } finally {
      client._replayAt(-1, "");
    }
  }
  // In the same task as the replay: the page cannot close in between.
  if (calls.size) writeEarly(readEarly().filter((c) => c.s !== scope));
}

/**
 * Starts cuecast without waiting: returns at once a client whose calls are
 * queued (in memory and in localStorage) while the WebAssembly module loads,
 * then replayed in order on the real client. Use it where the first events
 * happen before an `await` is possible (bundled app start-up). Calls return
 * `undefined` (the event id is not known yet); a replayed call with bad input
 * is reported with `console.warn`, since its caller has moved on. `ready`
 * resolves to the real client, or rejects with the `init()` error.
 * @param {import("./index").Options} options
 * @param {Array} [early] calls already queued by `loader.js` (internal)
 * @returns {import("./index").BufferedClient}
 */
export function load(options, early = []) {
  const scope = scopeOf(options);
  // Shared with loader.js, which may still push to it until `ready`.
  const pending = early;
  let client;
  const ready = init(options, pending).then((started) => {
    client = started;
    replayEarly(started, scope, pending); // any call made while init() returned
    return started;
  });
  // The stub must never turn an init failure into an unhandled rejection;
  // `ready` still rejects for whoever awaits it.
  ready.catch(() => {});
  const buffered = {
    ready,
    flush: async () => (await ready).flush(),
  };
  for (const name of CLIENT_METHODS) {
    buffered[name] = (...args) => {
      if (client) return client[name](...args);
      const call = { m: name, a: args, t: Date.now(), id: newId(), s: scope };
      pending.push(call);
      writeEarly([...readEarly(), call]);
      return undefined;
    };
  }
  return buffered;
}
