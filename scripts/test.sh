#!/usr/bin/env bash
# Install modelyard with its development extras into .venv and run the whole test suite.
# PostgreSQL tests run when a server answers on 127.0.0.1:5432 (database `test`), else they skip.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup-venv.sh" dev
cd "$ROOT"
python -m pytest -q "$@"
