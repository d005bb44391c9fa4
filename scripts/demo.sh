#!/usr/bin/env bash
# The end-to-end demo on the embedded defaults (SQLite, local artifact folder, local processes):
# scenario S1's pipeline on the shipped abalone data (registering the model if its gate passes),
# then the same run from the cache, then a changed training parameter that re-runs training but
# not preprocessing, then the model registry.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup-venv.sh" examples
cd "$ROOT/examples/abalone"

echo "== validate the project file"
modelyard validate
echo
echo "== run the pipeline: preprocess -> train -> evaluate -> register (gate: mse <= 6.0)"
modelyard run train
echo
echo "== run it again: the compute steps come from the cache; registering is never cached"
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
echo "== the model registry"
modelyard models versions abalone
modelyard models show abalone
echo
echo "Done. Explore with: cd examples/abalone && $ROOT/.venv/bin/modelyard runs"
