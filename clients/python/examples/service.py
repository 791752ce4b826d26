"""A tiny service that reads its database password from the vault and picks up a rotation
without a restart.

    VAULT_ADDR=10.0.0.1:8200,10.0.0.2:8200,10.0.0.3:8200 python service.py

It reads `app/db` (SECRET_NAME), then watches it: on every new version it reads the secret
again and "reconnects" (here: reports the version it now uses). Once the watch is live (its
first progress message) it reads the secret once more, to catch a change made before the
watch started; later progress messages (every few seconds while idle) read nothing: every
read is audited. It never prints the value.
Reads need no token (allowlisted address or reader rule); the watch survives node loss.
"""

import os
import sys

from vault_client import Change, Client, CompactedError

NAME = os.environ.get("SECRET_NAME", "app/db")


def use(secret) -> None:
    # A real service would reconnect its database pool with secret.value here.
    print(f"using {secret.name} version {secret.version}", flush=True)


def main() -> int:
    vault = Client.from_env()
    current = vault.get(NAME)
    use(current)  # serve at once
    while True:
        watch = vault.watch(names=[NAME], progress=True)
        live = False
        try:
            for batch in watch:
                if not batch.events:  # progress
                    if not live:  # the first: the watch is live from here on
                        live = True
                        if current.version != (latest := vault.get(NAME)).version:
                            current = latest  # changed before the watch started
                            use(current)
                        print(f"watching {NAME} from revision {batch.revision}", flush=True)
                    continue
                for ev in batch.events:
                    print(f"{NAME} changed ({ev.kind.name.lower()}, version {ev.version})", flush=True)
                if any(ev.kind in (Change.PUT, Change.ROTATION, Change.UNDELETE, Change.RESET) for ev in batch.events):
                    current = vault.get(NAME)
                    use(current)
        except CompactedError:
            continue  # missed changes: watch anew, which reads the secret again


if __name__ == "__main__":
    sys.exit(main())
