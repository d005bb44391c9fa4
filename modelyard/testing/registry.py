"""Helpers for tests that register model versions without training or packaging a model.

`FAKE_MODEL_STEP` is a step script that writes a folder shaped like an MLflow model (an MLmodel
file with a python_function flavor and a signature, and the file it names) into the folder given
as its first argument. A register step with `mlflow_model: ${{ steps.S.outputs.O }}` takes it as
it is, in well under a second (MLflow is never imported), which suits tests of gates, numbering,
approvals and aliases. The folder cannot be loaded for predictions: use a real package for that.
"""

from __future__ import annotations

FAKE_MLMODEL = """\
artifact_path: model
flavors:
  python_function:
    loader_module: mlflow.sklearn
    model_path: model.pkl
    python_version: 3.11.0
mlflow_version: 2.12.2
signature:
  inputs: '[{"type": "double", "name": "x", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}}]'
  params: null
"""

FAKE_MODEL_STEP = f"""\
import sys
from pathlib import Path

folder = Path(sys.argv[1])
folder.mkdir(parents=True, exist_ok=True)
(folder / "MLmodel").write_text({FAKE_MLMODEL!r})
(folder / "model.pkl").write_bytes(b"not a real model")
(folder / "requirements.txt").write_text("scikit-learn==1.4.0\\n")
"""
