#!/usr/bin/env bash
# Start the Digit Studio app: bash scripts/app.sh [extra streamlit flags]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m streamlit run streamlit_app.py "$@"
