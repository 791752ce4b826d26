#!/usr/bin/env bash
# Installs what building and testing need, only when missing. Called by `make deps`.
# Debian packages: protoc for the gRPC code, librocksdb-dev (linked instead of building RocksDB
# from source), libclang for bindgen, curl (with HTTP/2) for the tests that send non-gRPC requests.
set -euo pipefail

apt_packages=(protobuf-compiler librocksdb-dev libclang-dev libsnappy-dev liblz4-dev libzstd-dev
  libbz2-dev zlib1g-dev pkg-config curl rsyslog)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

for tool in cargo rustfmt cargo-clippy; do
  command -v "$tool" >/dev/null || { echo "install-deps: $tool is missing from the Rust toolchain" >&2; exit 1; }
done
