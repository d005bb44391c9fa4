#!/usr/bin/env bash
# The end-to-end demo on the embedded defaults (SQLite, local artifact folder, local processes,
# an MLflow store in .modelyard/): scenario S1 up to the approval, non-interactively.
#
# It works on a copy of examples/abalone in .demo/abalone (the repository stays clean), whose data
# folder starts with the first 3,177 rows of the UCI file; the other 1,000 rows arrive later as a
# second file, as new measurements would. Steps: validate; run the pipeline (unit tests ->
# preprocess -> train -> evaluate -> register with the mse <= 6.0 gate and evidence) which stops
# at the approval; show the evidence; approve it with a comment (it becomes @champion); drop the
# second data file and let `watch` start the next run, whose evidence compares the new version with
# the champion; approve it; a stricter gate refuses a version; the registry, MLflow and the package.
# Each approved version is deployed to the dev endpoint, and after a second approval to prod
# (run 2's version as a canary under a little traffic); the endpoints stop when the demo ends.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup-venv.sh" examples
DEMO="$ROOT/.demo/abalone"
ARRIVALS="$ROOT/.demo/arrivals"

rm -rf "$ROOT/.demo"
mkdir -p "$ARRIVALS"
cp -r "$ROOT/examples/abalone" "$DEMO"
rm -rf "$DEMO/.modelyard"
head -n 3177 "$ROOT/examples/abalone/data/abalone.data" > "$DEMO/data/abalone.data"
tail -n +3178 "$ROOT/examples/abalone/data/abalone.data" > "$ARRIVALS/abalone-2.csv"
cd "$DEMO"
export MODELYARD_TRACKING_AUTO_PUSH=0  # the demo pushes to MLflow itself, below, and waits

last_run() {
  modelyard runs --limit 1 --json | python -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])'
}
endpoint_url() {
  modelyard endpoint show "$1" --json | python -c 'import json,sys; print(json.load(sys.stdin)["url"])'
}
trap 'modelyard endpoint stop abalone-dev >/dev/null 2>&1; modelyard endpoint stop abalone-prod >/dev/null 2>&1' EXIT

echo "== validate the project file"
modelyard validate
echo
echo "== run the pipeline: test -> preprocess -> train -> evaluate -> register -> approve"
modelyard run train
RUN1="$(last_run)"
echo
echo "== what the reviewer sees (also as HTML with plots: the report path below)"
modelyard evidence "$RUN1"
echo
echo "== approve it, with a comment: abalone/1 becomes approved and abalone@champion, and the run"
echo "   goes on: it deploys abalone/1 to the dev endpoint, then waits for the prod approval"
modelyard approve "$RUN1" approve --by demo-reviewer -m "mse on the held-out rows is fine"
echo
echo "== the dev endpoint answers raw CSV rows"
python "$ROOT/scripts/demo_traffic.py" "$(endpoint_url abalone-dev)" --csv
echo
echo "== the second approval: abalone/1 goes to prod (autoscaling from 2 replicas)"
modelyard approve "$RUN1" approve_prod --by demo-lead -m "dev answers well"
modelyard endpoint list
echo
echo "== new data arrives: a second file in the data source; watch starts the pipeline"
cp "$ARRIVALS/abalone-2.csv" data/
modelyard watch --once
RUN2="$(last_run)"
echo
echo "== the new version's evidence, compared with the champion"
modelyard evidence "$RUN2"
echo
modelyard approve "$RUN2" approve --by demo-reviewer -m "trained on more data; better than abalone/1"
echo
echo "== prod, under a little traffic: abalone/2 takes 10% as a canary for 30 s, then all of it"
python "$ROOT/scripts/demo_traffic.py" "$(endpoint_url abalone-prod)" 75 &
TRAFFIC=$!
modelyard approve "$RUN2" approve_prod --by demo-lead -m "canary it"
wait "$TRAFFIC"
modelyard endpoint show abalone-prod
echo
echo "== a stricter gate: the run ends cleanly as 'not registered', with the numbers"
modelyard run train -p mse_threshold=4
echo
modelyard show "$RUN2"
echo
echo "== the model registry"
modelyard models versions abalone
modelyard models show abalone@champion
echo
echo "== MLflow: push the tracking records, then read the runs back with MLflow's own client"
modelyard tracking push
python - <<'EOF'
from mlflow import MlflowClient

client = MlflowClient("sqlite:///.modelyard/mlflow.db")
experiment = client.get_experiment_by_name("abalone/train")
for run in client.search_runs([experiment.experiment_id], "tags.mlflow.parentRunId IS NULL"):
    metrics = {k: round(v, 4) for k, v in run.data.metrics.items() if k.startswith("evaluate.")}
    print(f"MLflow run {run.info.run_name}: {run.info.status} {metrics}")
EOF
echo
echo "== the champion's package, loaded with plain MLflow, predicts rings from a raw row"
modelyard models download abalone@champion "$ROOT/.demo/champion"
python - "$ROOT/.demo/champion" <<'EOF'
import sys

import mlflow.pyfunc
import pandas as pd

model = mlflow.pyfunc.load_model(sys.argv[1])
columns = ["sex", "length", "diameter", "height", "whole_weight", "shucked_weight",
           "viscera_weight", "shell_weight"]
row = ["M", 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15]
print(f"{row} -> {float(model.predict(pd.DataFrame([row], columns=columns))[0]):.2f} rings")
EOF
echo
echo "== the endpoints stop when the demo ends; \`modelyard endpoint start NAME\` brings one back"
echo
echo "Done. Explore with: cd .demo/abalone && source $ROOT/.venv/bin/activate && modelyard runs"
echo "MLflow UI: mlflow ui --backend-store-uri sqlite:///.modelyard/mlflow.db --default-artifact-root .modelyard/mlartifacts"
