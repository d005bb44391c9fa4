"""Entry point of an isolated `python` step: `python -m modelyard.executors.child TASK.json`.

Imports only what calling the function needs, so a step's start-up stays short. Writes the
returned values to the task's values file and a one-line error summary on failure.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from modelyard.executors.base import StepTask
from modelyard.executors.pyfunc import StepFunctionError, call_step_function


def main(argv: list[str]) -> int:
    task = StepTask.from_json(Path(argv[1]).read_text(encoding="utf-8"))
    try:
        values = call_step_function(task)
    except StepFunctionError as exc:
        return task.record_failure(exc, known=True)
    except BaseException as exc:  # the step's own failure: keep the traceback in its log
        return task.record_failure(exc, known=False)
    task.values_file.write_text(json.dumps(values), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
