// Shared pieces of the browser tests: a recording receiver that stands in for
// the relay, a static site for the test pages, and Debian's Chromium.
import http from "node:http";
import crypto from "node:crypto";
import os from "node:os";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * A loopback HTTP receiver that records every request and answers with the
 * scripted responses in order (then 202 `{"accepted":n,"duplicates":0}`).
 * It sends the CORS headers a relay must send, including
 * `Access-Control-Expose-Headers: Retry-After`.
 */
export async function startReceiver(port = 0) {
  const requests = [];
  const script = [];
  const waiters = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const raw = Buffer.concat(chunks).toString("utf8");
      let body = null;
      try { body = raw ? JSON.parse(raw) : null; } catch { body = { unparseable: raw }; }
      const record = { method: req.method, url: req.url, headers: req.headers, body, raw, at: Date.now() };
      requests.push(record);
      const cors = {
        "access-control-allow-origin": req.headers.origin ?? "*",
        "access-control-expose-headers": "Retry-After",
      };
      if (req.method === "OPTIONS") {
        res.writeHead(204, { ...cors, "access-control-allow-headers": "content-type", "access-control-allow-methods": "POST" });
        res.end();
      } else {
        const next = script.shift() ?? { status: 202 };
        const payload = next.status < 300
          ? { accepted: body?.events?.length ?? 0, duplicates: 0 }
          : { error: { code: next.code ?? "scripted", message: `scripted ${next.status}` } };
        res.writeHead(next.status, { ...cors, "content-type": "application/json", ...(next.headers ?? {}) });
        res.end(JSON.stringify(payload));
      }
      for (const w of waiters.splice(0)) w();
    });
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    port: server.address().port,
    endpoint: `${url}/v1/batch`,
    requests,
    /** Queue responses: `{status, headers?}` objects, used in order. */
    respond(...responses) { script.push(...responses); },
    posts() { return requests.filter((r) => r.method === "POST"); },
    events() { return this.posts().flatMap((r) => r.body?.events ?? []); },
    /** Resolves once `predicate()` holds, checking after each request. */
    async until(predicate, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (!predicate()) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`receiver: condition not met within ${timeoutMs} ms (${requests.length} requests)`);
        await new Promise((r) => { waiters.push(r); setTimeout(r, Math.min(left, 250)); });
      }
    },
    reset() { requests.length = 0; script.length = 0; },
    close() { return new Promise((r) => server.close(r)); },
  };
}

const types = { ".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm", ".json": "application/json" };

/**
 * Serves the test pages and the installed `cuecast` package (from
 * node_modules, as a user's bundler would) on another loopback origin.
 * `headers` are added to every response (e.g. cross-origin isolation).
 */
export async function startSite({ headers = {}, roots = {} } = {}) {
  const mounts = { "/node_modules/": path.join(here, "node_modules"), "/": path.join(here, "pages"), ...roots };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    const prefix = Object.keys(mounts).sort((a, b) => b.length - a.length).find((p) => url.pathname.startsWith(p));
    const file = path.join(mounts[prefix], decodeURIComponent(url.pathname.slice(prefix.length)) || "index.html");
    if (!file.startsWith(mounts[prefix]) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      res.writeHead(404).end("not found");
      return;
    }
    res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream", "cache-control": "no-store", ...headers });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}

/** Debian's Chromium, headless, with the flags this closed network needs. */
export async function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--js-flags=--expose-gc",
    ],
  });
}

/** Opens `page.html` of the site with `cc` started from `options` (as `window.cc`). */
export async function openPage(browser, site, receiver, options = {}, file = "sdk.html") {
  const context = await browser.newContext();
  const page = await context.newPage();
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e.message}`));
  const opts = { endpoint: receiver.endpoint, writeKey: "pk_test", ...options };
  await page.goto(`${site.url}/${file}#${encodeURIComponent(JSON.stringify(opts))}`);
  await page.waitForFunction(() => window.cc || window.ccError);
  const error = await page.evaluate(() => window.ccError && String(window.ccError));
  if (error) throw new Error(`init failed: ${error}\n${logs.join("\n")}`);
  return { page, context, logs };
}

/** A free loopback port (for a process that must be told its port up front). */
export async function freePort() {
  const server = http.createServer();
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

/**
 * Starts the relay binary (`target/debug/cuecast-relay` unless `bin` says
 * otherwise) on a fresh directory (or `dir`, and `port`, to restart one) with
 * the TOML that `config({ listen, dir })` returns, and waits for `/readyz`. `stop(signal)` ends it; `dir` is removed by `cleanup()`.
 */
export async function startRelay(config, { bin = path.resolve(here, "../../target/debug/cuecast-relay"), dir, port, readyMs = 30_000 } = {}) {
  dir ??= fs.mkdtempSync(path.join(os.tmpdir(), "cuecast-relay-"));
  port ??= await freePort();
  const listen = `127.0.0.1:${port}`;
  const file = path.join(dir, "relay.toml");
  fs.writeFileSync(file, config({ listen, dir }));
  const child = spawn(bin, ["serve", "--config", file], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (c) => { stderr = (stderr + c).slice(-20_000); });
  const exited = new Promise((r) => child.once("exit", (code, signal) => r({ code, signal })));
  const url = `http://${listen}`;
  const deadline = Date.now() + readyMs;
  for (;;) {
    const ready = await fetch(`${url}/readyz`).then((r) => r.ok, () => false);
    if (ready) break;
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`relay did not become ready:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    endpoint: `${url}/v1/batch`,
    dir,
    process: child,
    stderr: () => stderr,
    /** Sends `signal` and resolves once the process has exited. */
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
    cleanup() { fs.rmSync(dir, { recursive: true, force: true }); },
  };
}

/**
 * Verifies a Standard Webhooks signature, written here from the spec rather
 * than taken from the relay: `v1,` + base64(HMAC-SHA256(key, `id.timestamp.content`)),
 * key = base64-decoded secret after `whsec_`; the timestamp must be within 5 minutes.
 * For a POST `content` is the raw body, for a GET the request target.
 */
export function verifySignature(request, secret, content) {
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const id = request.headers["webhook-id"];
  const ts = request.headers["webhook-timestamp"];
  if (!id || !ts || !request.headers["webhook-signature"]) return false;
  const expected = crypto.createHmac("sha256", key).update(`${id}.${ts}.${content}`).digest("base64");
  const given = request.headers["webhook-signature"].split(" ").map((s) => s.replace(/^v1,/, ""));
  return given.includes(expected) && Math.abs(Date.now() / 1000 - Number(ts)) < 300;
}

/**
 * The files a page downloads to run the SDK from the installed package: the
 * wasm module and `index.js` (the entry, bundled with the wasm-bindgen glue
 * and `host.js`). What the size test and `cargo xtask bench` weigh.
 */
export function payloadFiles(pkg = path.join(here, "node_modules/cuecast")) {
  return ["cuecast_bg.wasm", "index.js"].map((f) => path.join(pkg, f));
}
