// The client against a real 3-node cluster: CAS writes, typed errors, reads and writes across
// a leader kill, a refused read, a watch that survives the loss of its node, TLS.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { after, before, describe, test } from "node:test";
import {
  CasMismatchError,
  Client,
  CompactedError,
  FailedPreconditionError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  VaultError,
} from "../src/index.js";
import { TestCluster } from "../testing/cluster.js";

const unique = (prefix) => `${prefix}/${randomUUID().slice(0, 8)}`;

// Every client a test makes, closed at the end (open HTTP/2 sessions keep the process alive).
const made = [];
const mk = (opts) => {
  const c = opts instanceof Client ? opts : new Client(opts);
  made.push(c);
  return c;
};
after(() => made.forEach((c) => c.close()));

describe("a 3-node cluster", () => {
  let cluster;
  let client;
  before(async () => {
    cluster = await TestCluster.start({ nodes: 3 });
    client = mk({ addrs: cluster.addrs, token: cluster.token });
  });
  after(async () => cluster?.close());

  test("the token never shows", () => {
    for (const shown of [String(client), inspect(client), JSON.stringify(client)]) {
      assert.ok(!shown.includes(cluster.token), shown);
    }
  });

  test("fromEnv reads addresses and a token file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "vault-node-client-"));
    let c;
    try {
      writeFileSync(join(dir, "token"), `${cluster.token}\n`);
      c = mk(Client.fromEnv({
        VAULT_ADDR: cluster.addrs.map((a) => `http://${a}`).join(","),
        VAULT_TOKEN_FILE: join(dir, "token"),
      }));
    } finally {
      // The token file is a credential: never left behind in /tmp.
      rmSync(dir, { recursive: true, force: true });
    }
    assert.deepEqual(c.addrs, cluster.addrs);
    const name = unique("env");
    assert.equal(await c.put(name, "from-env"), 1);
    assert.equal((await client.get(name)).text, "from-env");
    assert.throws(() => Client.fromEnv({}), TypeError);
  });

  test("put, get and check-and-set", async () => {
    const name = unique("cas");
    assert.equal(await client.put(name, "one", { cas: 0 }), 1);
    assert.equal(await client.put(name, new TextEncoder().encode("two"), { cas: 1 }), 2);
    await assert.rejects(client.put(name, "stale", { cas: 1 }), (e) => {
      assert.ok(e instanceof CasMismatchError && e instanceof FailedPreconditionError);
      assert.equal(e.codeName, "FAILED_PRECONDITION");
      assert.match(e.rawMessage, /current version is 2/);
      return true;
    });
    const got = await client.get(name);
    assert.deepEqual([got.name, got.version, got.text], [name, 2, "two"]);
    assert.ok(!inspect(got).includes("two"), "a secret's value shows when logged");
    assert.equal((await client.get(name, 1)).text, "one");
    await assert.rejects(client.get(unique("missing")), (e) => e instanceof NotFoundError && e.code === 5);
    const many = await client.getMany([name, "missing/nothing"]);
    assert.equal(many.get(name).text, "two");
    assert.ok(many.get("missing/nothing") instanceof NotFoundError);
    const listed = [];
    for await (const s of client.list(name)) listed.push(s.name);
    assert.deepEqual(listed, [name]);
  });

  test("a bad token is unauthenticated", async () => {
    const c = mk({ addrs: cluster.addrs, token: "not-a-token" });
    await assert.rejects(c.put(unique("bad"), "x"), (e) => e instanceof UnauthenticatedError && e.code === 16);
  });

  test("reads and writes across a leader kill", async () => {
    const name = unique("ha");
    await client.put(name, "before");
    const leader = await cluster.leader();
    // Reads start on the leader, writes know it: both must move on when it dies.
    const order = [cluster.addrs[leader], ...cluster.addrs.filter((_, i) => i !== leader)];
    const c = mk({ addrs: order, token: cluster.token, timeoutMs: 2000, retryForMs: 30000 });
    assert.equal((await c.get(name)).text, "before");
    assert.equal(await c.put(name, "v2"), 2);
    await cluster.kill(leader);
    try {
      assert.equal((await c.get(name)).text, "v2");
      assert.equal(await c.put(name, "after"), 3);
      assert.equal((await c.get(name)).text, "after");
    } finally {
      await cluster.start(leader);
    }
    const only = mk({ addrs: [cluster.addrs[leader]], retryForMs: 30000 });
    assert.equal((await only.get(name)).text, "after");
  });

  test("a refused read throws the API's status", async () => {
    const name = unique("secret");
    await client.put(name, "x");
    const rule = `loopback-${randomUUID().slice(0, 6)}`;
    const cidrs = ["127.0.0.1/32", "::1/128"];
    await client.createReader(rule, { grants: ["app/*"], cidrs });
    try {
      await assert.rejects(client.get(name), (e) => {
        assert.ok(e instanceof PermissionDeniedError);
        assert.equal(e.codeName, "PERMISSION_DENIED");
        assert.ok(e.rawMessage.length > 0);
        return true;
      });
    } finally {
      // Once a rule exists, deleting the last one refuses every read: widen it instead.
      await client.createReader(rule, { grants: ["*"], cidrs, replace: true });
    }
    assert.equal((await client.get(name)).text, "x");
  });

  test("a watch survives the loss of its node without gaps or repeats", async () => {
    const name = unique("w");
    const start = Number((await client.clusterStatus()).lastAppliedIndex ?? 0n);
    const watcher = mk({ addrs: cluster.addrs, retryForMs: 30000 });
    const watch = watcher.watch({ names: [name], afterRevision: start });
    const seen = [];
    const batches = [];
    let waiting = null;
    const collector = (async () => {
      for await (const batch of watch) {
        batches.push(batch);
        seen.push(...batch.events);
        waiting?.();
      }
    })();
    const until = async (version) => {
      const deadline = Date.now() + 30000;
      while (!seen.some((e) => e.version >= version)) {
        assert.ok(Date.now() < deadline, `no event for version ${version}; seen ${seen.map((e) => e.version)}`);
        await Promise.race([new Promise((r) => (waiting = r)), new Promise((r) => setTimeout(r, 200)), collector]);
      }
    };
    for (let i = 1; i <= 5; i++) await client.put(name, `v${i}`);
    await until(5);
    const victim = cluster.addrs.indexOf(watch.node);
    await cluster.kill(victim);
    // The victim may be the leader `client` writes to: a put on the session it had open is
    // lost mid-call (CANCELLED), which may or may not have applied. With check-and-set the
    // repeat is safe: a put that did apply makes the repeat a mismatch at version i.
    const put = async (i) => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await client.put(name, `v${i}`, { cas: i - 1 });
        } catch (e) {
          if (e.codeName === "CANCELLED" && attempt < 5) continue;
          if (e instanceof CasMismatchError && (await client.get(name)).version === i) return i;
          throw e;
        }
      }
    };
    try {
      for (let i = 6; i <= 10; i++) await put(i);
      await until(10);
    } finally {
      watch.close();
      await collector.catch(() => {});
      await cluster.start(victim);
    }
    assert.ok(watch.resumes >= 1, "the watch never moved off the killed node");
    assert.notEqual(watch.node, cluster.addrs[victim]);
    assert.deepEqual(
      seen.map((e) => [e.name, e.version, e.kind]),
      Array.from({ length: 10 }, (_, i) => [name, i + 1, "PUT"]),
    );
    const revs = seen.map((e) => e.revision);
    assert.deepEqual(revs, [...new Set(revs)].sort((a, b) => a - b));
    assert.ok(revs[0] > start);
    for (const b of batches) assert.ok(b.events.every((e) => e.revision <= b.revision));
  });
});

test("a watch from a compacted revision is a typed error", async () => {
  // One node that keeps 2 change events: after 20 writes, revision 1 is gone.
  const small = await TestCluster.start({ nodes: 1, env: { VAULT_WATCH_HISTORY: "2" } });
  try {
    const c = mk({ addrs: small.addrs, token: small.token, retryForMs: 5000 });
    for (let i = 0; i < 20; i++) await c.put("compact/me", `v${i}`);
    const watch = c.watch({ prefixes: ["compact/"], afterRevision: 1 });
    await assert.rejects(
      (async () => {
        for await (const _ of watch) break;
      })(),
      (e) => {
        assert.ok(e instanceof CompactedError, String(e));
        assert.equal(e.codeName, "OUT_OF_RANGE");
        assert.equal(e.revision, 1);
        assert.match(e.rawMessage, /compacted/);
        return true;
      },
    );
    // The documented way on: watch from now (after reading again).
    const live = c.watch({ prefixes: ["compact/"], progress: true });
    for await (const batch of live) {
      assert.ok(batch.revision > 1);
      break;
    }
  } finally {
    await small.close();
  }
});

test("a quiet watch keeps its connection with keepalive pings", async () => {
  // The node closes a connection that sends nothing for 2 s; the client's pings keep the
  // watch's connection open through 5 quiet seconds, so it never has to resume.
  const node = await TestCluster.start({ nodes: 1, env: { VAULT_API_IDLE_SECS: "2" } });
  try {
    const watch = mk({ addrs: node.addrs, keepaliveMs: 500 }).watch({ names: ["quiet/x"], progress: true });
    const batches = watch[Symbol.asyncIterator]();
    assert.equal((await batches.next()).value.events.length, 0); // live
    await new Promise((r) => setTimeout(r, 5000));
    await mk({ addrs: node.addrs, token: node.token }).put("quiet/x", "v");
    let got;
    do got = (await batches.next()).value;
    while (got.events.length === 0);
    assert.deepEqual(got.events.map((e) => [e.name, e.version]), [["quiet/x", 1]]);
    assert.equal(watch.resumes, 0, "the idle timeout closed the watch's connection");
    watch.close();
    await batches.return();
  } finally {
    await node.close();
  }
});

describe("TLS", () => {
  let node;
  before(async () => {
    node = await TestCluster.start({ nodes: 1, tls: true, readerCerts: ["app-reader"] });
  });
  after(async () => node?.close());

  test("with the CA", async () => {
    const c = mk({ addrs: node.addrs, token: node.token, caFile: node.caFile });
    assert.ok((await c.put("tls/one", "over tls")) >= 1);
    assert.equal((await c.get("tls/one")).text, "over tls");
  });

  test("plaintext against TLS is unavailable", async () => {
    const c = mk({ addrs: node.addrs, token: node.token, timeoutMs: 1000, retryForMs: 1000 });
    // Seen as UNAVAILABLE or as a stream the TLS listener cancelled: a typed error either way.
    await assert.rejects(c.get("tls/one"), (e) => e instanceof VaultError && !e.rawMessage.includes("over tls"));
  });

  test("a client certificate reads what its rule grants", async () => {
    // Last here: once a reader rule exists, other reads need one too.
    const admin = mk({ addrs: node.addrs, token: node.token, caFile: node.caFile });
    await admin.put("mtls/db", "by certificate");
    await admin.createReader("app-reader", { grants: ["mtls/*"], certCns: ["app-reader"] });
    const { cert_file: certFile, key_file: keyFile } = node.readerCerts["app-reader"];
    const reader = mk({ addrs: node.addrs, caFile: node.caFile, certFile, keyFile });
    assert.equal((await reader.get("mtls/db")).text, "by certificate");
    await assert.rejects(reader.get("tls/one"), PermissionDeniedError); // not granted to its rule
    const anonymous = mk({ addrs: node.addrs, caFile: node.caFile });
    await assert.rejects(anonymous.get("mtls/db"), PermissionDeniedError); // no rule names 127.0.0.1
    assert.throws(() => new Client({ addrs: node.addrs, caFile: node.caFile, certFile }), TypeError);
  });
});
