// Generates the protobuf-es code for the vault's API from proto/vault/v1/vault.proto (or the
// file in VAULT_PROTO) into gen/, with Debian's `protoc` and the `protoc-gen-es` plugin, and
// records the proto's SHA-256 in gen/PROTO_SHA256 (the tests compare it with the proto in the
// tree, so stale generated code fails them). Run by `npm run build` and `npm ci` (prepare).
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const proto = resolve(process.env.VAULT_PROTO ?? join(pkg, "../../proto/vault/v1/vault.proto"));
if (!existsSync(proto)) {
  console.error(`generate: ${proto} not found: build from a checkout of the vault (or set VAULT_PROTO)`);
  process.exit(1);
}
// The include root is the `proto/` directory above `vault/v1/`, so the output is gen/vault/v1/.
const root = resolve(dirname(proto), "../..");
const out = join(pkg, "gen");
const plugin = join(pkg, "node_modules/.bin/protoc-gen-es");
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
try {
  execFileSync(
    "protoc",
    [
      `-I${root}`,
      `--plugin=protoc-gen-es=${plugin}`,
      `--es_out=${out}`,
      "--es_opt=target=js+dts,import_extension=js",
      proto,
    ],
    { stdio: "inherit" },
  );
} catch (e) {
  console.error(`generate: protoc failed (${e.message}); Debian: apt-get install protobuf-compiler`);
  process.exit(1);
}
const sha = createHash("sha256").update(readFileSync(proto)).digest("hex");
writeFileSync(join(out, "PROTO_SHA256"), `${sha}\n`);
console.log(`generate: gen/vault/v1/vault_pb.js from ${proto} (sha256 ${sha.slice(0, 12)})`);
