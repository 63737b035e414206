// The TypeScript declarations shipped in the package: documented calls
// compile under --strict, wrong ones are rejected (@ts-expect-error).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

test("the shipped index.d.ts types the documented API", () => {
  const tsc = path.join(here, "node_modules/typescript/bin/tsc");
  let output = "";
  try {
    execFileSync(process.execPath, [tsc, "--noEmit", "--strict", "--target", "es2022", "--module", "nodenext",
      "--moduleResolution", "nodenext", path.join(here, "types/usage.ts")], { cwd: here, encoding: "utf8" });
  } catch (e) {
    output = `${e.stdout}${e.stderr}`;
  }
  assert.equal(output, "", output);
});
