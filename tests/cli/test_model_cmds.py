"""`modelyard models ...`: stable JSON fields, text output, exit codes, and no MLflow import.

The project registers a folder shaped like an MLflow model (no packaging), with its mse taken
from a parameter, so each run registers in well under a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.testing import write_project
from modelyard.testing.registry import FAKE_MODEL_STEP

PROJECT = f"""\
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
          description: a toy model
          mlflow_model: ${{{{ steps.make.outputs.model }}}}
          metrics:
            mse: ${{{{ params.mse }}}}
          gate:
            - {{metric: mse, max: 6.0}}
"""

MODEL_KEYS = {"name", "description", "created_at", "versions", "latest", "aliases"}
VERSION_KEYS = {
    "model",
    "version",
    "evidence",
    "ref",
    "description",
    "created_at",
    "approval",
    "aliases",
    "metrics",
    "params",
    "tags",
    "package",
    "lineage",
    "gate",
    "run_id",
}
LINEAGE_KEYS = {"run_id", "project", "pipeline", "step", "git", "data", "inputs", "parents"}


@pytest.fixture
def registered(tmp_path: Path, cli: Callable) -> Path:
    """A project with toy/1 (mse 5.0) and toy/2 (mse 4.0), both pending."""
    root = write_project(tmp_path / "shop", PROJECT, {"make_model.py": FAKE_MODEL_STEP})
    for mse in ("5.0", "4.0"):
        result = cli(root, "run", "train", "--quiet", "-p", f"mse={mse}")
        assert result.code == 0, result.err
    return root


def test_run_says_what_it_registered_or_why_not(registered: Path, cli: Callable) -> None:
    refused = cli(registered, "run", "train", "--quiet", "-p", "mse=7")
    assert refused.code == 0  # a gate that refuses a version is a clean end, not a failure
    assert refused.out.startswith("run 3 succeeded in ")
    assert refused.out.rstrip().endswith(": not registered: mse 7.0 > 6.0")

    shown = cli(registered, "show", "3", "--json").json()
    register = next(s for s in shown["steps"] if s["name"] == "register")
    assert register["kind"] == "register"
    assert register["values"]["registered"] is False
    assert register["values"]["reason"] == "mse 7.0 > 6.0"


def test_json_fields_are_stable(registered: Path, cli: Callable) -> None:
    listed = cli(registered, "models", "list", "--json")
    assert listed.code == 0
    [model] = listed.json()
    assert set(model) == MODEL_KEYS
    assert (model["name"], model["versions"], model["aliases"]) == ("toy", 2, {})
    assert model["latest"]["version"] == 2 and model["latest"]["metrics"] == {"mse": 4.0}
    assert model["latest"]["approval_status"] == "pending"

    shown = cli(registered, "models", "show", "toy", "--json").json()
    assert set(shown) == VERSION_KEYS | {"history", "tracking"}
    assert (shown["ref"], shown["version"], shown["metrics"]) == ("toy/2", 2, {"mse": 4.0})
    assert shown["description"] == "a toy model"
    assert shown["approval"] == {"status": "pending", "by": None, "at": None, "comment": None}
    assert set(shown["package"]) == {"digest", "size", "flavor", "signature"}
    assert shown["package"]["digest"].startswith("sha256:")
    assert set(shown["lineage"]) == LINEAGE_KEYS
    assert shown["lineage"]["run_id"] == shown["run_id"] == 2
    assert shown["lineage"]["project"] == "shop"
    assert shown["evidence"] is None  # registered without evidence
    assert shown["gate"][0]["detail"] == "mse 4.0 <= 6.0"
    assert [h["kind"] for h in shown["history"]] == ["registered"]
    assert set(shown["history"][0]) == {"kind", "actor", "at", "message"}

    versions = cli(registered, "models", "versions", "toy", "--json").json()
    assert [v["version"] for v in versions] == [2, 1]
    assert all(set(v) == VERSION_KEYS for v in versions)

    compared = cli(registered, "models", "compare", "toy/1", "toy/2", "--json").json()
    assert set(compared) == {"a", "b", "metrics"}
    assert (compared["a"]["ref"], compared["b"]["ref"]) == ("toy/1", "toy/2")
    assert compared["metrics"] == [
        {"name": "mse", "a": 5.0, "b": 4.0, "delta": -1.0, "direction": "lower", "better": "b"}
    ]

    approved = cli(registered, "models", "approve", "toy/1", "-m", "ok", "--by", "ana", "--json")
    assert approved.code == 0
    decision = approved.json()["approval"]
    assert (decision["status"], decision["by"], decision["comment"]) == ("approved", "ana", "ok")
    assert decision["at"].endswith("Z")


def test_decisions_aliases_card_and_download(
    registered: Path, cli: Callable, tmp_path: Path
) -> None:
    approved = cli(registered, "models", "approve", "toy/1", "--by", "ana")
    assert (approved.code, approved.out) == (0, "toy/1 approved by ana\n")

    again = cli(registered, "models", "approve", "toy/1")
    assert again.code == 4
    assert again.err.startswith("error: toy/1 is already approved by ana")
    reject = cli(registered, "models", "reject", "toy/1", "-m", "changed my mind")
    assert reject.code == 4
    assert "an approved version cannot be rejected" in reject.err
    assert "Traceback" not in again.err + reject.err
    assert cli(registered, "models", "show", "toy/1", "--json").json()["approval"]["by"] == "ana"

    set_alias = cli(registered, "models", "alias", "set", "toy", "champion", "1")
    assert (set_alias.code, set_alias.out) == (0, "toy@champion -> version 1\n")
    moved = cli(registered, "models", "alias", "set", "toy", "champion", "2")
    assert moved.out == "toy@champion -> version 2 (was 1)\n"
    champion = cli(registered, "models", "show", "toy@champion", "--json").json()
    assert (champion["version"], champion["aliases"]) == (2, ["champion"])
    assert cli(registered, "models", "list", "--json").json()[0]["aliases"] == {"champion": 2}
    unset = cli(registered, "models", "alias", "unset", "toy", "champion")
    assert unset.out == "toy@champion removed (it pointed at version 2)\n"
    gone = cli(registered, "models", "show", "toy@champion")
    assert gone.code == 3 and "model 'toy' has no alias 'champion'" in gone.err

    card = cli(registered, "models", "card", "toy/1")
    assert card.code == 0
    assert card.out.startswith("# toy version 1\n\na toy model\n")
    assert "| mse | 5 |" in card.out

    dest = tmp_path / "downloaded"
    downloaded = cli(registered, "models", "download", "toy/1", str(dest), "--json")
    assert downloaded.code == 0
    assert downloaded.json()["path"] == str(dest.resolve())
    assert (dest / "MLmodel").is_file() and (dest / "model.pkl").is_file()
    occupied = cli(registered, "models", "download", "toy/1", str(dest))
    assert occupied.code == 5 and "the path exists" in occupied.err


def test_unknown_models_and_bad_references(registered: Path, cli: Callable) -> None:
    missing = cli(registered, "models", "show", "nope")
    assert missing.code == 3
    assert missing.err.startswith("error: model 'nope' does not exist in project 'shop'")
    assert "fix: the models are: toy" in missing.err
    no_version = cli(registered, "models", "approve", "toy/9")
    assert no_version.code == 3 and "has no version 9 (its versions are 1 to 2)" in no_version.err
    bad = cli(registered, "models", "show", "toy/latest")
    assert bad.code == 2 and "'toy/latest' is not a model reference" in bad.err


def test_text_output(registered: Path, cli: Callable) -> None:
    listed = cli(registered, "models", "list").out.splitlines()
    assert listed[0].split() == ["MODEL", "VERSIONS", "LATEST", "STATUS", "ALIASES", "REGISTERED"]
    assert listed[1].split()[:5] == ["toy", "2", "2", "pending", "-"]

    shown = cli(registered, "models", "show", "toy/1").out
    assert shown.startswith("toy/1  pending\n  a toy model\n")
    assert "  inputs: x (double)\n" in shown
    assert "  metrics: mse=5\n" in shown
    assert "  gate: passed: mse 5.0 <= 6.0\n" in shown
    assert "  lineage: run 1 (train/register), not a git repo" in shown

    compared = cli(registered, "models", "compare", "toy/1", "toy/2").out.splitlines()
    assert compared[0].split() == ["METRIC", "TOY/1", "TOY/2", "DELTA", "BETTER", "IS", "BETTER"]
    assert compared[1].split() == ["mse", "5", "4", "-1", "lower", "toy/2"]


def test_registry_config_errors_are_located(tmp_path: Path, cli: Callable) -> None:
    root = write_project(
        tmp_path / "bad",
        """\
        pipelines:
          train:
            steps:
              make: {run: echo, outputs: [model]}
              register:
                register:
                  model: toy
                  mlflow_model: ${{ steps.make.outputs.modle }}
                  metrics: {mse: 1.0}
                  gate:
                    - {metric: rmse, max: 1.0}
                    - {metric: score, better_than: champion}
                  alias_on_register: latest
        """,
    )
    result = cli(root, "validate")
    assert result.code == 2
    file = root / "modelyard.yaml"
    assert f"{file}:6: error: step 'make' has no output 'modle'" in result.err
    assert (
        f"{file}:11: error: gate rule on metric 'rmse', which the step does not declare"
        in result.err
    )
    assert f"{file}:12: error: gate rule: is a lower or a higher 'score' better?" in result.err
    assert f"{file}:12: error: gate rule on metric 'score'" in result.err
    assert f"{file}:13: error: 'latest' cannot be an alias" in result.err

    write_project(
        root,
        """\
        pipelines:
          train:
            steps:
              register:
                register:
                  model: toy
                  mlflow_model: models/toy
                  metrics: {mse: high}
                  gate:
                    - {metric: mse, max: 1.0, better_than: champion}
                  aproval_status: approved
        """,
    )
    result = cli(root, "validate")
    assert result.code == 2
    assert f"{file}:8: error: pipelines.train.steps.register.register.metrics.mse:" in result.err
    assert "'high' is neither a number nor a ${{ }} reference" in result.err
    assert f"{file}:10: error: pipelines.train.steps.register.register.gate.0:" in result.err
    assert (
        f"{file}:11: error: pipelines.train.steps.register.register.aproval_status: "
        "unknown key 'aproval_status'" in result.err
    )


def test_a_missing_package_path_is_reported(tmp_path: Path, cli: Callable) -> None:
    root = write_project(
        tmp_path / "paths",
        """\
        pipelines:
          train:
            steps:
              register:
                register: {model: toy, mlflow_model: models/toy}
        """,
    )
    result = cli(root, "validate")
    assert result.code == 2
    assert "mlflow_model 'models/toy' of register step 'register' does not exist" in result.err


def test_the_cli_and_the_driver_never_import_mlflow(registered: Path) -> None:
    """MLflow takes seconds to import: only the packaging child process may load it. And
    commands about runs do not even load the registry's tables."""
    script = textwrap.dedent(
        f"""
        import contextlib, io, json, sys
        from modelyard.cli.main import main
        root = {str(registered)!r}
        codes = []
        def run(*args):
            with contextlib.redirect_stdout(io.StringIO()):
                codes.append(main(["--project", root, *args]))
        run("runs")
        registry_loaded = "modelyard.store.registry_schema" in sys.modules
        for args in (["show", "1"], ["models", "show", "toy"], ["models", "list"],
                     ["run", "train", "--quiet"], ["models", "compare", "toy/1", "toy/3"],
                     ["models", "card", "toy"]):
            run(*args)
        print(json.dumps({{"codes": codes, "registry_loaded": registry_loaded,
                           "mlflow": "mlflow" in sys.modules,
                           "pandas": "pandas" in sys.modules}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "codes": [0, 0, 0, 0, 0, 0, 0],
        "registry_loaded": False,
        "mlflow": False,
        "pandas": False,
    }
