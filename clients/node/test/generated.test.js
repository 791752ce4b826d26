// The generated code is the proto's: the build recorded the proto's SHA-256 in gen/, which
// must be the one of the proto in this checkout (else: npm run build, or make clients).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { Admin, Secrets } from "../gen/vault/v1/vault_pb.js";

const proto = new URL("../../../proto/vault/v1/vault.proto", import.meta.url);

test("generated code is from the proto in the tree", () => {
  const recorded = readFileSync(new URL("../gen/PROTO_SHA256", import.meta.url), "utf8").trim();
  const current = createHash("sha256").update(readFileSync(proto)).digest("hex");
  assert.equal(recorded, current, "gen/ is stale against proto/vault/v1/vault.proto: run `npm run build`");
});

test("generated services cover every rpc of the proto", () => {
  const text = readFileSync(proto, "utf8");
  for (const [name, service] of [["Secrets", Secrets], ["Admin", Admin]]) {
    const block = text.split(`service ${name} {`)[1].split("\n}")[0];
    const rpcs = [...block.matchAll(/^\s*rpc (\w+)\(/gm)].map((m) => m[1]).sort();
    assert.deepEqual(service.methods.map((m) => m.name).sort(), rpcs);
  }
});
