#!/usr/bin/env bash
# Installs what the Python and Node client tests need, only when something changed. Called by
# `make clients` (part of `make test`) after `make venv`.
# - Python: grpcio-tools and pytest in the venv, then the client from clients/python (its
#   gRPC code is generated from proto/ while it is built). Reinstalled when the proto or the
#   package's files change (a stamp of their SHA-256 in the venv).
# - Node: `npm ci` in clients/node (the lock file's versions; its `prepare` generates gen/ from
#   proto/), npm's cache under ~/.cache/vault/npm. Rerun when the lock file or the proto change.
# Usage: scripts/install-clients.sh VENV_DIR
set -euo pipefail
venv="${1:?venv dir}"
root="$(cd "$(dirname "$0")/.." && pwd)"
proto="$root/proto/vault/v1/vault.proto"

stamp_of() { # files... -> one SHA-256 over their names and contents
  (cd "$root" && sha256sum "$@" | sha256sum | cut -d' ' -f1)
}

# --- Python -------------------------------------------------------------------------------
py_files=(proto/vault/v1/vault.proto $(cd "$root" && git ls-files clients/python 2>/dev/null \
  | grep -v -e '^clients/python/tests/' -e '^clients/python/examples/' || true))
[ "${#py_files[@]}" -gt 1 ] || py_files=(proto/vault/v1/vault.proto clients/python/pyproject.toml clients/python/setup.py)
py_stamp="$(stamp_of "${py_files[@]}")"
if [ "$(cat "$venv/.vault-client-stamp" 2>/dev/null)" != "$py_stamp" ]; then
  echo "install-clients: installing the Python client into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'grpcio-tools>=1.66,<2' 'pytest>=8'
  rm -rf "$root/clients/python/build"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps \
    "$root/clients/python"
  rm -rf "$root/clients/python/build" "$root"/clients/python/src/*.egg-info
  "$venv/bin/python" -c 'import vault_client' 
  echo "$py_stamp" >"$venv/.vault-client-stamp"
fi

# --- Node ---------------------------------------------------------------------------------
command -v npm >/dev/null || { echo "install-clients: node and npm are needed for clients/node" >&2; exit 1; }
node_dir="$root/clients/node"
node_stamp="$(stamp_of proto/vault/v1/vault.proto clients/node/package-lock.json clients/node/scripts/generate.js)"
if [ "$(cat "$node_dir/node_modules/.vault-stamp" 2>/dev/null)" != "$node_stamp" ] || [ ! -f "$node_dir/gen/PROTO_SHA256" ]; then
  echo "install-clients: npm ci in clients/node"
  (cd "$node_dir" && npm_config_cache="${HOME}/.cache/vault/npm" npm ci --no-audit --no-fund --loglevel=error)
  echo "$node_stamp" >"$node_dir/node_modules/.vault-stamp"
fi
