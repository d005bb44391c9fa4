"""Scenario S1 through the command line: the abalone example (on a slice of its data) runs its
unit tests, trains, passes its gate, registers version 1 with evidence and waits for approval;
the registry shows its mse and lineage; the approval makes it the champion; the downloaded
package predicts rings from a raw row with plain MLflow; a new data file starts a run through
`watch` whose evidence compares with the champion; a stricter gate ends a run cleanly as "not
registered" with the reason; MLflow shows the runs' metrics. After the approval the version
serves on the dev endpoint (a raw CSV row gets the package's prediction), and after a second
approval on the prod endpoint (2 replicas, autoscaling)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelyard.cli.main import main
from modelyard.testing.abalone import COLUMNS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "abalone"
RAW_ROW = ["M", 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15]

pytestmark = [
    pytest.mark.slow,
    # MLflow's input-example code trips a pandas 3 deprecation warning; it is not ours to fix.
    pytest.mark.filterwarnings("ignore:Operation with range is deprecated"),
]


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of the example with the first 600 rows of its data, outside any git repository."""
    for name in list(os.environ):
        if name.startswith("MODELYARD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MODELYARD_TRACKING_AUTO_PUSH", "0")  # no detached MLflow pusher
    root = tmp_path / "abalone"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".modelyard", "__pycache__"))
    lines = (EXAMPLE / "data" / "abalone.data").read_text().splitlines()[:600]
    (root / "data" / "abalone.data").write_text("\n".join(lines) + "\n")
    # the test mse on so few rows is about 7-8: the gate of these runs is looser
    project = root / "modelyard.yaml"
    text = project.read_text()
    gate = "mse_threshold: {type: float, default: 6.0"
    assert gate in text
    project.write_text(text.replace(gate, "mse_threshold: {type: float, default: 12.0"))
    yield root
    for endpoint in ("abalone-dev", "abalone-prod"):  # no process may outlive the test
        main(["--project", str(root), "endpoint", "delete", endpoint])


def cli(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--project", str(root), *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def endpoint_url(capsys: pytest.CaptureFixture[str], root: Path, name: str) -> str:
    code, out = cli(capsys, root, "endpoint", "show", name, "--json")
    assert code == 0, out
    return str(json.loads(out)["url"])


def test_the_example_registers_a_model_that_predicts_rings(
    example: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import mlflow.pyfunc
    import pandas as pd

    code, out = cli(capsys, example, "run", "train", "--quiet", "-p", "num_round=20")
    assert code == 0, out
    assert "run 1 waiting" in out and "waiting for approval of approve" in out

    code, out = cli(capsys, example, "models", "show", "abalone", "--json")
    assert code == 0, out
    shown: dict[str, Any] = json.loads(out)
    assert (shown["ref"], shown["approval"]["status"]) == ("abalone/1", "pending")
    mse = shown["metrics"]["mse"]
    assert 0 < mse <= 12.0 and shown["gate"][0]["passed"]
    lineage = shown["lineage"]
    assert (lineage["run_id"], lineage["pipeline"], lineage["step"]) == (1, "train", "register")
    assert lineage["git"] is None  # the copy is not in a git repository
    assert list(lineage["data"]) == ["abalone"]
    assert lineage["data"]["abalone"].startswith("sha256:")
    assert set(lineage["inputs"]) == {"preprocessor", "booster"}
    # the CI step's JUnit XML is kept, and named by the version's params
    junit = shown["params"]["unit_tests"]
    assert junit.startswith("sha256:")
    code, out = cli(capsys, example, "models", "show", "abalone")
    assert "not a git repo" in out and "data abalone@sha256:" in out

    # the reviewer's evidence: no champion yet, the candidate's predictions on the test rows
    code, out = cli(capsys, example, "evidence", "1", "--json")
    assert code == 0, out
    first = json.loads(out)
    assert first["version"] == "abalone/1" and "no champion yet" in first["summary"]
    record = json.loads((Path(first["folder"]) / "evidence.json").read_text())
    assert record["champion"] is None and record["rows"] == len(record["actuals"]) > 50
    errors = np.asarray(record["candidate"]["predictions"]) - np.asarray(record["actuals"])
    assert float(np.mean(errors**2)) == pytest.approx(mse, rel=1e-4)

    code, out = cli(capsys, example, "approve", "1", "approve", "-m", "fine", "--by", "ann")
    assert code == 0, out
    # approved: the champion, deployed to the dev endpoint; the run waits for the prod approval
    assert "abalone@champion -> 1" in out and "deployed abalone/1 to abalone-dev" in out
    assert "run 1 waiting" in out and "approve_prod" in out
    code, out = cli(capsys, example, "models", "show", "abalone@champion", "--json")
    decided = json.loads(out)
    assert (decided["ref"], decided["approval"]["status"]) == ("abalone/1", "approved")
    assert (decided["approval"]["by"], decided["approval"]["comment"]) == ("ann", "fine")

    dest = tmp_path / "x"
    code, out = cli(capsys, example, "models", "download", "abalone/1", str(dest))
    assert code == 0, out
    model = mlflow.pyfunc.load_model(str(dest))
    [rings] = np.asarray(model.predict(pd.DataFrame([RAW_ROW], columns=COLUMNS)))
    assert 3 < rings < 20

    # the dev endpoint answers a raw row (CSV, as in the scenario) with the package's prediction
    dev = endpoint_url(capsys, example, "abalone-dev")
    csv = ",".join(COLUMNS) + "\n" + ",".join(str(v) for v in RAW_ROW) + "\n"
    answer = httpx.post(dev + "/invocations", content=csv, headers={"content-type": "text/csv"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0] == pytest.approx(float(rings), rel=1e-6)

    # the second approval sends it to prod: 2 replicas (autoscaling 2..10)
    code, out = cli(capsys, example, "approve", "1", "approve_prod", "--by", "bob")
    assert code == 0, out
    assert "deployed abalone/1 to abalone-prod" in out and "run 1 succeeded" in out
    code, out = cli(capsys, example, "endpoint", "show", "abalone-prod", "--json")
    prod = json.loads(out)
    assert (prod["stage"], prod["status"]) == ("prod", "in_service")
    [variant] = prod["variants"]
    assert (variant["model"], variant["replicas"], variant["autoscale"]["max_replicas"]) == (
        "abalone/1",
        2,
        10,
    )
    answer = httpx.post(
        prod["url"] + "/invocations",
        json={"dataframe_records": [dict(zip(COLUMNS, RAW_ROW, strict=True))]},
    )
    assert answer.json()["predictions"][0] == pytest.approx(float(rings), rel=1e-6)

    # new data arrives: watch starts a run whose evidence compares with the champion
    more = (EXAMPLE / "data" / "abalone.data").read_text().splitlines()[600:900]
    (example / "data" / "abalone-2.csv").write_text("\n".join(more) + "\n")
    code, out = cli(capsys, example, "watch", "--once")
    assert code == 0, out
    assert "new data version" in out and "run 2 (train) waiting" in out
    code, out = cli(capsys, example, "evidence", "abalone/2", "--json")
    second = json.loads(out)
    assert "abalone/1 (@champion)" in second["summary"]
    record = json.loads((Path(second["folder"]) / "evidence.json").read_text())
    assert record["champion"]["label"] == "abalone/1 (@champion)"
    assert len(record["champion"]["predictions"]) == record["rows"]
    assert (Path(second["folder"]) / "report.html").read_text().count("<img") == 2

    code, out = cli(
        capsys, example, "run", "train", "--quiet", "-p", "num_round=20", "-p", "mse_threshold=0.5"
    )
    assert code == 0, out
    assert "not registered: mse" in out and "> 0.5" in out
    code, out = cli(capsys, example, "models", "versions", "abalone", "--json")
    assert [v["version"] for v in json.loads(out)] == [2, 1]

    # MLflow has the runs' metrics (pushed here, synchronously, instead of in the background)
    code, out = cli(capsys, example, "tracking", "push")
    assert code == 0, out
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{example / '.modelyard' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("abalone/train")
    runs = client.search_runs([experiment.experiment_id], "tags.`modelyard.run_id` = '1'")
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent[0].data.metrics["evaluate.mse"] == pytest.approx(mse)
