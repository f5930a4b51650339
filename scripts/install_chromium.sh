#!/usr/bin/env bash
# Installs Debian's chromium (headless browser for the Playwright tests) if it is missing.
# Idempotent: does nothing when /usr/bin/chromium already runs. Needs root or sudo for apt-get.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && chromium --version >/dev/null 2>&1; then
    echo "chromium present: $(chromium --version)"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "chromium is missing and this user cannot run apt-get (no root, no sudo)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
echo "chromium installed: $(chromium --version)"
