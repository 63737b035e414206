// cargo xtask demo: the demo page on http://127.0.0.1:8080 and a receiver
// that prints what arrives. With DEMO_RELAY set (xtask starts the relay) the
// page sends to the relay and the receiver on 127.0.0.1:8687 prints the
// webhook requests the relay delivers; without it, the receiver stands in for
// the relay on 127.0.0.1:8686 and prints the batches. Ctrl-C stops it.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, "../../pkg");
const PAGE_PORT = Number(process.env.DEMO_PORT ?? 8080);
const RELAY = process.env.DEMO_RELAY ?? "http://127.0.0.1:8686";
const relayPort = Number(new URL(RELAY).port);
const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json" };

function serveFile(res, file) {
  if (!fs.existsSync(file) || fs.statSync(file).isDirectory()) return res.writeHead(404).end("not found");
  res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream", "cache-control": "no-store" });
  fs.createReadStream(file).pipe(res);
}

http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/demo-config.json") {
    res.writeHead(200, { "content-type": "application/json" });
    return res.end(JSON.stringify({ endpoint: `${RELAY}/v1/batch`, writeKey: "pk_live_demo" }));
  }
  if (url.pathname.startsWith("/cuecast/")) {
    // The package's files; nothing outside pkg/.
    const file = path.join(pkg, path.normalize(decodeURIComponent(url.pathname.slice("/cuecast/".length))));
    if (!file.startsWith(pkg + path.sep)) return res.writeHead(404).end("not found");
    return serveFile(res, file);
  }
  serveFile(res, path.join(here, "index.html"));
}).listen(PAGE_PORT, "127.0.0.1", () => console.log(`demo page:  http://127.0.0.1:${PAGE_PORT}/`));

if (process.env.DEMO_RELAY) {
  const port = Number(process.env.DEMO_WEBHOOK_PORT ?? 8687);
  http.createServer((req, res) => {
    let raw = "";
    req.on("data", (c) => (raw += c));
    req.on("end", () => {
      const signed = req.headers["webhook-signature"] ? `  signed ${req.headers["webhook-signature"].slice(0, 18)}…` : "";
      console.log(`\nwebhook ${req.method} ${req.url}  (webhook-id ${req.headers["webhook-id"]})${signed}`);
      if (raw) console.log(`  ${raw.length > 240 ? raw.slice(0, 240) + "…" : raw}`);
      res.writeHead(200, { "content-type": "text/plain" }).end("ok");
    });
  }).listen(port, "127.0.0.1", () => console.log(`webhooks:   http://127.0.0.1:${port}/ (prints what the relay delivers)`));
} else {
  http.createServer((req, res) => {
    const cors = { "access-control-allow-origin": req.headers.origin ?? "*", "access-control-expose-headers": "Retry-After" };
    if (req.method === "OPTIONS") return res.writeHead(204, { ...cors, "access-control-allow-headers": "content-type" }).end();
    let raw = "";
    req.on("data", (c) => (raw += c));
    req.on("end", () => {
      try {
        const batch = JSON.parse(raw);
        console.log(`\nbatch ${batch.batchId} (attempt ${batch.attempt}, ${batch.events.length} events)`);
        for (const e of batch.events) console.log(`  ${e.event.padEnd(26)} ${JSON.stringify(e.properties)}  user=${e.userId ?? e.anonymousId}`);
        res.writeHead(202, { ...cors, "content-type": "application/json" }).end(JSON.stringify({ accepted: batch.events.length, duplicates: 0 }));
      } catch (err) {
        res.writeHead(400, { ...cors, "content-type": "application/json" }).end(JSON.stringify({ error: { code: "invalid_json", message: String(err) } }));
      }
    });
  }).listen(relayPort, "127.0.0.1", () => console.log(`receiver:   ${RELAY}/v1/batch (prints every batch)`));
}
