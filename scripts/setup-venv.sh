#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv in .venv and install modelyard with the given extras.
# Usage: source scripts/setup-venv.sh EXTRAS   (e.g. "examples" or "dev")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  "$PYTHON" -m venv "$ROOT/.venv"
fi
"$ROOT/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[$1]"
export PATH="$ROOT/.venv/bin:$PATH"
