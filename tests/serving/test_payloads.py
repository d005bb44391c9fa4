"""Parsing and validating /invocations bodies: formats, errors, fuzzing, and MLflow parity."""

from __future__ import annotations

import io
import json
import math
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from modelyard.serving import payloads
from modelyard.serving.payloads import Batch, PayloadError, parse_request
from modelyard.serving.signature import ColumnSpec, InputSchema
from modelyard.testing.abalone import COLUMNS

ABALONE = InputSchema(
    (ColumnSpec("sex", "string"), *(ColumnSpec(name, "double") for name in COLUMNS[1:]))
)
NAMES = list(ABALONE.names)
ROW = ["M", 0.455, 0.365, 0.095, 0.514, 0.2245, 0.101, 0.15]
ROW2 = ["F", 0.53, 0.42, 0.135, 0.677, 0.2565, 0.1415, 0.21]
RECORD = dict(zip(NAMES, ROW, strict=True))
RECORD2 = dict(zip(NAMES, ROW2, strict=True))
TWO_ROWS = {name: [a, b] for name, a, b in zip(NAMES, ROW, ROW2, strict=True)}

TYPED = InputSchema(
    (
        ColumnSpec("d", "double"),
        ColumnSpec("l", "long", required=False),
        ColumnSpec("i", "integer", required=False),
        ColumnSpec("b", "boolean", required=False),
        ColumnSpec("s", "string", required=False),
        ColumnSpec("bin", "binary", required=False),
        ColumnSpec("t", "datetime", required=False),
        ColumnSpec("x", "any", required=False),
    )
)
ONE = InputSchema((ColumnSpec("x", "double"),))


@pytest.fixture(params=["orjson", "json"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test that takes it runs with orjson (when installed) and with the stdlib json."""
    if request.param == "orjson":
        if payloads._fast_loads is None:
            pytest.skip("orjson is not installed")
    else:
        monkeypatch.setattr(payloads, "_fast_loads", None)
    return str(request.param)


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def parse(
    doc: Any,
    schema: InputSchema | None = ABALONE,
    content_type: str | None = "application/json",
    **kwargs: Any,
) -> Batch:
    raw = doc if isinstance(doc, bytes) else body(doc)
    return parse_request(raw, content_type, schema, **kwargs)


def fails(
    doc: Any,
    schema: InputSchema | None = ABALONE,
    content_type: str | None = "application/json",
    **kwargs: Any,
) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        parse(doc, schema, content_type, **kwargs)
    return caught.value


def same(a: list[Any], b: list[Any]) -> bool:
    """Lists equal, NaN equal to NaN."""
    return len(a) == len(b) and all(
        x == y
        or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        for x, y in zip(a, b, strict=True)
    )


# -- the formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {"dataframe_split": {"columns": NAMES, "data": [ROW, ROW2]}},
        {"dataframe_split": {"columns": NAMES, "data": [ROW, ROW2], "index": [7, 8]}},
        {"dataframe_split": {"data": [ROW, ROW2]}},  # no columns: the schema's order
        {"dataframe_split": {"columns": NAMES[::-1], "data": [ROW[::-1], ROW2[::-1]]}},
        {"dataframe_records": [RECORD, RECORD2]},
        {"dataframe_records": [dict(reversed(RECORD.items())), RECORD2]},
        {"instances": [RECORD, RECORD2]},
        {"instances": [ROW, ROW2]},
        {"inputs": TWO_ROWS},
        {"inputs": [RECORD, RECORD2]},
        {"inputs": [ROW, ROW2]},
        {"dataframe_records": [RECORD, RECORD2], "params": None},
        {"dataframe_records": [RECORD, RECORD2], "unknown_key": 1},  # ignored, as MLflow does
    ],
)
def test_every_json_format_gives_the_same_batch(backend: str, doc: Any) -> None:
    batch = parse(doc)
    assert batch == Batch(TWO_ROWS, 2)
    assert list(batch.columns) == NAMES  # the schema's order, whatever the body's


def test_one_row_of_inputs_may_be_plain_values(backend: str) -> None:
    batch = parse({"inputs": RECORD})
    assert batch.rows == 1
    assert batch.columns == {name: [value] for name, value in RECORD.items()}


def test_a_one_column_schema_takes_plain_values(backend: str) -> None:
    assert parse({"instances": [1, 2.5]}, ONE) == Batch({"x": [1.0, 2.5]}, 2)
    assert parse({"inputs": [1, 2.5]}, ONE) == Batch({"x": [1.0, 2.5]}, 2)
    assert parse({"inputs": 3}, ONE) == Batch({"x": [3.0]}, 1)
    assert parse({"instances": [[1], [2]]}, ONE) == Batch({"x": [1.0, 2.0]}, 2)


def test_params_are_returned(backend: str) -> None:
    batch = parse({"dataframe_records": [RECORD], "params": {"top_k": 3}})
    assert batch.params == {"top_k": 3}
    assert parse({"dataframe_records": [RECORD]}).params is None


@pytest.mark.parametrize(
    ("content_type", "doc"),
    [
        ("application/json; format=pandas-split", {"columns": NAMES, "data": [ROW, ROW2]}),
        ("application/json;format=pandas-records", [RECORD, RECORD2]),
        ('application/json; format="pandas-records"', [RECORD, RECORD2]),
        # a current body with a legacy content type is read as it says
        ("application/json; format=pandas-split", {"dataframe_records": [RECORD, RECORD2]}),
        ("Application/JSON; charset=UTF-8", {"inputs": TWO_ROWS}),
        (None, {"inputs": TWO_ROWS}),
        ("", {"inputs": TWO_ROWS}),
    ],
)
def test_content_types(backend: str, content_type: str | None, doc: Any) -> None:
    assert parse(doc, content_type=content_type) == Batch(TWO_ROWS, 2)


def test_extra_columns_are_dropped(backend: str) -> None:
    for doc in (
        {"dataframe_records": [{**RECORD, "rings": 9}]},
        {"dataframe_split": {"columns": [*NAMES, "rings"], "data": [[*ROW, 9]]}},
        {"inputs": {**RECORD, "rings": "not even a number"}},
    ):
        assert list(parse(doc).columns) == NAMES


def test_without_a_schema_json_values_are_kept_in_order(backend: str) -> None:
    batch = parse(
        {"dataframe_records": [{"b": 1, "a": "x"}, {"a": None, "c": [1, 2]}]}, schema=None
    )
    assert batch == Batch({"b": [1, None], "a": ["x", None], "c": [None, [1, 2]]}, 2)
    batch = parse({"dataframe_split": {"columns": ["z", "y"], "data": [[1, True]]}}, schema=None)
    assert batch == Batch({"z": [1], "y": [True]}, 1)
    assert parse({"inputs": {"q": 1.5}}, schema=None) == Batch({"q": [1.5]}, 1)


# -- value types ----------------------------------------------------------------------------------


def test_numbers_are_converted_to_the_column_types(backend: str) -> None:
    batch = parse(
        {
            "dataframe_records": [
                {"d": 1, "l": 2, "i": 3.0, "b": True, "s": "a"},
                {"d": "2.5", "l": "-4", "i": 2**31 - 1, "b": False, "s": ""},
                {"d": 1e300, "l": 2**63 - 1, "i": -(2**31), "b": None, "s": None},
            ]
        },
        TYPED,
    )
    assert batch.columns["d"] == [1.0, 2.5, 1e300]
    assert all(type(v) is float for v in batch.columns["d"])
    assert batch.columns["l"] == [2, -4, 2**63 - 1]
    assert batch.columns["i"] == [3, 2**31 - 1, -(2**31)]
    assert type(batch.columns["i"][0]) is int
    assert batch.columns["b"] == [True, False, None]
    assert batch.columns["s"] == ["a", "", None]
    assert list(batch.columns) == ["d", "l", "i", "b", "s"]  # absent optional columns: omitted


def test_nan_and_infinity_are_accepted_in_double_columns(backend: str) -> None:
    batch = parse(b'{"inputs": {"x": [NaN, Infinity, -Infinity, 1e999]}}', ONE)
    values = batch.columns["x"]
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf, math.inf]


def test_binary_datetime_and_any_columns(backend: str) -> None:
    batch = parse(
        {
            "dataframe_records": [
                {"d": 0, "bin": "aGVsbG8=", "t": "2024-05-06T07:08:09", "x": {"k": [1]}},
                {"d": 0, "bin": "aGVs\nbG8=", "t": "2024-05-06T07:08:09+02:00", "x": None},
                {"d": 0, "t": "2024-05-06"},
            ]
        },
        TYPED,
    )
    assert batch.columns["bin"] == [b"hello", b"hello", None]
    assert batch.columns["t"] == [
        datetime(2024, 5, 6, 7, 8, 9),
        datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2))),
        datetime(2024, 5, 6),
    ]
    assert batch.columns["x"] == [{"k": [1]}, None, None]


def test_optional_values_missing_from_some_records_are_none(backend: str) -> None:
    batch = parse({"dataframe_records": [{"d": 1.0, "l": 3}, {"d": 2.0}]}, TYPED)
    assert batch.columns == {"d": [1.0, 2.0], "l": [3, None]}


@pytest.mark.parametrize(
    ("record", "column", "expected"),
    [
        ({"d": "abc"}, "d", "expected a number (double), got string 'abc'"),
        ({"d": True}, "d", "got boolean true"),
        ({"d": [1.0]}, "d", "got a list"),
        ({"d": {"v": 1}}, "d", "got an object"),
        ({"d": 10**400}, "d", "got a very large integer"),
        ({"d": 1, "l": 1.5}, "l", "expected a 64-bit integer (long), got number 1.5"),
        ({"d": 1, "l": 2**63}, "l", "64-bit integer"),
        ({"d": 1, "l": "1.0"}, "l", "got string '1.0'"),
        ({"d": 1, "l": True}, "l", "got boolean true"),
        ({"d": 1, "i": 2**31}, "i", "expected a 32-bit integer (integer)"),
        ({"d": 1, "i": float("nan")}, "i", "got number nan"),
        ({"d": 1, "b": 1}, "b", "expected true or false (boolean), got number 1"),
        ({"d": 1, "b": "true"}, "b", "got string 'true'"),
        ({"d": 1, "s": 5}, "s", "expected a string, got number 5"),
        ({"d": "x" * 100}, "d", "got string '" + "x" * 37 + "...'"),  # shortened
        ({"d": 1, "bin": "not base64!"}, "bin", "expected a base64 string (binary)"),
        ({"d": 1, "bin": "é"}, "bin", "binary"),
        ({"d": 1, "t": "yesterday"}, "t", "expected an ISO 8601 date-time string"),
        ({"d": 1, "t": 1700000000}, "t", "date-time"),
    ],
)
def test_wrong_types_are_422_naming_column_and_row(
    backend: str, record: dict[str, Any], column: str, expected: str
) -> None:
    error = fails({"dataframe_records": [{"d": 0.0}, {"d": 0.0}, record]}, TYPED)
    assert error.status == 422
    assert error.field == column
    assert f"column {column!r} at row 2" in error.message
    assert expected in error.message
    assert error.to_json()["error_code"] == "INVALID_PARAMETER_VALUE"


# -- errors ---------------------------------------------------------------------------------------

R = RECORD


@pytest.mark.parametrize(
    ("doc", "status", "field", "message"),
    [
        # structure
        (b"", 400, None, "not valid JSON"),
        (b"{", 400, None, "not valid JSON"),
        (b"\xff\xfe\x00garbage", 400, None, "not valid JSON"),
        ([R], 400, None, "must be a JSON object"),
        ("text", 400, None, "must be a JSON object"),
        ({}, 400, None, "exactly one of the keys"),
        ({"columns": NAMES, "data": [ROW]}, 400, None, "exactly one of the keys"),
        ({"instances": [R], "inputs": [R]}, 400, "inputs", "exactly one of the keys"),
        ({"dataframe_records": [R], "params": [1]}, 400, "params", "'params' must be"),
        ({"dataframe_split": [ROW]}, 400, "dataframe_split", "must be an object with 'data'"),
        ({"dataframe_split": {"columns": NAMES}}, 400, "dataframe_split", "with 'data'"),
        (
            {"dataframe_split": {"columns": NAMES, "data": [ROW], "orient": "x"}},
            400,
            "dataframe_split",
            "unknown key 'orient'",
        ),
        ({"dataframe_split": {"data": {"a": 1}}}, 400, "dataframe_split.data", "list of rows"),
        (
            {"dataframe_split": {"columns": NAMES, "data": [ROW, ROW[:7]]}},
            400,
            "dataframe_split.data",
            "row 1 of 'dataframe_split.data' has 7 values, not 8",
        ),
        (
            {"dataframe_split": {"columns": NAMES, "data": [ROW, "M"]}},
            400,
            "dataframe_split.data",
            "row 1 of 'dataframe_split.data' is not a list",
        ),
        (
            {"dataframe_split": {"columns": [1, 2], "data": [[1, 2]]}},
            400,
            "dataframe_split.columns",
            "list of column names",
        ),
        (
            {"dataframe_split": {"columns": ["a", "a"], "data": [[1, 2]]}},
            400,
            "a",
            "names column 'a' twice",
        ),
        (
            {"dataframe_split": {"columns": NAMES, "data": [ROW], "index": [1, 2]}},
            400,
            "dataframe_split.index",
            "one label per row",
        ),
        (
            {"dataframe_split": {"data": [ROW[:7]]}},
            422,
            "dataframe_split.data",
            "have 7 values, but the model takes 8 columns in this order: sex, length",
        ),
        ({"dataframe_records": R}, 400, "dataframe_records", "list of records"),
        (
            {"dataframe_records": [R, [1, 2]]},
            400,
            "dataframe_records",
            "row 1 of 'dataframe_records' is not an object",
        ),
        ({"instances": R}, 400, "instances", "list of records, rows or values"),
        ({"instances": [R, ROW]}, 400, "instances", "row 1 of 'instances' is not an object"),
        ({"instances": [ROW, R]}, 400, "instances", "row 1 of 'instances' is not a list"),
        ({"instances": [1.0, 2.0]}, 400, "instances", "only a model with one input column"),
        ({"inputs": "M"}, 400, "inputs", "object of column -> values"),
        ({"inputs": {"rings": [1]}}, 422, "sex", "missing column 'sex'"),
        (
            {"inputs": {**TWO_ROWS, "length": [0.5]}},
            400,
            "length",
            "column 'length' of 'inputs' has 1 values, but 'sex' has 2",
        ),
        # empty
        (
            {"dataframe_split": {"columns": NAMES, "data": []}},
            400,
            "dataframe_split.data",
            "no rows",
        ),
        ({"dataframe_records": []}, 400, "dataframe_records", "no rows"),
        ({"instances": []}, 400, "instances", "no rows"),
        ({"inputs": []}, 400, "inputs", "no rows"),
        ({"inputs": {name: [] for name in NAMES}}, 400, "inputs", "no rows"),
        (
            {"dataframe_split": {"columns": [], "data": [[]]}},
            400,
            "dataframe_split.columns",
            "empty",
        ),
        # schema
        ({"dataframe_records": [{**R, "length": None}]}, 422, "length", "is null at row 0"),
        (
            {"dataframe_records": [R, {k: v for k, v in R.items() if k != "height"}]},
            422,
            "height",
            "column 'height' has no value at row 1, and it is required",
        ),
        ({"dataframe_records": [{"sex": "M"}]}, 422, "length", "missing column 'length'"),
        (
            {"dataframe_split": {"columns": NAMES[:-1], "data": [ROW[:-1]]}},
            422,
            "shell_weight",
            "missing column 'shell_weight'",
        ),
        ({"inputs": {**R, "sex": None}}, 422, "sex", "column 'sex' is null at row 0"),
        ({"inputs": {**R, "diameter": "wide"}}, 422, "diameter", "got string 'wide'"),
    ],
)
def test_errors(backend: str, doc: Any, status: int, field: str | None, message: str) -> None:
    error = fails(doc)
    assert (error.status, error.field) == (status, field), error.message
    assert message in error.message
    assert error.to_json() == {
        "error_code": {400: "BAD_REQUEST", 422: "INVALID_PARAMETER_VALUE"}[status],
        "message": error.message,
        "field": field,
    }


def test_rows_as_lists_need_a_schema(backend: str) -> None:
    for doc in ({"instances": [[1, 2]]}, {"dataframe_split": {"data": [[1, 2]]}}):
        error = fails(doc, schema=None)
        assert error.status == 400
        assert "no column signature" in error.message


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("text/plain", "unsupported content type 'text/plain'"),
        ("application/vnd.apache.parquet", "send application/json or text/csv"),
        ("application/json; charset=latin-1", "unsupported charset 'latin-1'"),
        ("text/csv; charset=utf-16", "unsupported charset"),
        ("application/json; format=tf-serving", "unsupported format 'tf-serving'"),
    ],
)
def test_unsupported_content_types_are_415(content_type: str, message: str) -> None:
    error = fails({"dataframe_records": [RECORD]}, content_type=content_type)
    assert error.status == 415
    assert message in error.message
    assert error.to_json()["error_code"] == "BAD_REQUEST"


@pytest.mark.parametrize(
    "doc",
    [
        {"dataframe_split": {"columns": NAMES, "data": [ROW] * 4}},
        {"dataframe_split": {"data": [ROW] * 4}},
        {"dataframe_records": [RECORD] * 4},
        {"instances": [ROW] * 4},
        {"inputs": {name: [value] * 4 for name, value in RECORD.items()}},
        b"a,b\n" + b"1,2\n" * 4,
    ],
)
def test_too_many_rows_is_413(backend: str, doc: Any) -> None:
    content_type = "text/csv" if isinstance(doc, bytes) else "application/json"
    assert parse(doc, None if content_type == "text/csv" else ABALONE, content_type, max_rows=4)
    error = fails(doc, None, content_type, max_rows=3)
    assert error.status == 413
    assert "more than the 3 this server takes at once" in error.message
    assert error.to_json()["error_code"] == "RESOURCE_LIMIT_EXCEEDED"


def test_payload_error_is_an_exception_with_its_message() -> None:
    error = PayloadError(422, "missing column 'length'", "length")
    assert str(error) == "missing column 'length'"
    assert error.to_json() == {
        "error_code": "INVALID_PARAMETER_VALUE",
        "message": "missing column 'length'",
        "field": "length",
    }
    assert PayloadError(413, "big").error_code == "RESOURCE_LIMIT_EXCEEDED"


# -- CSV ------------------------------------------------------------------------------------------

CSV_HEADER = ",".join(NAMES)


def csv_body(*lines: str) -> bytes:
    return "\n".join(lines).encode()


def test_csv_with_a_schema() -> None:
    text = csv_body(CSV_HEADER, ",".join(map(str, ROW)), ",".join(map(str, ROW2)), "")
    assert parse(text, content_type="text/csv") == Batch(TWO_ROWS, 2)


def test_csv_from_pandas_to_csv_with_its_index_bom_crlf_and_quotes() -> None:
    # DataFrame.to_csv writes an unnamed index column first; MLflow drops it as an extra column
    text = "\ufeff," + CSV_HEADER + "\r\n" + '0,"M",' + ",".join(map(str, ROW[1:])) + "\r\n\r\n"
    batch = parse(text.encode(), content_type="text/csv; charset=utf-8")
    assert batch == Batch({name: [value] for name, value in RECORD.items()}, 1)


def test_csv_values_follow_the_column_types() -> None:
    text = csv_body(
        "d,l,i,b,s,bin,t,x",
        "1,2,3,true,a b,aGVsbG8=,2024-05-06T07:08:09,7",
        'NaN,-4,0,False,"q,uoted",,,',
    )
    batch = parse(text, TYPED, "text/csv")
    assert batch.columns["d"][0] == 1.0 and math.isnan(batch.columns["d"][1])
    assert batch.columns["l"] == [2, -4]
    assert batch.columns["i"] == [3, 0]
    assert batch.columns["b"] == [True, False]
    assert batch.columns["s"] == ["a b", "q,uoted"]
    assert batch.columns["bin"] == [b"hello", None]  # an empty field is a missing value
    assert batch.columns["t"] == [datetime(2024, 5, 6, 7, 8, 9), None]
    assert batch.columns["x"] == ["7", None]


def test_csv_without_a_schema_infers_numbers_per_column() -> None:
    text = csv_body("a,b,c,d,e", "1,1.5,x,true,", "2,2,3,false,", "-3,,y,TRUE,")
    batch = parse(text, None, "text/csv")
    assert batch == Batch(
        {
            "a": [1, 2, -3],
            "b": [1.5, 2.0, None],
            "c": ["x", "3", "y"],
            "d": [True, False, True],
            "e": [None, None, None],
        },
        3,
    )


@pytest.mark.parametrize(
    ("text", "status", "field", "message"),
    [
        (b"", 400, None, "the CSV body is empty"),
        (b"\n\n", 400, None, "the CSV body is empty"),
        (CSV_HEADER.encode(), 400, "csv", "no rows"),
        (b"a,b\n1,2\n\xff,3\n", 400, None, "not UTF-8"),
        (csv_body(CSV_HEADER, ",".join(map(str, ROW)), "M,1,2"), 400, None, "CSV row 1 (line 3)"),
        (b'a,b\n"1,2\n', 400, None, "malformed at line 2: unexpected end of data"),
        (b'a,b\n"1"x,2\n', 400, None, "malformed at line 2"),
        (b"a,a\n1,2\n", 400, "a", "names column 'a' twice"),
        (csv_body("sex,length", "M,1"), 422, "diameter", "missing column 'diameter'"),
        (
            csv_body(CSV_HEADER, "M,1,2,3,4,5,6,7", "M,1,2,x,4,5,6,7"),
            422,
            "height",
            "column 'height' at row 1: expected a number (double), got string 'x'",
        ),
        (csv_body(CSV_HEADER, "M,1,2,,4,5,6,7"), 422, "height", "column 'height' is null at row 0"),
    ],
)
def test_csv_errors(text: bytes, status: int, field: str | None, message: str) -> None:
    error = fails(text, content_type="text/csv")
    assert (error.status, error.field) == (status, field), error.message
    assert message in error.message


@pytest.mark.parametrize(
    ("value", "message"),
    [("1.5", "got string '1.5'"), ("99999999999", "32-bit"), ("yes", "true or false")],
)
def test_csv_type_errors(value: str, message: str) -> None:
    column = {"1.5": "i", "99999999999": "i", "yes": "b"}[value]
    error = fails(csv_body(f"d,{column}", f"1,{value}"), TYPED, "text/csv")
    assert (error.status, error.field) == (422, column)
    assert message in error.message


# -- robustness: nothing but PayloadError escapes -------------------------------------------------


def check_outcome(raw: bytes, content_type: str | None, schema: InputSchema | None) -> None:
    """A Batch whose columns all have `rows` values, or a PayloadError from the parser itself."""
    try:
        batch = parse_request(raw, content_type, schema, max_rows=50)
    except PayloadError as error:
        assert error.status in (400, 413, 415, 422)
        # only parse_request's safety net chains a cause, and it must stay unused
        assert error.__cause__ is None, repr(error.__cause__)
        json.dumps(error.to_json())
        return
    assert 1 <= batch.rows <= 50
    assert all(len(values) == batch.rows for values in batch.columns.values())
    if schema is not None:
        assert list(batch.columns) == [n for n in schema.names if n in batch.columns]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(12 if depth < 4 else 7)
    scalars: list[Any] = [
        None,
        True,
        rng.choice([0, -1, 2**31, 2**63, 2**64, 10**30]),
        rng.choice([0.5, float("nan"), float("inf"), -1e308]),
        rng.choice(["", "M", "1.5", "aGVsbG8=", "2024-01-01", "\u0000", "\ud800"]),
        rng.choice([*NAMES, "x", "d", "l", "b", "t", "bin", "params", "data", "columns"]),
        rng.choice(["dataframe_split", "dataframe_records", "instances", "inputs"]),
    ]
    if choice < 7:
        return scalars[choice]
    if choice < 9:
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [*NAMES, "d", "l", "b", "data", "columns", "index", "params", *payloads.FORMATS]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(5))}


def fuzz_bodies(seed: int, count: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    valid = [
        body({"dataframe_split": {"columns": NAMES, "data": [ROW, ROW2]}}),
        body({"dataframe_records": [RECORD, RECORD2], "params": {"a": 1}}),
        body({"instances": [ROW]}),
        body({"inputs": TWO_ROWS}),
    ]
    for _ in range(count):
        kind = rng.randrange(4)
        if kind == 0:  # random structures around the format keys
            doc = random_json(rng)
            if rng.random() < 0.7:
                doc = {rng.choice(payloads.FORMATS): doc}
            yield json.dumps(doc).encode()  # NaN, Infinity and lone surrogates included
        elif kind == 1:  # byte mutations of valid bodies
            mutated = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 6)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            yield bytes(mutated)
        elif kind == 2:  # truncations
            raw = rng.choice(valid)
            yield raw[: rng.randrange(len(raw))]
        else:  # garbage
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(64)))


@pytest.mark.parametrize(
    "schema", [ABALONE, TYPED, ONE, None], ids=["abalone", "typed", "one", "none"]
)
def test_fuzzed_json_bodies(backend: str, schema: InputSchema | None) -> None:
    for raw in fuzz_bodies(seed=len(schema.columns) if schema else 0, count=1500):
        check_outcome(raw, "application/json", schema)


@pytest.mark.parametrize("schema", [ABALONE, TYPED, None], ids=["abalone", "typed", "none"])
def test_fuzzed_csv_bodies(schema: InputSchema | None) -> None:
    rng = random.Random(7)
    alphabet = ["a", "1", "2.5", ",", "\n", "\r", '"', "", "sex", "length", "d", "\x00", "é"]
    for _ in range(1500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        check_outcome(text.encode("utf-8", "surrogatepass"), "text/csv", schema)
        check_outcome(bytes(rng.randrange(256) for _ in range(20)), "text/csv", schema)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"instances": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
        b'{"inputs": {"length": ' + b"[" * 1_000 + b"]" * 1_000 + b"}}",
        b'{"dataframe_records": [{"sex": ' + b'{"a":' * 3_000 + b"1" + b"}" * 3_000 + b"}]}",
        b'{"inputs": {"length": [' + b"9" * 5_000 + b"]}}",  # past Python's int digit limit
        b'{"inputs": {"length": [1' + b"0" * 400 + b"]}}",  # a float overflow
        b'{"inputs": {"length": [1e999999]}}',
        b'{"inputs": {"length": ["' + b"1" * 100_000 + b'"]}}',
        b'{"inputs": {"sex": "\\ud800"}}',
        b"\xef\xbb\xbf" + body({"inputs": RECORD}),  # a UTF-8 BOM
        body({"inputs": RECORD}).decode().encode("utf-16"),
        b"\x00" * 64,
    ],
)
def test_pathological_bodies(backend: str, raw: bytes) -> None:
    for schema in (ABALONE, None):
        check_outcome(raw, "application/json", schema)


def test_unexpected_errors_become_payload_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise TypeError("a bug")

    monkeypatch.setitem(payloads._JSON_READERS, "inputs", broken)
    error = fails({"inputs": RECORD})
    assert error.status == 400
    assert "internal error: TypeError" in error.message
    assert isinstance(error.__cause__, TypeError)


def test_importing_the_request_side_loads_no_heavy_library() -> None:
    code = (
        "import sys, modelyard.serving.payloads, modelyard.serving.signature\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'pandas', 'numpy'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- parity with MLflow's scoring server ----------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_parsing() -> Any:
    scoring = pytest.importorskip("mlflow.pyfunc.scoring_server")
    from mlflow.types import Schema

    inputs = [{"type": c.type, "name": c.name, "required": c.required} for c in ABALONE.columns]
    return scoring, Schema.from_json(json.dumps(inputs))


def mlflow_columns(parsed: Any) -> dict[str, list[Any]]:
    """MLflow's parsed input (a DataFrame or a dict of arrays) as column -> list of values."""
    import numpy as np

    if hasattr(parsed, "to_dict"):
        return {str(k): list(v) for k, v in parsed.to_dict(orient="list").items()}
    return {k: np.atleast_1d(v).tolist() for k, v in parsed.items()}


PARITY_BODIES = [
    {"dataframe_split": {"columns": NAMES, "data": [ROW, ROW2]}},
    {"dataframe_split": {"columns": NAMES, "data": [["I", 1, 2, 3, 4, 5, 6, float("nan")]]}},
    {"dataframe_records": [RECORD, {**RECORD2, "length": 1}]},
    {"dataframe_records": [{**RECORD, "rings": 9}]},
    {"instances": [RECORD, RECORD2]},
    {"inputs": TWO_ROWS},
    {"inputs": {**RECORD, "length": 2}},
    {"dataframe_split": {"columns": NAMES, "data": [["M", "0.5", 1, 2, 3, 4, 5, 6]]}},
]


@pytest.mark.parametrize("doc", PARITY_BODIES)
def test_same_columns_as_mlflow_json(mlflow_parsing: Any, doc: dict[str, Any]) -> None:
    scoring, mlflow_schema = mlflow_parsing
    theirs = mlflow_columns(
        scoring.infer_and_parse_data(json.loads(json.dumps(doc)), mlflow_schema)
    )
    ours = parse(doc).columns
    for name in NAMES:
        assert same(ours[name], theirs[name]), name
    assert all(type(v) is float for name in NAMES[1:] for v in ours[name])


def test_same_columns_as_mlflow_csv(mlflow_parsing: Any) -> None:
    scoring, mlflow_schema = mlflow_parsing
    text = "\n".join(
        [
            f"{CSV_HEADER},rings",
            "M,0.455,0.365,0.095,0.514,0.2245,0.101,0.15,9",
            "F,1,2,3,4,5,6,NaN,7",
        ]
    )
    theirs = mlflow_columns(scoring.parse_csv_input(io.StringIO(text), mlflow_schema))
    ours = parse(text.encode(), content_type="text/csv").columns
    assert list(ours) == NAMES
    for name in NAMES:
        assert same(ours[name], theirs[name]), name


def test_mlflow_decodes_json_as_we_do(mlflow_parsing: Any) -> None:
    """NaN literals in, and a non-object body out, in both parsers."""
    scoring, _ = mlflow_parsing
    from mlflow.exceptions import MlflowException

    raw = b'{"inputs": {"length": [NaN]}}'
    assert math.isnan(scoring._decode_json_input(raw)["inputs"]["length"][0])
    assert math.isnan(
        parse(raw, InputSchema((ColumnSpec("length", "double"),))).columns["length"][0]
    )
    with pytest.raises(MlflowException):
        scoring._decode_json_input(b"[1]")
    assert fails(b"[1]").status == 400
