"""Helpers for tests that register model versions without training or packaging a model.

`FAKE_MODEL_STEP` is a step script that writes a folder shaped like an MLflow model (an MLmodel
file with a python_function flavor and a signature, and the file it names) into the folder given
as its first argument. A register step with `mlflow_model: ${{ steps.S.outputs.O }}` takes it as
it is, in well under a second (MLflow is never imported), which suits tests of gates, numbering,
approvals and aliases. The folder cannot be loaded for predictions: `TIMES_K_MODEL_STEP`
(`make_model.py OUT K`) writes one that can: a pyfunc loader module predicting `x * K` (K
`broken`: predict raises), also without importing MLflow.
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

# A pyfunc package (loader module + data), the way MLflow's `python_function` flavor documents it:
# `mlflow.pyfunc.load_model` puts `code/` on sys.path and calls `times_k._load_pyfunc(data/)`.
TIMES_K_MODEL_STEP = '''
import sys
from pathlib import Path

folder, k = Path(sys.argv[1]), sys.argv[2]
(folder / "code").mkdir(parents=True, exist_ok=True)
(folder / "data").mkdir(exist_ok=True)
(folder / "data" / "k.txt").write_text(k)
(folder / "code" / "times_k.py").write_text(
    "from pathlib import Path\\n"
    "class TimesK:\\n"
    "    def __init__(self, k):\\n"
    "        self.k = k\\n"
    "    def predict(self, frame, params=None):\\n"
    "        if self.k == 'broken':\\n"
    "            raise RuntimeError('this model is broken')\\n"
    "        return frame['x'].astype(float) * float(self.k)\\n"
    "def _load_pyfunc(path):\\n"
    "    return TimesK(Path(path, 'k.txt').read_text().strip())\\n"
)
(folder / "MLmodel").write_text("""\\
artifact_path: model
flavors:
  python_function:
    loader_module: times_k
    code: code
    data: data
    python_version: 3.11.0
mlflow_version: 3.1.0
signature:
  inputs: '[{"type": "double", "name": "x", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}}]'
  params: null
""")
(folder / "requirements.txt").write_text("pandas\\n")
'''
