#!/usr/bin/env bash
# Runs the fault suite (tests/src/bin/vault-faults.rs). Needs root for network namespaces and
# nftables; without it, says SKIP. Installs iproute2 and nftables if they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP fault suite: it needs root (network namespaces, nftables); run as root: make test-faults"
  exit 0
fi
bin="${CARGO_TARGET_DIR:?set CARGO_TARGET_DIR (make sets it)}/debug"
for b in vault-node vaultctl vault-faults; do
  [ -x "$bin/$b" ] || { echo "fault suite: $bin/$b missing; run make build" >&2; exit 1; }
done
missing=()
for pair in nft:nftables ip:iproute2; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  echo "fault suite: installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
exec "$bin/vault-faults" --out "${CARGO_TARGET_DIR}/faults-report.json" "$@"
