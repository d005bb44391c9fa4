"""Calling a `python` step's function: arguments from the task, values from its return.

Shared by the isolated child process and the inline executor so both behave the same.
Arguments are matched by name: an input or output name gets a `pathlib.Path`, a parameter name
its value, `context` a `StepContext`.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.executors.base import StepTask
from modelyard.project.imports import import_project_module


class StepFunctionError(Exception):
    """The function cannot be called with this step's arguments, or returned something unusable."""


@dataclass(frozen=True)
class StepContext:
    run_id: int
    step: str
    attempt: int
    workdir: Path
    project_dir: Path


def load_function(task: StepTask) -> Any:
    assert task.function is not None
    module_name, _, attribute = task.function.partition(":")
    module = import_project_module(module_name, task.project_dir)
    function = getattr(module, attribute, None)
    if function is None or not callable(function):
        raise StepFunctionError(f"'{attribute}' in module '{module_name}' is not a function")
    return function


def call_step_function(task: StepTask) -> dict[str, Any]:
    function = load_function(task)
    kwargs = _arguments(function, task)
    result = function(**kwargs)
    return _values(result, task)


def _arguments(function: Any, task: StepTask) -> dict[str, Any]:
    available: dict[str, Any] = {}
    available |= task.params
    available |= task.inputs
    available |= task.outputs
    available["context"] = StepContext(
        task.run_id, task.step, task.attempt, task.workdir, task.project_dir
    )
    signature = inspect.signature(function)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    kwargs: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in available:
            kwargs[name] = available[name]
        elif parameter.default is parameter.empty:
            raise StepFunctionError(
                f"{task.function} needs argument '{name}', which is not an input, output or "
                f"parameter of step '{task.step}': declare it in the step or give it a default"
            )
    passed_on = set(task.params) | set(task.inputs) | set(task.outputs)
    unused = sorted(passed_on - set(kwargs))
    if unused and not accepts_any:
        raise StepFunctionError(
            f"step '{task.step}' passes '{unused[0]}' but {task.function} has no such "
            "argument: add it to the function's signature (or **kwargs)"
        )
    if accepts_any:
        kwargs |= {k: available[k] for k in unused}
    return kwargs


def _values(result: Any, task: StepTask) -> dict[str, Any]:
    if result is None:
        values: dict[str, Any] = {}
    elif isinstance(result, dict):
        values = result
    elif len(task.values) == 1:
        values = {task.values[0]: result}
    else:
        raise StepFunctionError(
            f"{task.function} returned a {type(result).__name__}: return a dict of the "
            "step's declared values (or declare exactly one value to return it directly)"
        )
    try:
        json.dumps(values)
    except (TypeError, ValueError) as exc:
        raise StepFunctionError(
            f"the values returned by {task.function} are not JSON: {exc}"
        ) from None
    return values
