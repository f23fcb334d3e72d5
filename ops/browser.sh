#!/usr/bin/env bash
# Headless Chromium and its driver for the dashboard's browser test (Debian packages).
# Idempotent: does nothing when both are installed. Needs root (CI runs as root) or sudo.
set -euo pipefail
if command -v chromium >/dev/null && [ -x /usr/bin/chromedriver ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "ops/browser.sh: no apt-get here; install chromium and chromium-driver yourself" >&2
    exit 1
fi
as_root=()
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "ops/browser.sh: needs root or sudo" >&2; exit 1; }
    as_root=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
echo "ops/browser.sh: $(chromium --version 2>/dev/null || echo chromium) installed"
