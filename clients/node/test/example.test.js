// examples/service.js picks up a rotation of app/db without a restart.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { Client } from "../src/index.js";
import { TestCluster } from "../testing/cluster.js";

let cluster;
before(async () => {
  cluster = await TestCluster.start({ nodes: 3 });
});
after(async () => cluster?.close());

// A read of the next line that a timeout left waiting; the next read takes it over (so no
// line is lost).
let pending;
const nextLine = (lines) => pending ?? (pending = lines.next());

/** Reads lines of `lines` until one starts with `wanted`; all lines read so far. */
async function expectLine(lines, seen, wanted, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    let timer;
    const timeout = new Promise((r) => (timer = setTimeout(() => r(null), deadline - Date.now())));
    const next = await Promise.race([nextLine(lines), timeout]);
    clearTimeout(timer);
    if (next !== null) pending = undefined;
    if (next === null || next.done) break;
    seen.push(next.value);
    if (next.value.startsWith(wanted)) return;
  }
  assert.fail(`the example never printed ${JSON.stringify(wanted)}; it printed ${JSON.stringify(seen)}`);
}

/** The lines of `lines` printed within `ms`. */
async function linesFor(lines, ms) {
  const out = [];
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    let timer;
    const timeout = new Promise((r) => (timer = setTimeout(() => r(null), deadline - Date.now())));
    const next = await Promise.race([nextLine(lines), timeout]);
    clearTimeout(timer);
    if (next === null) break;
    pending = undefined;
    if (next.done) break;
    out.push(next.value);
  }
  return out;
}

test("the service example picks up a rotation", async () => {
  const admin = new Client({ addrs: cluster.addrs, token: cluster.token });
  const first = await admin.put("app/db", "initial-password");
  const env = { ...process.env, VAULT_ADDR: cluster.addrs.join(",") };
  delete env.VAULT_TOKEN; // reads and watches need none
  const proc = spawn(process.execPath, [new URL("../examples/service.js", import.meta.url).pathname], {
    env,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise((r) => proc.once("exit", r));
  const lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
  const seen = [];
  try {
    await expectLine(lines, seen, `using app/db version ${first}`);
    await expectLine(lines, seen, "watching app/db from revision");
    // Idle progress (every 5 s) reads nothing: no second "watching" (each came with a read).
    const idle = await linesFor(lines, 7000);
    assert.ok(!idle.some((l) => l.startsWith("watching")), JSON.stringify(idle));
    seen.push(...idle);
    await admin.setRotation("app/db", 3600, "random:24");
    const rotated = await admin.rotate("app/db");
    assert.equal(rotated, first + 1);
    await expectLine(lines, seen, `using app/db version ${rotated}`);
    assert.ok(seen.includes(`app/db changed (rotation, version ${rotated})`), JSON.stringify(seen));
    assert.equal(proc.exitCode, null, "the service restarted or died");
    assert.ok(!seen.join("\n").includes("initial-password"));
  } finally {
    proc.kill("SIGTERM");
    await exited;
    admin.close();
  }
});
