#!/usr/bin/env bash
# Headless Chromium for the report test (tests/test_analysis_browser.py). Idempotent: installs only when
# /usr/bin/chromium is missing and we are root (CI containers); otherwise does nothing and succeeds.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "install_chromium: /usr/bin/chromium missing and not root; skipping (the browser test will be skipped)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium: no apt-get here; skipping" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq chromium >/dev/null
