// Which failures move a call to another node, against stand-in nodes (real HTTP/2 gRPC
// servers on loopback) that answer with the statuses the real server sends (quoted from
// vault-node/src/error.rs, vault-raft/src/cluster.rs, vault-node/src/api/secrets.rs and
// vault-core/src/error.rs), and a port nobody listens on.
import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import { after, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Admin, Secrets } from "../gen/vault/v1/vault_pb.js";
import { Client, UnavailableError } from "../src/index.js";

const NOT_LEADER = "no leader could take this request";
// Refusals after which the write may have run: it must not be sent again.
const AMBIGUOUS = [
  "leader 2 was replaced before it answered; the write may or may not have been applied",
  "rotation of app/db failed: exec:/h exited with status 3; the old version stays current and the leader retries",
  "key management service unavailable: connection reset",
];

// Clients first (a server closes once its sessions are gone), then the servers.
const clients = [];
const servers = [];
after(async () => {
  clients.forEach((c) => c.close());
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

/** A stand-in node: every call is logged, then `answer()` is thrown or returned. */
async function fakeNode(answer = () => undefined) {
  const calls = [];
  const respond = (method, ok) => () => {
    calls.push(method);
    const refusal = answer();
    if (refusal) throw refusal;
    return ok;
  };
  const handler = connectNodeAdapter({
    grpc: true,
    connect: false,
    grpcWeb: false,
    routes: (router) => {
      router.service(Secrets, {
        deleteSecret: respond("deleteSecret", {}),
        getSecret: respond("getSecret", { name: "app/db", version: 1n }),
      });
      router.service(Admin, { serverStatus: respond("serverStatus", {}) });
    },
  });
  const server = http2.createServer(handler);
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const node = { addr: `127.0.0.1:${server.address().port}`, calls };
  servers.push(server);
  return node;
}

function unavailable(message, leader) {
  return new ConnectError(message, Code.Unavailable, leader ? { "x-vault-leader": leader } : undefined);
}

function client(nodes) {
  const c = new Client({ addrs: nodes.map((n) => n.addr ?? n), retryForMs: 500, timeoutMs: 2000 });
  clients.push(c);
  return c;
}

test("a write that may have run is not sent again", async () => {
  for (const message of AMBIGUOUS) {
    const n1 = await fakeNode(() => unavailable(message));
    const n2 = await fakeNode();
    const c = client([n1, n2]);
    await assert.rejects(c.delete("app/db"), (e) => e instanceof UnavailableError && e.rawMessage === message);
    assert.deepEqual([n1.calls, n2.calls], [["deleteSecret"], []], message);
  }
});

test("a write a follower refused goes to the leader it names, and stays there", async () => {
  const n2 = await fakeNode();
  const n1 = await fakeNode(() => unavailable(`${NOT_LEADER} (leader: ${n2.addr})`, `http://${n2.addr}`));
  const c = client([n1, n2]);
  await c.delete("app/db");
  await c.delete("app/db");
  assert.deepEqual([n1.calls, n2.calls], [["deleteSecret"], ["deleteSecret", "deleteSecret"]]);
});

test("a write refused with no leader known goes to the next node", async () => {
  const n1 = await fakeNode(() => unavailable(`${NOT_LEADER} (no leader known)`));
  const n2 = await fakeNode();
  await client([n1, n2]).delete("app/db");
  assert.deepEqual([n1.calls, n2.calls], [["deleteSecret"], ["deleteSecret"]]);
});

test("an unconfigured hinted leader serves that write only", async () => {
  const other = await fakeNode();
  const n1 = await fakeNode(() => unavailable(`${NOT_LEADER} (leader: ${other.addr})`, other.addr));
  const c = client([n1]);
  await c.delete("app/db");
  await c.delete("app/db");
  // Not remembered as leader: the second write starts at n1 again.
  assert.deepEqual([n1.calls, other.calls], [["deleteSecret", "deleteSecret"], ["deleteSecret", "deleteSecret"]]);
});

test("a read never follows a hint", async () => {
  const evil = await fakeNode();
  const n1 = await fakeNode(() => unavailable(`${NOT_LEADER} (leader: ${evil.addr})`, evil.addr));
  const n2 = await fakeNode();
  const c = client([n1, n2]);
  assert.equal((await c.get("app/db")).version, 1);
  assert.deepEqual([n1.calls, n2.calls, evil.calls], [["getSecret"], ["getSecret"], []]);
  // Nor does a read's hint make a leader: the next write starts at n1.
  await c.delete("app/db");
  assert.deepEqual(n1.calls, ["getSecret", "deleteSecret"]);
});

test("a write moves on from a node that cannot be reached", async () => {
  const dead = await new Promise((r) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const addr = `127.0.0.1:${s.address().port}`;
      s.close(() => r(addr));
    });
  });
  const n2 = await fakeNode();
  await client([dead, n2]).delete("app/db");
  assert.deepEqual(n2.calls, ["deleteSecret"]);
});
