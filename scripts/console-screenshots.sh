#!/usr/bin/env bash
# `make console-screenshots`: a throwaway single node with the console on (state in a temp dir,
# not .dev/), seeded with a few secrets, tokens, a reader rule and rotation policies; then
# tests/console/console_check.py --screenshots saves a PNG of each page into OUT_DIR. Stops the
# node (its own PID) and removes the temp dir on exit. The values are made-up demo strings.
# Usage: scripts/console-screenshots.sh VENV_DIR OUT_DIR
set -euo pipefail
venv="${1:?venv dir}"
out="${2:?output dir}"
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:?}/debug"

free_port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
api="127.0.0.1:$(free_port)"
raft="127.0.0.1:$(free_port)"
ui="127.0.0.1:$(free_port)"
tmp="$(mktemp -d -t vault-console-shots-XXXXXX)"
token="$(head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=')"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

env -i PATH="$PATH" VAULT_NODE_ID=1 VAULT_DATA_DIR="$tmp/data" VAULT_API_ADDR="$api" VAULT_RAFT_ADDR="$raft" \
  VAULT_UI_ADDR="$ui" VAULT_KMS_MODE=local VAULT_LOCAL_MASTER_KEY="$(head -c 32 /dev/urandom | base64 -w0)" \
  VAULT_BOOTSTRAP_TOKEN="$token" VAULT_ALLOWED_IPS="127.0.0.1,::1" VAULT_LOG=warn \
  "$bin/vault-node" >"$tmp/node.log" 2>&1 &
pid=$!

ctl() { VAULT_ADDR="http://$api" VAULT_TOKEN="$token" "$bin/vaultctl" "$@"; }
for _ in $(seq 1 150); do
  ctl cluster status >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "console-screenshots: vault-node exited:" >&2; cat "$tmp/node.log" >&2; exit 1; }
  sleep 0.2
done
ctl cluster status >/dev/null

echo "console-screenshots: seeding the node at $api (console at http://$ui)"
ctl secret put app/db --value 'postgres://app:first-demo-password@db.internal:5432/app' >/dev/null
ctl secret put app/db --value 'postgres://app:correct-horse-battery@db.internal:5432/app' >/dev/null
ctl secret put app/api-key --value 'demo-api-key-7f3a' >/dev/null
ctl secret put app/web/tls-key --value 'demo-not-a-real-key' >/dev/null
ctl secret put billing/stripe --value 'sk_test_demo_only' >/dev/null
ctl secret put billing/old --value 'retired' >/dev/null
ctl secret delete billing/old >/dev/null
ctl secret rotation set app/api-key --every 24h --generator random:32 >/dev/null
ctl secret rotation set billing/stripe --every 720h --generator random:24 >/dev/null
ctl role create deployer --grant 'create,update,list:app/*' >/dev/null
ctl role create auditor --grant 'list:*' >/dev/null
ctl token create ci-deploy --role deployer --ttl 720h >/dev/null
ctl token create alice --role auditor >/dev/null
ctl reader create loopback --cidr 127.0.0.1/32 --cidr ::1/128 --grant '*' >/dev/null
ctl secret get app/db >/dev/null

mkdir -p "$out"
VAULT_CONSOLE_ADMIN_TOKEN="$token" "$venv/bin/python" tests/console/console_check.py \
  --url "http://$ui" --secret app/db --prefix app/ --screenshots "$out"
