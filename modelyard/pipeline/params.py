"""Typed pipeline parameters: type inference, coercion of `-p key=value` overrides, resolution."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from modelyard.errors import ConfigError
from modelyard.pipeline.model import Parameter, Pipeline

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def infer_type(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, list | dict):
        return "json"
    return "str"


def coerce(param_type: str, value: Any) -> Any:
    """Convert `value` (from YAML or a `key=value` string) to `param_type`, or ValueError."""
    text = value if isinstance(value, str) else None
    if param_type == "bool":
        if isinstance(value, bool):
            return value
        if text is not None and text.strip().lower() in _TRUE | _FALSE:
            return text.strip().lower() in _TRUE
        raise ValueError(f"expected true or false, got {value!r}")
    if param_type == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if text is not None:
            try:
                return int(text.strip())
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {value!r}")
    if param_type == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if text is not None:
            try:
                return float(text.strip())
            except ValueError:
                pass
        raise ValueError(f"expected a number, got {value!r}")
    if param_type in ("str", "path"):
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"expected a string, got {value!r}")
    if param_type == "json":
        if text is not None:
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"expected JSON: {exc.msg} at column {exc.colno}") from None
        return value
    raise ValueError(f"unknown type {param_type!r}")


def check_choice(param: Parameter, value: Any) -> None:
    if param.choices is not None and value not in param.choices:
        allowed = ", ".join(repr(c) for c in param.choices)
        raise ValueError(f"{value!r} is not one of the allowed values: {allowed}")


def resolve_params(
    pipeline: Pipeline, overrides: Mapping[str, Any], *, from_text: bool = True
) -> dict[str, Any]:
    """The run's parameters: defaults overridden by `overrides`, each converted to its type."""
    unknown = sorted(set(overrides) - set(pipeline.parameters))
    if unknown:
        known = ", ".join(sorted(pipeline.parameters)) or "(none)"
        raise ConfigError(
            f"pipeline '{pipeline.name}' has no parameter '{unknown[0]}'",
            where="-p " + unknown[0],
            hint=f"the parameters are: {known}",
        )
    resolved: dict[str, Any] = {}
    for name, param in pipeline.parameters.items():
        if name in overrides:
            raw = overrides[name]
            try:
                value = coerce(param.type, raw) if from_text or raw is not None else raw
                check_choice(param, value)
            except ValueError as exc:
                raise ConfigError(
                    f"parameter '{name}' ({param.type}): {exc}",
                    where=f"-p {name}={raw}",
                    hint=f"pass a {param.type} value, e.g. -p {name}={_example(param)}",
                ) from None
            resolved[name] = value
        elif param.required:
            raise ConfigError(
                f"parameter '{name}' is required",
                where=f"pipeline '{pipeline.name}'",
                hint=f"pass it with -p {name}=VALUE",
            )
        else:
            # lint has checked that the default fits (e.g. `type: float, default: 1` -> 1.0)
            default = param.default
            resolved[name] = default if default is None else coerce(param.type, default)
    return resolved


def _example(param: Parameter) -> str:
    if param.default is not None:
        return json.dumps(param.default) if param.type == "json" else str(param.default)
    return {"int": "3", "float": "0.5", "bool": "true", "json": "{}"}.get(param.type, "text")
