// Node client of the Raft-replicated secrets vault. The gRPC code (gen/) is generated from
// the vault's proto at build time (`npm run build`, run by `npm ci`).
export { Client } from "./client.js";
export { Change, Watch } from "./watch.js";
export * from "./errors.js";
