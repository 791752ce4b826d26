#!/usr/bin/env bash
# `make run`: a single-node dev vault with the local KMS, state under .dev/.
# The dev master key and admin token live in .dev/, outside the data dir (.dev/data), so a
# restart still decrypts. Dev only: the key sits in a file next to the data.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:?}/debug"
dev=.dev
umask 077
mkdir -p "$dev"
[ -s "$dev/master.key" ] || head -c 32 /dev/urandom | base64 -w0 > "$dev/master.key"
[ -s "$dev/admin.token" ] || head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=' > "$dev/admin.token"
api="${VAULT_DEV_API_ADDR:-127.0.0.1:8200}"
raft="${VAULT_DEV_RAFT_ADDR:-127.0.0.1:8201}"
console=""
[ -z "${VAULT_UI_ADDR:-}" ] || console="  Console: $([ -n "${VAULT_TLS_CERT:-}" ] && echo https || echo http)://$VAULT_UI_ADDR (log in with the admin token)
"

cat <<MSG

  Dev vault: one node, local KMS, data in $dev/data. Stop with Ctrl-C; run again to resume.
  Admin token (bootstrap-admin): $(cat "$dev/admin.token")
$console
  In another shell:
    export VAULT_ADDR=http://$api VAULT_TOKEN=$(cat "$dev/admin.token")
    export PATH="$bin:\$PATH"
    echo -n s3cr3t | vaultctl secret put app/db
    vaultctl secret get app/db

MSG

exec env VAULT_NODE_ID=1 VAULT_DATA_DIR="$dev/data" VAULT_API_ADDR="$api" VAULT_RAFT_ADDR="$raft" \
  VAULT_KMS_MODE=local VAULT_LOCAL_MASTER_KEY_FILE="$dev/master.key" \
  VAULT_BOOTSTRAP_TOKEN="$(cat "$dev/admin.token")" VAULT_ALLOWED_IPS="127.0.0.1,::1" \
  "$bin/vault-node"
