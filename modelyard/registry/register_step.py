"""Packaging for a register step, in a process of its own:
`python -m modelyard.registry.register_step TASK.json`.

Why a child process and not a thread of the driver: packaging imports MLflow, pandas,
scikit-learn and XGBoost (seconds, and hundreds of MB that the driver would keep for its whole
life), and runs native code that can crash or hang. In a child, the driver stays light, a crash is
a failed attempt with its log instead of a dead driver, and the step gets what compute steps get
for free: its own log, timeouts and cancellation that kill the process tree, recovery after the
driver dies.

The task is a `StepTask` whose params say what to package (see
`modelyard.engine.registration`); the package is written into the output folder `package`, and
what the package is (flavors, signature, digest) is written as the value `package`. The driver
then stores the folder, checks the gate again and records the version in one transaction.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from modelyard.errors import ModelyardError
from modelyard.executors.base import StepTask


def build_package(params: dict[str, Any], dest: Path) -> dict[str, Any]:
    """Write the package into `dest` (an empty folder) and describe it."""
    from modelyard.registry import packaging

    if params["kind"] == "mlflow_model":
        source = Path(params["mlflow_model"])
        packaging.inspect_package(source)  # a folder without a valid MLmodel fails here
        shutil.copytree(source, dest, dirs_exist_ok=True)
        info = packaging.inspect_package(dest)
    else:
        info = packaging.package_inference_pipeline(
            dest,
            preprocessor=params["preprocessor"],
            model=params["booster"],
            input_example=params.get("input_example"),
            column_names=params.get("columns"),
            requirements=params.get("requirements") or None,
            metadata=params.get("metadata"),
        )
    described = info.to_json()
    described.pop("path")  # a scratch folder: meaningless once the package is stored
    return described


def main(argv: list[str]) -> int:
    task = StepTask.from_json(Path(argv[1]).read_text(encoding="utf-8"))
    dest = task.outputs["package"]
    try:
        print(f"modelyard: packaging model '{task.params.get('model')}' into {dest}", flush=True)
        described = build_package(task.params, dest)
        if task.params.get("evidence") is not None:
            from modelyard.registry.evidence_build import build_evidence

            print("modelyard: predicting on the evaluation set for the reviewer", flush=True)
            evidence = build_evidence(task.params["evidence"], dest, task.outputs["evidence"])
            champion = f" and {evidence.champion.label}" if evidence.champion else ""
            print(f"modelyard: evidence for {evidence.candidate.label}{champion}", flush=True)
    except ModelyardError as exc:  # a known problem: its message says what to fix
        return task.record_failure(exc, known=True, prefix="packaging failed: ")
    except BaseException as exc:  # a library's own failure: keep the traceback in the log
        return task.record_failure(exc, known=False, prefix="packaging failed: ")
    flavors = ", ".join(described["flavors"])
    print(f"modelyard: package {described['digest']} ({flavors})", flush=True)
    task.values_file.write_text(json.dumps({"package": described}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
