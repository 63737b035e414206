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
  return client;
}

/**
 * Starts cuecast. See index.d.ts for the options.
 * @param {import("./index").Options} options
 * @returns {Promise<import("./index").Client>}
 */
export async function init(options) {
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
  return startClient(settings);
}

/**
 * Starts cuecast without waiting: returns at once a client whose calls are
 * queued in memory while the WebAssembly module loads, then replayed in order
 * on the real client. Use it where the first events happen before an `await`
 * is possible (bundled app start-up). Calls return `undefined` (the event id
 * is not known yet); a replayed call with bad input is reported with
 * `console.warn`, since its caller has moved on. `ready` resolves to the real
 * client, or rejects with the `init()` error.
 * @param {import("./index").Options} options
 * @returns {import("./index").BufferedClient}
 */
export function load(options) {
  const pending = [];
  let client;
  const ready = init(options).then((started) => {
    client = started;
    for (const [name, args] of pending.splice(0)) {
      try {
        started[name](...args);
      } catch (e) {
        console.warn("[cuecast] a call made before loading was refused:", e && e.message);
      }
    }
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
      pending.push([name, args]);
      return undefined;
    };
  }
  return buffered;
}
