// The installed package imported where there is no window (server-side
// rendering, Node): importing must not throw, and calls do nothing.
import { test } from "node:test";
import assert from "node:assert/strict";

test("importing cuecast in Node does not throw; the client does nothing and says so in debug mode", async () => {
  const logged = [];
  const original = console.log;
  console.log = (...args) => logged.push(args.join(" "));
  try {
    const { init } = await import("cuecast");
    const cc = await init({ endpoint: "https://relay.example.com/v1/batch", writeKey: "pk", debug: true });
    assert.equal(cc.track("x", { a: 1 }), undefined);
    cc.shoutoutClicked({ shoutoutId: "p" });
    cc.identify("u");
    cc.reset();
    assert.deepEqual(await cc.flush(), { sent: 0, failed: 0, pending: 0, dropped: 0 });
  } finally {
    console.log = original;
  }
  assert.ok(logged.some((l) => l.includes("track: no browser window here")), logged.join("\n"));
  const { load } = await import("cuecast");
  const early = load({ endpoint: "https://relay.example.com/v1/batch", writeKey: "pk" });
  assert.equal(early.track("x"), undefined);
  assert.deepEqual(await early.flush(), { sent: 0, failed: 0, pending: 0, dropped: 0 });
});
