// A ratchet on the npm payload's size (analytics-next checks a budget in CI
// too): a change that pulls in, say, float formatting (+20 KB) fails here.
// The measured figures and the 45 KB goal are in the README; lower
// the ceiling as the size comes down, never raise it silently.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { fileURLToPath } from "node:url";

const pkg = path.join(path.dirname(fileURLToPath(import.meta.url)), "node_modules/cuecast");
// Raised from 82 KB when the durable queue landed (IndexedDB, localStorage
// rescue, Web Locks adoption, replay of early calls: +22 KB gzip, measured in the README).
const CEILING_GZIP = 102 * 1024;

test(`the npm payload (wasm + JS) stays under ${CEILING_GZIP / 1024} KB gzip`, () => {
  const files = ["cuecast_bg.wasm", "cuecast.js", "index.js"];
  const gzip = files.reduce((sum, f) => sum + zlib.gzipSync(fs.readFileSync(path.join(pkg, f)), { level: 9 }).length, 0);
  assert.ok(gzip <= CEILING_GZIP, `${(gzip / 1024).toFixed(1)} KB gzip`);
  const pack = JSON.parse(fs.readFileSync(path.join(pkg, "package.json"), "utf8"));
  for (const f of files) assert.ok(pack.files.includes(f), `${f} is published`);
});
