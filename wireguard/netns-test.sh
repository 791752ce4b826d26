#!/usr/bin/env bash
# Three vault nodes on a real WireGuard overlay, in network namespaces made by this script.
#
# Underlay: a bridge in its own namespace, 192.0.2.0/24 (TEST-NET-1), three host namespaces
# (.11-.13) and two client namespaces (.101 allowed to read, .102 not). Overlay: wireguard-go
# (userspace) with configs from wireguard/wg-mesh.sh, 10.99.0.1-3. Raft binds to the overlay
# addresses over mutual TLS; the API to 0.0.0.0:8200. Each host's nftables first allows only
# WireGuard's UDP port on the underlay; the API port is opened later for the client checks.
#
# Everything it creates (namespaces, links, processes, files) is removed on exit, success or
# not; it signals only the PIDs it started and sends nothing outside its own namespaces.
# Needs root; without it, it says so and skips. Prints `wireguard: N passed, M failed`.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP wireguard netns test: it needs root (network namespaces, /dev/net/tun); run as root: make test-wireguard"
  exit 0
fi
bin="${CARGO_TARGET_DIR:?set CARGO_TARGET_DIR (make sets it)}/debug"
for b in vault-node vaultctl; do
  [ -x "$bin/$b" ] || { echo "wireguard test: $bin/$b missing; run make build" >&2; exit 1; }
done

missing=()
for pair in wireguard-go:wireguard-go wg:wireguard-tools wg-quick:wireguard-tools nft:nftables ip:iproute2; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  echo "wireguard test: installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -c /dev/net/tun ] || { echo "wireguard test: /dev/net/tun is missing" >&2; exit 1; }

sfx=$(head -c 3 /dev/urandom | od -An -tx1 | tr -d ' \n')
work=$(mktemp -d /tmp/vault-wg-XXXXXX)
ul="vwg-ul-$sfx"
hosts=("vwg-h1-$sfx" "vwg-h2-$sfx" "vwg-h3-$sfx")
clients=("vwg-c1-$sfx" "vwg-c2-$sfx")
netns_before=$(ip netns list | awk '{print $1}' | sort)
declare -A node_pid=()
wg_pids=()
passed=0
failed=0

cleanup() {
  local p
  for p in "${node_pid[@]}" "${wg_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${node_pid[@]}" "${wg_pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
  done
  for ns in "${hosts[@]}" "${clients[@]}" "$ul"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$work"
  local after
  after=$(ip netns list | awk '{print $1}' | sort)
  if [ "$after" != "$netns_before" ]; then echo "wireguard test: WARNING: ip netns list differs after cleanup"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

check() { # check "description" command...
  local desc=$1
  shift
  local out
  if out=$("$@" 2>&1); then
    echo "ok - $desc"
    passed=$((passed + 1))
  else
    echo "not ok - $desc"
    echo "$out" | tail -5 | sed 's/^/    /'
    failed=$((failed + 1))
  fi
}

wait_for() { # wait_for SECONDS command...
  local secs=$1
  shift
  for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  "$@"
}

token=$(head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=')
head -c 32 /dev/urandom | base64 -w0 >"$work/master.key"
chmod 600 "$work/master.key"

# --- underlay ----------------------------------------------------------------------------
ip netns add "$ul"
ip -n "$ul" link set lo up
ip -n "$ul" link add br0 type bridge
ip -n "$ul" link set br0 up
attach() { # attach NS IP INDEX
  local ns=$1 ip=$2 n=$3
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip link add "vu$n$sfx" netns "$ns" type veth peer name "vb$n$sfx" netns "$ul"
  ip -n "$ns" addr add "$ip/24" dev "vu$n$sfx"
  ip -n "$ns" link set "vu$n$sfx" up
  ip -n "$ul" link set "vb$n$sfx" master br0 up
}
for i in 1 2 3; do attach "${hosts[$((i - 1))]}" "192.0.2.1$i" "$i"; done
attach "${clients[0]}" 192.0.2.101 7
attach "${clients[1]}" 192.0.2.102 8

# --- overlay -----------------------------------------------------------------------------
# The UAPI socket directory is shared by all namespaces: every interface gets its own name.
for i in 1 2 3; do echo "node$i 10.99.0.$i 192.0.2.1$i:51820 wgv$i$sfx"; done >"$work/inventory"
wireguard/wg-mesh.sh "$work/inventory" "$work/wg" >/dev/null
for i in 1 2 3; do
  ns=${hosts[$((i - 1))]}
  ifc="wgv$i$sfx"
  ip netns exec "$ns" env WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 wireguard-go -f "$ifc" >"$work/wg$i.log" 2>&1 &
  wg_pids+=($!)
  wait_for 10 test -S "/var/run/wireguard/$ifc.sock" >/dev/null || { echo "wireguard-go did not start"; cat "$work/wg$i.log"; exit 1; }
  wg-quick strip "$work/wg/node$i/$ifc.conf" >"$work/wg$i.plain"
  ip netns exec "$ns" wg setconf "$ifc" "$work/wg$i.plain"
  ip -n "$ns" addr add "10.99.0.$i/32" dev "$ifc"
  ip -n "$ns" link set "$ifc" mtu 1420 up
  for j in 1 2 3; do [ "$j" = "$i" ] || ip -n "$ns" route add "10.99.0.$j/32" dev "$ifc"; done
  # Firewall: on the underlay only WireGuard's UDP port gets in.
  ip netns exec "$ns" nft -f - <<NFT
table inet vaultfw {
  chain input {
    type filter hook input priority 0; policy accept;
    iifname "vu$i$sfx" udp dport 51820 accept
    iifname "vu$i$sfx" drop
  }
}
NFT
done

# --- vault nodes ----------------------------------------------------------------------------
"$bin/vaultctl" cluster certs --out "$work/certs" --nodes 1,2,3 --san 10.99.0.1 --san 10.99.0.2 --san 10.99.0.3 >/dev/null
peers="1=10.99.0.1:8201,2=10.99.0.2:8201,3=10.99.0.3:8201"
start_node() { # start_node INDEX
  local i=$1 ns=${hosts[$(($1 - 1))]}
  ip netns exec "$ns" env -i PATH="$PATH" VAULT_NODE_ID="$i" VAULT_DATA_DIR="$work/node$i" \
    VAULT_API_ADDR=0.0.0.0:8200 VAULT_API_ADVERTISE_ADDR="192.0.2.1$i:8200" \
    VAULT_RAFT_ADDR="10.99.0.$i:8201" VAULT_PEERS="$peers" \
    VAULT_RAFT_TLS_CA="$work/certs/ca.pem" VAULT_RAFT_TLS_CERT="$work/certs/node-$i.pem" \
    VAULT_RAFT_TLS_KEY="$work/certs/node-$i.key" VAULT_KMS_MODE=local \
    VAULT_LOCAL_MASTER_KEY_FILE="$work/master.key" VAULT_BOOTSTRAP_TOKEN="$token" \
    VAULT_ALLOWED_IPS="127.0.0.1,192.0.2.101" "$bin/vault-node" >>"$work/node$i.log" 2>&1 &
  node_pid[$i]=$!
}
ctl() { # ctl INDEX args...: vaultctl inside host INDEX against its own API on loopback
  local ns=${hosts[$(($1 - 1))]}
  shift
  ip netns exec "$ns" env VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN="$token" "$bin/vaultctl" "$@"
}
for i in 1 2 3; do start_node "$i"; done

cluster_formed() {
  local s
  s=$(ctl 1 --output json cluster status) || return 1
  [ "$(grep -c '"role": "leader"' <<<"$s")" = 1 ] && [ "$(grep -c '"role": "follower"' <<<"$s")" = 2 ]
}
wait_for 60 cluster_formed >/dev/null
check "the cluster forms over the overlay: one leader, two followers" cluster_formed

handshakes() {
  local i ns n
  for i in 1 2 3; do
    ns=${hosts[$((i - 1))]}
    n=$(ip netns exec "$ns" wg show "wgv$i$sfx" latest-handshakes | awk '$2 > 0' | wc -l)
    [ "$n" = 2 ] || { echo "node$i has $n handshakes"; return 1; }
  done
}
check "every node has a WireGuard handshake with both peers" handshakes

replicates() {
  ctl 1 secret put wg/one --value over-the-overlay >/dev/null || return 1
  [ "$(ctl 2 secret get wg/one)" = over-the-overlay ] && [ "$(ctl 3 secret get wg/one)" = over-the-overlay ]
}
check "with only WireGuard's UDP port open on the underlay, a write replicates to all nodes" replicates

raft_over_overlay() { ip netns exec "${hosts[1]}" timeout 3 bash -c '</dev/tcp/10.99.0.1/8201'; }
check "the Raft port answers over the overlay" raft_over_overlay
raft_closed_on_underlay() {
  local h
  for h in 192.0.2.11 192.0.2.12 192.0.2.13; do
    if ip netns exec "${clients[0]}" timeout 3 bash -c "</dev/tcp/$h/8201" 2>/dev/null; then
      echo "Raft port reachable from the underlay at $h"
      return 1
    fi
  done
}
check "the Raft port is unreachable from the underlay" raft_closed_on_underlay
api_closed_by_firewall() {
  # The API binds 0.0.0.0, so only the firewall keeps it closed here: proof the firewall is on.
  if ip netns exec "${clients[0]}" timeout 3 bash -c '</dev/tcp/192.0.2.11/8200' 2>/dev/null; then
    echo "API port reachable through the strict firewall"
    return 1
  fi
  ip netns exec "${hosts[0]}" timeout 3 bash -c '</dev/tcp/127.0.0.1/8200'
}
check "the strict firewall closes even the API port on the underlay (it is open on loopback)" api_closed_by_firewall
encrypted_path() {
  local bytes
  bytes=$(ip netns exec "${hosts[0]}" wg show "wgv1$sfx" transfer | awk '{s += $2 + $3} END {print s + 0}')
  [ "$bytes" -gt 1000 ] || { echo "only $bytes bytes through WireGuard"; return 1; }
}
check "node traffic flows through the WireGuard interface" encrypted_path

# A node killed and brought back over the overlay catches up.
kill -KILL "${node_pid[3]}"
wait "${node_pid[3]}" 2>/dev/null
unset 'node_pid[3]'
check "with node 3 down, the other two still commit" ctl 1 secret put wg/two --value written-while-3-was-down
start_node 3
catches_up() { [ "$(ctl 3 secret get wg/two)" = written-while-3-was-down ]; }
wait_for 60 catches_up >/dev/null
check "node 3 restarts, rejoins over the overlay and catches up" catches_up

# Clients: open the API port on the underlay (the API listens where clients are).
for i in 1 2 3; do
  ip netns exec "${hosts[$((i - 1))]}" nft insert rule inet vaultfw input iifname "vu$i$sfx" tcp dport 8200 accept
done
client_read() {
  local v
  v=$(ip netns exec "${clients[0]}" env VAULT_ADDR=http://192.0.2.12:8200 "$bin/vaultctl" secret get wg/one) || return 1
  [ "$v" = over-the-overlay ]
}
check "a client inside VAULT_ALLOWED_IPS reads a secret" client_read
client_denied() {
  local err
  if err=$(ip netns exec "${clients[1]}" env VAULT_ADDR=http://192.0.2.13:8200 "$bin/vaultctl" secret get wg/one 2>&1); then
    echo "read allowed: $err"
    return 1
  fi
  grep -q "permission denied" <<<"$err" || { echo "$err"; return 1; }
}
check "a client outside VAULT_ALLOWED_IPS is denied" client_denied
still_closed() { raft_closed_on_underlay; }
check "with the API port open, the Raft port stays closed on the underlay" still_closed

if ((failed)); then
  for i in 1 2 3; do echo "--- node$i log (tail)"; tail -15 "$work/node$i.log"; done
fi
echo "wireguard: $passed passed, $failed failed"
((failed == 0))
