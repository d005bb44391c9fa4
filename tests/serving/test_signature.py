"""Input schemas read from MLmodel files, and their JSON Schema / OpenAPI descriptions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelyard.errors import ArtifactError
from modelyard.serving.signature import (
    ColumnSpec,
    InputSchema,
    openapi_components,
    record_json_schema,
)
from modelyard.testing.abalone import COLUMNS

# the inputs of the abalone package that the demo registers (`.demo/champion/MLmodel`)
ABALONE_INPUTS = (
    '[{"type": "string", "name": "sex", "required": true}, {"type": "double", "name": "length", '
    '"required": true}, {"type": "double", "name": "diameter", "required": true}, {"type": '
    '"double", "name": "height", "required": true}, {"type": "double", "name": "whole_weight", '
    '"required": true}, {"type": "double", "name": "shucked_weight", "required": true}, {"type": '
    '"double", "name": "viscera_weight", "required": true}, {"type": "double", "name": '
    '"shell_weight", "required": true}]'
)
ABALONE_NAMES = tuple(COLUMNS)
DEMO_CHAMPION = Path(__file__).resolve().parents[2] / ".demo" / "champion"


def write_mlmodel(folder: Path, inputs: str | None, *, signature: bool = True) -> Path:
    """An MLmodel file as MLflow writes it: the inputs are a JSON string inside the YAML."""
    import yaml

    doc: dict[str, Any] = {"flavors": {"python_function": {"loader_module": "x"}}}
    if signature:
        doc["signature"] = {"inputs": inputs, "outputs": None, "params": None}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLmodel").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return folder


def test_abalone_signature(tmp_path: Path) -> None:
    schema = InputSchema.from_mlmodel(write_mlmodel(tmp_path, ABALONE_INPUTS))
    assert schema is not None
    assert schema.names == ABALONE_NAMES
    assert schema.columns[0] == ColumnSpec("sex", "string", True)
    assert {c.type for c in schema.columns[1:]} == {"double"}
    assert all(c.required for c in schema.columns)
    assert schema.column("height") == ColumnSpec("height", "double")
    assert schema.column("rings") is None


@pytest.mark.skipif(not DEMO_CHAMPION.is_dir(), reason="the demo has not run (.demo/champion)")
def test_the_demo_package_reads_like_the_copied_inputs(tmp_path: Path) -> None:
    real = InputSchema.from_mlmodel(DEMO_CHAMPION)
    assert real == InputSchema.from_mlmodel(write_mlmodel(tmp_path, ABALONE_INPUTS))


def test_the_mlmodel_file_itself_may_be_given(tmp_path: Path) -> None:
    write_mlmodel(tmp_path, ABALONE_INPUTS)
    schema = InputSchema.from_mlmodel(tmp_path / "MLmodel")
    assert schema is not None and schema.names == ABALONE_NAMES


def test_required_defaults_to_true_and_optional_columns_are_kept(tmp_path: Path) -> None:
    inputs = json.dumps(
        [
            {"type": "long", "name": "a"},
            {"type": "boolean", "name": "b", "required": False},
            {"type": "datetime", "name": "c", "required": True},
        ]
    )
    schema = InputSchema.from_mlmodel(write_mlmodel(tmp_path, inputs))
    assert schema == InputSchema(
        (ColumnSpec("a", "long"), ColumnSpec("b", "boolean", False), ColumnSpec("c", "datetime"))
    )


def test_array_object_and_map_columns_pass_through_as_any(tmp_path: Path) -> None:
    inputs = json.dumps(
        [
            {"type": "array", "items": {"type": "double"}, "name": "a"},
            {"type": "object", "properties": {}, "name": "o", "required": False},
            {"type": "map", "values": {"type": "string"}, "name": "m"},
            {"type": "any", "name": "x"},
        ]
    )
    schema = InputSchema.from_mlmodel(write_mlmodel(tmp_path, inputs))
    assert schema is not None
    assert [(c.name, c.type, c.required) for c in schema.columns] == [
        ("a", "any", True),
        ("o", "any", False),
        ("m", "any", True),
        ("x", "any", True),
    ]


@pytest.mark.parametrize(
    "inputs",
    [
        '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 8]}}]',
        '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}, "name": "x"}]',
        '[{"type": "double"}, {"type": "double"}]',  # unnamed columns
        "[]",
        "null",
        None,
    ],
)
def test_signatures_without_named_columns_give_none(tmp_path: Path, inputs: str | None) -> None:
    assert InputSchema.from_mlmodel(write_mlmodel(tmp_path, inputs)) is None


def test_no_signature_gives_none(tmp_path: Path) -> None:
    assert InputSchema.from_mlmodel(write_mlmodel(tmp_path, None, signature=False)) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("flavors: [unclosed\n", "cannot be read"),
        ("- a list\n", "not a YAML mapping"),
        ("signature: [1, 2]\n", "'signature' is not a mapping"),
        ("signature:\n  inputs: '[{\"type\": '\n", "not valid JSON"),
        ('signature:\n  inputs: \'{"type": "double"}\'\n', "not a list"),
        ("signature:\n  inputs: '[1, 2]'\n", "not a list"),
        ('signature:\n  inputs: \'[{"type": "decimal", "name": "a"}]\'\n', "'decimal'"),
        ('signature:\n  inputs: \'[{"type": "double", "name": 3}]\'\n', "string 'name'"),
        (
            'signature:\n  inputs: \'[{"type": "double", "name": "a", "required": 1}]\'\n',
            "boolean 'required'",
        ),
        (
            'signature:\n  inputs: \'[{"type": "double", "name": "a"}, '
            '{"type": "long", "name": "a"}]\'\n',
            "duplicate column names: a",
        ),
    ],
)
def test_malformed_mlmodel_raises_artifact_error(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "MLmodel").write_text(text, encoding="utf-8")
    with pytest.raises(ArtifactError, match=message) as caught:
        InputSchema.from_mlmodel(tmp_path)
    assert caught.value.where == str(tmp_path / "MLmodel")
    assert caught.value.hint


def test_non_utf8_mlmodel_raises_artifact_error(tmp_path: Path) -> None:
    (tmp_path / "MLmodel").write_bytes(b"signature: \xff\xfe\n")
    with pytest.raises(ArtifactError, match="cannot be read"):
        InputSchema.from_mlmodel(tmp_path)


def test_a_folder_without_mlmodel_raises_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no MLmodel file") as caught:
        InputSchema.from_mlmodel(tmp_path)
    assert caught.value.where == str(tmp_path)
    assert "MLmodel" in (caught.value.hint or "")


def test_column_spec_and_schema_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="unknown type 'decimal'"):
        ColumnSpec("a", "decimal")
    with pytest.raises(ValueError, match="duplicate column names: a"):
        InputSchema((ColumnSpec("a", "double"), ColumnSpec("a", "long")))


def test_schemas_are_frozen_and_compare_by_columns() -> None:
    one = InputSchema((ColumnSpec("a", "double"),))
    assert one == InputSchema((ColumnSpec("a", "double"),))
    assert hash(one) == hash(InputSchema((ColumnSpec("a", "double"),)))
    assert one != InputSchema((ColumnSpec("a", "double", required=False),))
    with pytest.raises(AttributeError):
        one.columns = ()  # type: ignore[misc]


# -- JSON Schema / OpenAPI -----------------------------------------------------------------------

MIXED = InputSchema(
    (
        ColumnSpec("s", "string"),
        ColumnSpec("d", "double"),
        ColumnSpec("f", "float"),
        ColumnSpec("l", "long"),
        ColumnSpec("i", "integer"),
        ColumnSpec("b", "boolean", required=False),
        ColumnSpec("bin", "binary", required=False),
        ColumnSpec("t", "datetime", required=False),
        ColumnSpec("x", "any", required=False),
    )
)


def test_record_json_schema_types_each_column() -> None:
    schema = MIXED.record_json_schema()
    props = schema["properties"]
    assert schema["type"] == "object"
    assert list(props) == list(MIXED.names)
    assert props["s"] == {"type": "string"}
    assert props["d"]["type"] == props["f"]["type"] == "number"
    assert props["l"]["type"] == props["i"]["type"] == "integer"
    assert props["b"]["type"] == ["boolean", "null"]  # optional: null allowed
    assert props["bin"]["type"] == ["string", "null"]
    assert props["t"]["format"] == "date-time"
    assert props["x"] == {}
    assert schema["required"] == ["s", "d", "f", "l", "i"]
    assert record_json_schema(None)["type"] == "object"


def test_record_json_schema_validates_records() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = MIXED.record_json_schema()
    good = {"s": "M", "d": 0.5, "f": 1, "l": 3, "i": 4, "b": None, "other": "ignored"}
    jsonschema.validate(good, schema)
    for bad in (
        {**good, "d": "x"},
        {**good, "l": 1.5},
        {k: v for k, v in good.items() if k != "s"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


@pytest.mark.parametrize("schema", [MIXED, None])
def test_openapi_components_refer_to_their_own_schemas(schema: InputSchema | None) -> None:
    components = openapi_components(schema)
    names = set(components["schemas"])
    assert {"InputRecord", "InvocationRequest", "InvocationError"} <= names
    refs = _refs(components)
    assert refs and all(ref.removeprefix("#/components/schemas/") in names for ref in refs)
    formats = components["schemas"]["InvocationRequest"]["oneOf"]
    assert len(formats) == 4
    error = components["schemas"]["InvocationError"]
    assert error["required"] == ["error_code", "message"]


def test_openapi_request_schema_accepts_the_formats() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    components = MIXED.openapi_components()
    document = {"components": components, **components["schemas"]["InvocationRequest"]}
    record = {"s": "M", "d": 0.5, "f": 1.0, "l": 3, "i": 4}
    for body in (
        {"dataframe_split": {"columns": ["s"], "data": [["M"]]}},
        {"dataframe_records": [record], "params": {"k": 1}},
        {"instances": [record]},
        {"inputs": {"s": ["M"], "d": [0.5], "f": [1.0], "l": [3], "i": 4}},
    ):
        jsonschema.validate(body, document)
    bad: list[dict[str, Any]] = [{"dataframe_records": [{**record, "l": "x"}]}, {"other": []}]
    for wrong in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, document)
