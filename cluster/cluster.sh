#!/usr/bin/env bash
# Three local nodes on loopback with Raft over mutual TLS.
#   node N: API 127.0.0.1:82N0, Raft 127.0.0.1:82N1, data cluster/run/node-N
# Usage: cluster/cluster.sh up|down|status. `down` stops only the PIDs `up` recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
run=cluster/run
bin="${CARGO_TARGET_DIR:?set CARGO_TARGET_DIR (make sets it)}/debug"
ids=(1 2 3)
peers="1=127.0.0.1:8211,2=127.0.0.1:8221,3=127.0.0.1:8231"

is_our_node() { # pid file -> true if that PID is alive and is a vault-node
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q vault-node "/proc/$pid/cmdline" 2>/dev/null
}

up() {
  umask 077
  mkdir -p "$run"
  [ -s "$run/master.key" ] || head -c 32 /dev/urandom | base64 -w0 > "$run/master.key"
  [ -s "$run/admin.token" ] || head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=' > "$run/admin.token"
  "$bin/vaultctl" cluster certs --out "$run/certs" --nodes 1,2,3 --san 127.0.0.1 >/dev/null
  for n in "${ids[@]}"; do
    if is_our_node "$run/node-$n.pid"; then
      echo "node $n already running (pid $(cat "$run/node-$n.pid"))"
      continue
    fi
    env VAULT_NODE_ID="$n" VAULT_DATA_DIR="$run/node-$n" \
      VAULT_API_ADDR="127.0.0.1:82${n}0" VAULT_RAFT_ADDR="127.0.0.1:82${n}1" VAULT_PEERS="$peers" \
      VAULT_RAFT_TLS_CA="$run/certs/ca.pem" VAULT_RAFT_TLS_CERT="$run/certs/node-$n.pem" \
      VAULT_RAFT_TLS_KEY="$run/certs/node-$n.key" \
      VAULT_KMS_MODE=local VAULT_LOCAL_MASTER_KEY_FILE="$run/master.key" \
      VAULT_BOOTSTRAP_TOKEN="$(cat "$run/admin.token")" VAULT_ALLOWED_IPS="127.0.0.1,::1" \
      "$bin/vault-node" >>"$run/node-$n.log" 2>&1 &
    echo $! >"$run/node-$n.pid"
  done
  local token
  token=$(cat "$run/admin.token")
  for n in "${ids[@]}"; do
    for _ in $(seq 150); do
      if VAULT_TOKEN="$token" "$bin/vaultctl" --addr "http://127.0.0.1:82${n}0" cluster status >/dev/null 2>&1; then
        break
      fi
      is_our_node "$run/node-$n.pid" || { echo "node $n exited; see $run/node-$n.log" >&2; tail -5 "$run/node-$n.log" >&2; exit 1; }
      sleep 0.2
    done
  done
  cat <<MSG
Three nodes up (logs in $run/node-N.log). In another shell:
  export VAULT_ADDR=http://127.0.0.1:8210 VAULT_TOKEN=$token
  export PATH="$bin:\$PATH"
  vaultctl cluster status
MSG
}

down() {
  local pids=()
  for n in "${ids[@]}" 4 5; do
    local f="$run/node-$n.pid"
    [ -f "$f" ] || continue
    if is_our_node "$f"; then
      pids+=("$(cat "$f")")
      kill -TERM "$(cat "$f")"
    fi
    rm -f "$f"
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  done
  echo "stopped ${#pids[@]} node(s)"
}

status() {
  for n in "${ids[@]}"; do
    if is_our_node "$run/node-$n.pid"; then echo "node $n: running (pid $(cat "$run/node-$n.pid"))"; else echo "node $n: stopped"; fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
