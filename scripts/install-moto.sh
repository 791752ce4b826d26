#!/usr/bin/env bash
# Creates the Python venv with moto's KMS emulator server for the tests, if missing.
# Usage: scripts/install-moto.sh VENV_DIR
set -euo pipefail
venv="${1:?venv dir}"
if [ -x "$venv/bin/moto_server" ]; then
  exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  echo "install-moto: installing python3-venv"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv
fi
echo "install-moto: creating $venv with moto[server]"
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]==5.*'
"$venv/bin/moto_server" --help >/dev/null
