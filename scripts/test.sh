#!/usr/bin/env bash
# Run the whole test suite: bash scripts/test.sh [extra pytest arguments]
# Installs the Python requirements and, for the browser tests, Debian's chromium.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
if [ ! -x /usr/bin/chromium ] && [ -z "${DIGIT_STUDIO_SKIP_BROWSER:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing Debian chromium for the browser tests"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test: /usr/bin/chromium is missing; install it (apt-get install chromium) or set DIGIT_STUDIO_SKIP_BROWSER=1" >&2
    exit 1
  fi
fi
exec "$VENV/bin/python" -m pytest -ra "$@"
