// A tiny service that reads its database password from the vault and picks up a rotation
// without a restart.
//
//   VAULT_ADDR=10.0.0.1:8200,10.0.0.2:8200,10.0.0.3:8200 node service.js
//
// It reads `app/db` (SECRET_NAME), then watches it: on every new version it reads the secret
// again and "reconnects" (here: reports the version it now uses). Once the watch is live (its
// first progress message) it reads the secret once more, to catch a change made before the
// watch started; later progress messages (every few seconds while idle) read nothing: every
// read is audited. It never prints the value.
// Reads need no token (allowlisted address or reader rule); the watch survives node loss.
import { Client, CompactedError } from "../src/index.js"; // from a checkout; else "@vault/client"

const NAME = process.env.SECRET_NAME ?? "app/db";
const NEW_VALUE = new Set(["PUT", "ROTATION", "UNDELETE", "RESET"]);

function use(secret) {
  // A real service would reconnect its database pool with secret.value here.
  console.log(`using ${secret.name} version ${secret.version}`);
}

const vault = Client.fromEnv();
let current = await vault.get(NAME);
use(current); // serve at once
for (;;) {
  const watch = vault.watch({ names: [NAME], progress: true });
  let live = false;
  try {
    for await (const batch of watch) {
      if (batch.events.length === 0) {
        // Progress; the first says the watch is live from here on.
        if (!live) {
          live = true;
          const latest = await vault.get(NAME);
          if (latest.version !== current.version) {
            current = latest; // changed before the watch started
            use(current);
          }
          console.log(`watching ${NAME} from revision ${batch.revision}`);
        }
        continue;
      }
      for (const ev of batch.events) {
        console.log(`${NAME} changed (${ev.kind.toLowerCase()}, version ${ev.version})`);
      }
      if (batch.events.some((ev) => NEW_VALUE.has(ev.kind))) {
        current = await vault.get(NAME);
        use(current);
      }
    }
  } catch (e) {
    if (!(e instanceof CompactedError)) throw e;
    // Missed changes: watch anew, which reads the secret again.
  }
}
