"""A served model's input schema: the named, typed columns of its MLflow signature.

`InputSchema.from_mlmodel(folder)` reads the `inputs` of the signature in a package's `MLmodel`
file (YAML, with the inputs as a JSON string inside it) without importing mlflow. A column-based
signature gives an `InputSchema`; a tensor-based one, an unnamed one or none at all gives `None`:
requests to such models cannot be checked column by column.

`record_json_schema` and `openapi_components` describe request bodies for the server's OpenAPI
document (OpenAPI 3.1, whose schemas are JSON Schema 2020-12).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.errors import ArtifactError

__all__ = [
    "COLUMN_TYPES",
    "ColumnSpec",
    "InputSchema",
    "openapi_components",
    "record_json_schema",
]

MLMODEL_FILE = "MLmodel"

# MLflow's ColSpec scalar types, plus "any": MLflow's AnyType, and what array, object and map
# columns become here (their values pass through unchecked; the model's own checks apply).
COLUMN_TYPES = frozenset(
    {"string", "double", "float", "long", "integer", "boolean", "binary", "datetime", "any"}
)
_PASS_THROUGH_TYPES = frozenset({"any", "array", "object", "map"})

_DAMAGED_HINT = "the package is damaged: package the model again, or fix its MLmodel signature"


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One named input column: its MLflow type and whether a request must give it."""

    name: str
    type: str
    required: bool = True

    def __post_init__(self) -> None:
        if self.type not in COLUMN_TYPES:
            raise ValueError(
                f"column {self.name!r}: unknown type {self.type!r} "
                f"(one of {', '.join(sorted(COLUMN_TYPES))})"
            )


@dataclass(frozen=True, slots=True)
class InputSchema:
    """The input columns of a model, in the signature's order."""

    columns: tuple[ColumnSpec, ...]
    _by_name: Mapping[str, ColumnSpec] = field(init=False, repr=False, compare=False)
    _names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {column.name: column for column in self.columns}
        if len(by_name) != len(self.columns):
            names = [column.name for column in self.columns]
            twice = sorted({name for name in names if names.count(name) > 1})
            raise ValueError(f"duplicate column names: {', '.join(twice)}")
        # frozen: derived once here, since request parsing reads them for every request
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_names", tuple(by_name))

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def column(self, name: str) -> ColumnSpec | None:
        return self._by_name.get(name)

    @classmethod
    def from_mlmodel(cls, folder: Path) -> InputSchema | None:
        """The input schema of the MLflow model in `folder` (or of that `MLmodel` file itself).

        None when the model has no signature or a tensor-based or unnamed one. Raises
        `ArtifactError` when the file is missing or malformed.
        """
        path = Path(folder)
        mlmodel = path if path.is_file() else path / MLMODEL_FILE
        inputs = _signature_inputs(_read_yaml(mlmodel), mlmodel)
        if inputs is None:
            return None
        return _schema_from_inputs(inputs, mlmodel)

    def record_json_schema(self) -> dict[str, Any]:
        return record_json_schema(self)

    def openapi_components(self) -> dict[str, Any]:
        return openapi_components(self)


# -- reading MLmodel -----------------------------------------------------------------------------


def _read_yaml(mlmodel: Path) -> dict[str, Any]:
    import yaml  # lazy: only loading a model reads YAML

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader when libyaml is there
    try:
        doc = yaml.load(mlmodel.read_text(encoding="utf-8"), Loader=loader)  # safe: a SafeLoader
    except FileNotFoundError:
        raise ArtifactError(
            "not an MLflow model: there is no MLmodel file",
            where=str(mlmodel.parent),
            hint="pass the folder that holds the model's MLmodel file",
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ArtifactError(
            f"the MLmodel file cannot be read: {exc}", where=str(mlmodel), hint=_DAMAGED_HINT
        ) from exc
    if not isinstance(doc, dict):
        raise ArtifactError(
            "the MLmodel file is not a YAML mapping", where=str(mlmodel), hint=_DAMAGED_HINT
        )
    return doc


def _signature_inputs(doc: Mapping[str, Any], mlmodel: Path) -> list[Any] | None:
    signature = doc.get("signature")
    if signature is None:
        return None
    if not isinstance(signature, dict):
        raise ArtifactError(
            "the MLmodel 'signature' is not a mapping", where=str(mlmodel), hint=_DAMAGED_HINT
        )
    raw = signature.get("inputs")
    if raw is None:
        return None
    try:
        # MLflow stores the inputs as a JSON string inside the YAML
        inputs = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise ArtifactError(
            f"the signature's 'inputs' is not valid JSON: {exc}",
            where=str(mlmodel),
            hint=_DAMAGED_HINT,
        ) from exc
    if inputs is None:
        return None
    if not isinstance(inputs, list) or not all(isinstance(spec, dict) for spec in inputs):
        raise ArtifactError(
            "the signature's 'inputs' is not a list of column or tensor specs",
            where=str(mlmodel),
            hint=_DAMAGED_HINT,
        )
    return inputs


def _schema_from_inputs(inputs: list[dict[str, Any]], mlmodel: Path) -> InputSchema | None:
    # tensor specs and unnamed columns leave nothing to check column by column
    if not inputs or any(spec.get("type") == "tensor" or "name" not in spec for spec in inputs):
        return None
    columns = tuple(_column_spec(spec, mlmodel) for spec in inputs)
    try:
        return InputSchema(columns)
    except ValueError as exc:
        raise ArtifactError(
            f"the signature's inputs have {exc}", where=str(mlmodel), hint=_DAMAGED_HINT
        ) from exc


def _column_spec(spec: Mapping[str, Any], mlmodel: Path) -> ColumnSpec:
    name, kind, required = spec.get("name"), spec.get("type"), spec.get("required", True)
    if not isinstance(name, str) or not isinstance(required, bool):
        raise ArtifactError(
            f"the signature's input {spec!r} needs a string 'name' and a boolean 'required'",
            where=str(mlmodel),
            hint=_DAMAGED_HINT,
        )
    if kind in _PASS_THROUGH_TYPES:
        kind = "any"
    if kind not in COLUMN_TYPES:
        raise ArtifactError(
            f"the signature's input {name!r} has type {kind!r}, which modelyard cannot serve",
            where=str(mlmodel),
            hint=f"use one of MLflow's column types ({', '.join(sorted(COLUMN_TYPES))})",
        )
    return ColumnSpec(name, kind, required)


# -- JSON Schema / OpenAPI -----------------------------------------------------------------------

_VALUE_SCHEMAS: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "double": {"type": "number", "format": "double"},
    "float": {"type": "number", "format": "float"},
    "long": {"type": "integer", "format": "int64"},
    "integer": {"type": "integer", "format": "int32"},
    "boolean": {"type": "boolean"},
    "binary": {"type": "string", "format": "byte", "contentEncoding": "base64"},
    "datetime": {"type": "string", "format": "date-time"},
    "any": {},
}

_REF = "#/components/schemas/"


def value_json_schema(column: ColumnSpec) -> dict[str, Any]:
    """The JSON Schema of one value of `column` (null allowed when the column is optional)."""
    schema = dict(_VALUE_SCHEMAS[column.type])
    if not column.required and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


def record_json_schema(schema: InputSchema | None) -> dict[str, Any]:
    """The JSON Schema of one input record (an object of column -> value); free-form if None."""
    if schema is None:
        return {"type": "object", "description": "one input record: column name -> value"}
    return {
        "type": "object",
        "description": "one input record: column name -> value (other columns are ignored)",
        "properties": {column.name: value_json_schema(column) for column in schema.columns},
        "required": [column.name for column in schema.columns if column.required],
    }


def openapi_components(schema: InputSchema | None) -> dict[str, Any]:
    """OpenAPI `components` for `POST /invocations`: the body formats and the error document.

    The request body is `#/components/schemas/InvocationRequest`; errors are
    `#/components/schemas/InvocationError`.
    """
    record_ref = {"$ref": _REF + "InputRecord"}
    row = {"type": "array", "description": "values in the order of the model's input columns"}
    params = {"type": "object", "description": "inference parameters (optional)"}
    if schema is None:
        column_values: dict[str, Any] = {"type": "object"}
    else:
        column_values = {
            "type": "object",
            "properties": {
                c.name: {
                    "anyOf": [
                        {"type": "array", "items": value_json_schema(c)},
                        value_json_schema(c),
                    ]
                }
                for c in schema.columns
            },
            "required": [c.name for c in schema.columns if c.required],
        }
    instances = {"type": "array", "minItems": 1, "items": {"anyOf": [record_ref, row, {}]}}

    def wrapper(key: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": [key],
            "properties": {key: body, "params": params},
        }

    split = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "columns": {"type": "array", "items": {"type": "string"}},
            "data": {"type": "array", "minItems": 1, "items": row},
            "index": {"type": "array"},
        },
    }
    formats = {
        "DataframeSplit": wrapper("dataframe_split", split),
        "DataframeRecords": wrapper(
            "dataframe_records", {"type": "array", "minItems": 1, "items": record_ref}
        ),
        "Instances": wrapper("instances", instances),
        "Inputs": wrapper("inputs", {"anyOf": [column_values, instances]}),
    }
    return {
        "schemas": {
            "InputRecord": record_json_schema(schema),
            **formats,
            "InvocationRequest": {"oneOf": [{"$ref": _REF + name} for name in formats]},
            "InvocationError": {
                "type": "object",
                "required": ["error_code", "message"],
                "properties": {
                    "error_code": {"type": "string", "examples": ["BAD_REQUEST"]},
                    "message": {"type": "string"},
                    "field": {
                        "type": ["string", "null"],
                        "description": "the column or JSON key at fault",
                    },
                },
            },
        }
    }
