#!/usr/bin/env bash
# The end-to-end demo on the embedded defaults (SQLite, local artifact folder, local processes):
# scenario S1's compute pipeline on the shipped abalone data, then the same run from the cache,
# then a changed training parameter that re-runs training but not preprocessing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup-venv.sh" examples
cd "$ROOT/examples/abalone"

echo "== validate the project file"
modelyard validate
echo
echo "== run the pipeline: preprocess -> train -> evaluate -> check (mse <= 6.0)"
modelyard run train
echo
echo "== run it again: every step comes from the cache"
modelyard run train
echo
echo "== change a training parameter: train and what follows re-run, preprocess is reused"
modelyard run train -p max_depth=6
RUN_ID="$(modelyard runs --limit 1 --json | python -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"
echo
modelyard show "$RUN_ID"
echo
echo "== the evaluation step's log"
modelyard logs "$RUN_ID" evaluate
echo
echo "Done. Explore with: cd examples/abalone && $ROOT/.venv/bin/modelyard runs"
