#!/usr/bin/env bash
# Installs what the console's browser tests need, only when missing. Called by `make console`
# (part of `make test`) after `make venv`.
# - Debian's `chromium` (apt): the browser the tests drive, headless.
# - Playwright for Python (PyPI) in the venv. Only the Python package and its driver: nothing
#   downloads a browser (no `playwright install`); the tests launch /usr/bin/chromium through
#   `executable_path`.
# Usage: scripts/install-console.sh VENV_DIR
set -euo pipefail
venv="${1:?venv dir}"

if ! dpkg -s chromium >/dev/null 2>&1 || [ ! -x /usr/bin/chromium ]; then
  echo "install-console: installing chromium"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-console: need root or sudo to install chromium" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium
fi

if ! "$venv/bin/python" -c 'import playwright.sync_api' >/dev/null 2>&1; then
  echo "install-console: installing playwright into $venv"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 "$venv/bin/pip" install -q --disable-pip-version-check 'playwright>=1.40,<2'
  "$venv/bin/python" -c 'import playwright.sync_api'
fi
