"""`modelyard evidence REF`: the approval evidence of a run's version or of a model reference,
written to a folder, its summary printed; `--dest`, `--json` and the errors (exit codes 3 and 5).

The evidence project registers a tiny MLflow package written without MLflow (a pyfunc loader
module predicting `x * 2`) with evidence on two evaluation rows; its register step loads it with
MLflow in its child process (a few seconds). The error cases register folders that only look like
models (`FAKE_MODEL_STEP`), without evidence.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelyard.testing import write_project
from modelyard.testing.registry import FAKE_MODEL_STEP, TIMES_K_MODEL_STEP

EVIDENCE_PROJECT = f"""\
name: shop
pipelines:
  train:
    steps:
      make:
        run: {sys.executable} make_model.py ${{{{ outputs.model }}}} 2
        outputs: [model]
      register:
        register:
          model: toy
          mlflow_model: ${{{{ steps.make.outputs.model }}}}
          metrics: {{mse: 0.5}}
          evidence: {{data: eval.csv, label: y}}
      approve:
        approval:
          message: Ship it?
          approves: register
          alias_on_approval: champion
"""

PLAIN_PROJECT = f"""\
name: shop
pipelines:
  train:
    parameters:
      mse: 5.0
    steps:
      make:
        run: {sys.executable} make_model.py ${{{{ outputs.model }}}}
        outputs: [model]
      register:
        register:
          model: toy
          mlflow_model: ${{{{ steps.make.outputs.model }}}}
          metrics: {{mse: "${{{{ params.mse }}}}"}}
          gate: [{{metric: mse, max: 6.0}}]
"""

JSON_KEYS = {"version", "approval_status", "folder", "report", "summary", "mlflow"}

# MLflow's model loading warns about things that are not ours (versions, extra inputs).
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_evidence_of_a_run_and_of_a_version(tmp_path: Path, cli: Callable[..., Any]) -> None:
    root = write_project(
        tmp_path / "shop",
        EVIDENCE_PROJECT,
        {"make_model.py": TIMES_K_MODEL_STEP, "eval.csv": "x,y\n1.5,3.5\n2.5,4.0\n"},
    )
    started = cli(root, "run", "train", "--quiet")
    assert started.code == 0, started.err
    assert started.out.startswith("run 1 waiting")

    by_run = cli(root, "evidence", "1")

    assert by_run.code == 0, by_run.err
    folder = root / ".modelyard" / "evidence" / "toy-1"
    summary = (folder / "summary.md").read_text()
    assert by_run.out == (
        summary.rstrip() + f"\n\nreport: {(folder / 'report.html').resolve()}  (toy/1 is pending)\n"
        "mlflow (candidate): not pushed yet: modelyard tracking push\n"
    )
    assert summary.startswith("### Approval evidence for toy\n")
    assert "**Candidate:** candidate (run 1) · **Champion:** none (no champion yet)" in summary
    assert "| `mse` ↓ | 0.5 |" in summary
    record = json.loads((folder / "evidence.json").read_text())
    assert record["actuals"] == [3.5, 4.0]
    assert record["candidate"]["predictions"] == [3.0, 5.0]
    assert {"predicted_vs_actual.png", "residuals.png"} <= {p.name for p in folder.iterdir()}
    again = cli(root, "evidence", "1")  # the default folder is replaced each time
    assert (again.code, again.out) == (0, by_run.out)

    dest = tmp_path / "review"
    by_version = cli(root, "evidence", "toy/1", "--dest", str(dest))

    assert by_version.code == 0, by_version.err
    assert by_version.out.startswith(summary.rstrip() + "\n\nreport: ")
    assert f"report: {(dest / 'report.html').resolve()}  (toy/1 is pending)" in by_version.out
    assert (dest / "summary.md").read_text() == summary
    assert (dest / "report.html").read_text().startswith("<!DOCTYPE html>")
    occupied = cli(root, "evidence", "toy/1", "--dest", str(dest))
    assert occupied.code == 5
    assert "cannot write approval evidence here: the path exists" in occupied.err
    assert "Traceback" not in occupied.err

    approved = cli(root, "approve", "1", "approve", "-m", "ok", "--by", "alice")
    assert approved.code == 0, approved.err

    shown = cli(root, "evidence", "toy@champion", "--json", "--dest", str(tmp_path / "j"))

    assert shown.code == 0, shown.err
    fields = shown.json()
    assert set(fields) == JSON_KEYS
    assert (fields["version"], fields["approval_status"]) == ("toy/1", "approved")
    assert fields["folder"] == str((tmp_path / "j").resolve())
    assert fields["report"] == str((tmp_path / "j" / "report.html").resolve())
    assert fields["summary"] == summary
    # the candidate's MLflow run, as it is now; no champion was compared
    assert set(fields["mlflow"]) == {"candidate"}
    assert fields["mlflow"]["candidate"]["run_id"] is None
    # an alias names the default folder by the version it resolves to
    by_alias = cli(root, "evidence", "toy@champion", "--json")
    assert by_alias.code == 0, by_alias.err
    assert by_alias.json()["folder"] == str((root / ".modelyard" / "evidence" / "toy-1").resolve())


def test_evidence_errors_say_what_is_missing(tmp_path: Path, cli: Callable[..., Any]) -> None:
    root = write_project(tmp_path / "shop", PLAIN_PROJECT, {"make_model.py": FAKE_MODEL_STEP})
    assert cli(root, "run", "train", "--quiet").code == 0  # toy/1, without evidence
    refused = cli(root, "run", "train", "--quiet", "-p", "mse=7")  # run 2 registers nothing
    assert refused.code == 0, refused.err

    cases = {
        ("2",): (3, "error: run 2 registered no model version (yet)"),
        ("99",): (3, "error: run 99 does not exist"),
        ("toy/1",): (3, "error: toy/1 has no approval evidence"),
        ("1", "--json"): (3, "error: toy/1 has no approval evidence"),
        ("toy/9",): (3, "error: model 'toy' has no version 9"),
        ("nope",): (3, "error: model 'nope' does not exist in project 'shop'"),
    }
    for args, (code, message) in cases.items():
        result = cli(root, "evidence", *args)
        assert (result.code, result.out) == (code, ""), args
        assert result.err.startswith(message), (args, result.err)
        assert "Traceback" not in result.err
    assert not (root / ".modelyard" / "evidence").exists()
