"""Request bodies of `POST /invocations`: parsing and validation into column batches.

`parse_request` accepts what MLflow's scoring server accepts and returns a `Batch` (column name ->
list of values) for the predictor; anything wrong is a `PayloadError` with its HTTP status, never
another exception. Formats (content type `application/json`, the default, or `text/csv`):

- `{"dataframe_split": {"columns": [...], "data": [[...], ...], "index": [...]}}` (without
  `columns`, the rows follow the schema's column order);
- `{"dataframe_records": [{column: value, ...}, ...]}`;
- `{"instances": [...]}`: records, rows in the schema's column order, or, for a one-column schema,
  plain values;
- `{"inputs": ...}`: an object of column -> list of values (or one value, for one row), or a list
  as for `instances`;
- MLflow 1.x bodies: with `application/json; format=pandas-split` (or `pandas-records`) the body
  may be the bare frame, without the `dataframe_split` (`dataframe_records`) key;
- `text/csv`: a header row, then one line per row (empty fields are missing values).

A `params` object next to the data is returned as `Batch.params` (the predictor passes it to
models that take parameters and drops it otherwise); other top-level keys are ignored, as MLflow
does. With a schema, values are checked and converted column by column (integers become floats
in double and float columns, numeric strings become numbers, base64 strings become bytes in
binary columns, ISO 8601 strings become `datetime`s in datetime columns); unknown columns are
dropped and the columns come in the schema's order. Without one, JSON values are kept as they
are, and CSV columns become numbers or booleans where every value parses.

Stricter than MLflow, on purpose: null or missing values in required columns, fractional numbers
in integer columns, numbers in string columns and anything but true/false in boolean columns are
422 errors here, where MLflow would let pandas coerce them (to NaN, truncated integers, ...).
Rows as lists need a schema (to name the columns).

orjson parses the JSON when it is installed; the stdlib `json` takes over when it is absent and
for the bodies orjson refuses (NaN and Infinity literals, which MLflow accepts, or non-UTF-8).
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

from modelyard.serving.jsonio import fast_loads
from modelyard.serving.signature import ColumnSpec, InputSchema

__all__ = ["Batch", "PayloadError", "parse_request"]

JSON_TYPE: Final = "application/json"
CSV_TYPE: Final = "text/csv"
FORMATS: Final = ("dataframe_split", "dataframe_records", "instances", "inputs")
# MLflow 1.x named the orient in the content type and sent the bare frame
_LEGACY_FORMATS: Final = {"pandas-split": "dataframe_split", "pandas-records": "dataframe_records"}

_ERROR_CODES: Final = {
    400: "BAD_REQUEST",
    413: "RESOURCE_LIMIT_EXCEEDED",
    415: "BAD_REQUEST",
    422: "INVALID_PARAMETER_VALUE",
}

# orjson parses 3-5x faster when installed (None without it); a module attribute tests can swap
_fast_loads = fast_loads


class PayloadError(Exception):
    """A request body that cannot be served: what is wrong, and the HTTP status to answer."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field  # the column or JSON key at fault

    @property
    def error_code(self) -> str:
        return _ERROR_CODES.get(self.status, "BAD_REQUEST")

    def to_json(self) -> dict[str, Any]:
        """The error document, with the keys of MLflow's scoring server plus `field`."""
        return {"error_code": self.error_code, "message": self.message, "field": self.field}


@dataclass(slots=True)
class Batch:
    """Parsed rows, column by column (in the schema's order when there is a schema)."""

    columns: dict[str, list[Any]]
    rows: int
    params: dict[str, Any] | None = None


def parse_request(
    body: bytes,
    content_type: str | None,
    schema: InputSchema | None,
    *,
    max_rows: int = 10_000,
) -> Batch:
    """Parse and validate one `/invocations` body; raises `PayloadError` for any bad input."""
    try:
        media, legacy = _media_type(content_type)
        if media == CSV_TYPE:
            return _parse_csv(body, schema, max_rows)
        return _parse_json(body, schema, max_rows, legacy)
    except PayloadError:
        raise
    except Exception as exc:  # a bug must not crash the server; tests fuzz so this stays unused
        raise PayloadError(
            400, f"the request could not be parsed (internal error: {type(exc).__name__})"
        ) from exc


# -- content type ---------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _media_type(content_type: str | None) -> tuple[str, str | None]:
    """The media type and the legacy format key (MLflow 1.x `format=` parameter), if any."""
    if not content_type or not content_type.strip():
        return JSON_TYPE, None
    media, *parameters = content_type.split(";")
    media = media.strip().lower()
    if media not in (JSON_TYPE, CSV_TYPE):
        raise PayloadError(
            415,
            f"unsupported content type {content_type[:100]!r}: send {JSON_TYPE} or {CSV_TYPE}",
        )
    legacy = None
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        key, value = key.strip().lower(), value.strip().strip('"').lower()
        if key == "charset" and value not in ("utf-8", "utf8"):
            raise PayloadError(415, f"unsupported charset {value[:40]!r}: send UTF-8")
        if key == "format" and media == JSON_TYPE:
            if value not in _LEGACY_FORMATS:
                raise PayloadError(
                    415,
                    f"unsupported format {value[:40]!r}: use {' or '.join(_LEGACY_FORMATS)}, or "
                    f"none and one of the keys {', '.join(FORMATS)}",
                )
            legacy = _LEGACY_FORMATS[value]
    return media, legacy


# -- JSON -----------------------------------------------------------------------------------------


def _decode_json(body: bytes) -> Any:
    if _fast_loads is not None:
        try:
            return _fast_loads(body)
        except ValueError:
            pass  # NaN/Infinity literals, UTF-16, lone surrogates...: the stdlib decides
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # incl. UnicodeDecodeError, too-long integers
        raise PayloadError(400, f"the body is not valid JSON: {str(exc)[:200]}") from None


def _parse_json(
    body: bytes, schema: InputSchema | None, max_rows: int, legacy: str | None
) -> Batch:
    doc = _decode_json(body)
    if legacy and not (isinstance(doc, dict) and any(key in doc for key in FORMATS)):
        doc = {legacy: doc}
    if not isinstance(doc, dict):
        raise PayloadError(400, f"the body must be a JSON object with one of the keys {_keys()}")
    keys = [key for key in FORMATS if key in doc]
    if len(keys) != 1:
        got = ", ".join(repr(key[:40]) for key in list(doc)[:8]) or "none"
        raise PayloadError(
            400,
            f"the body must have exactly one of the keys {_keys()} (got {got})",
            keys[1] if keys else None,
        )
    params = _params(doc.get("params"))
    key = keys[0]
    columns, rows = _JSON_READERS[key](doc[key], schema, max_rows, key)
    return Batch(_finish(columns, schema, _JSON_CONVERTERS), rows, params)


def _keys() -> str:
    return ", ".join(FORMATS)


def _params(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise PayloadError(400, "'params' must be a JSON object of parameter -> value", "params")


Columns = dict[str, list[Any]]


class _Missing:
    """A key absent from a record (unlike null, which the record gives)."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()


def _count(rows: int, max_rows: int, field: str) -> int:
    if rows == 0:
        raise PayloadError(400, f"'{field}' has no rows: send at least one", field)
    if rows > max_rows:
        raise _too_many(f"{rows} rows", max_rows, field)
    return rows


def _too_many(rows: str, max_rows: int, field: str) -> PayloadError:
    return PayloadError(
        413,
        f"the request has {rows}, more than the {max_rows} this server takes at once: "
        "split it into smaller requests",
        field,
    )


def _read_split(
    value: Any, schema: InputSchema | None, max_rows: int, key: str
) -> tuple[Columns, int]:
    if not isinstance(value, dict) or "data" not in value:
        raise PayloadError(
            400, f"'{key}' must be an object with 'data' (and optional 'columns', 'index')", key
        )
    if extra := [name for name in value if name not in ("columns", "data", "index")]:
        raise PayloadError(400, f"'{key}' has an unknown key {extra[0][:40]!r}", key)
    data = value["data"]
    if not isinstance(data, list):
        raise PayloadError(400, f"'{key}.data' must be a list of rows", f"{key}.data")
    rows = _count(len(data), max_rows, f"{key}.data")
    index = value.get("index")
    if index is not None and (not isinstance(index, list) or len(index) != rows):
        raise PayloadError(
            400, f"'{key}.index' must be a list with one label per row", f"{key}.index"
        )
    if value.get("columns") is None:  # pandas numbers the columns; we take the schema's
        return _positional(data, schema, f"{key}.data"), rows
    names = _column_names(value["columns"], f"{key}.columns")
    values = _transpose(data, len(names), f"{key}.data")
    return dict(zip(names, values, strict=True)), rows


def _column_names(names: Any, field: str) -> list[str]:
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise PayloadError(400, f"'{field}' must be a list of column names (strings)", field)
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise PayloadError(400, f"'{field}' names column {twice[:80]!r} twice", twice)
    if not names:
        raise PayloadError(400, f"'{field}' is empty: name at least one column", field)
    return names


def _transpose(rows: list[Any], width: int | None, field: str) -> list[list[Any]]:
    """The columns of a list of rows (lists of one length); 400 naming the first bad row."""
    first = rows[0]
    if width is None:
        width = len(first) if isinstance(first, list) else -1
    if len(rows) == 1 and type(first) is list and len(first) == width:
        return [[value] for value in first]  # the common one-row request, 2x faster than zip
    # fast check in C; the loop below only runs to name the culprit
    if set(map(type, rows)) != _LIST or set(map(len, rows)) != {width}:
        for i, row in enumerate(rows):
            if not isinstance(row, list):
                raise PayloadError(400, f"row {i} of '{field}' is not a list of values", field)
            if len(row) != width:
                raise PayloadError(
                    400, f"row {i} of '{field}' has {len(row)} values, not {width}", field
                )
    return [list(column) for column in zip(*rows, strict=True)]


def _positional(rows: list[Any], schema: InputSchema | None, field: str) -> Columns:
    """Rows given as lists: their values follow the schema's column order."""
    if schema is None:
        raise PayloadError(
            400,
            f"'{field}' has rows as lists, but the model has no column signature to name their "
            "values: send records (objects of column -> value) or name the columns",
            field,
        )
    values = _transpose(rows, None, field)
    if len(values) != len(schema.columns):
        raise PayloadError(
            422,
            f"the rows of '{field}' have {len(values)} values, but the model takes "
            f"{len(schema.columns)} columns in this order: {', '.join(schema.names)}",
            field,
        )
    return dict(zip(schema.names, values, strict=True))


def _read_records(
    value: Any, schema: InputSchema | None, max_rows: int, key: str
) -> tuple[Columns, int]:
    if not isinstance(value, list):
        raise PayloadError(400, f"'{key}' must be a list of records (objects)", key)
    rows = _count(len(value), max_rows, key)
    return _records(value, schema, key), rows


def _records(records: list[Any], schema: InputSchema | None, field: str) -> Columns:
    if set(map(type, records)) != {dict}:
        bad = next(i for i, record in enumerate(records) if not isinstance(record, dict))
        raise PayloadError(
            400, f"row {bad} of '{field}' is not an object of column -> value", field
        )
    if schema is None:  # columns in order of appearance; pandas fills the gaps with NaN
        names = dict.fromkeys(name for record in records for name in record)
        return {name: [record.get(name) for record in records] for name in names}
    return {name: [record.get(name, _MISSING) for record in records] for name in schema.names}


def _read_instances(
    value: Any, schema: InputSchema | None, max_rows: int, key: str
) -> tuple[Columns, int]:
    if not isinstance(value, list):
        raise PayloadError(400, f"'{key}' must be a list of records, rows or values", key)
    rows = _count(len(value), max_rows, key)
    first = value[0]
    if isinstance(first, dict):
        return _records(value, schema, key), rows
    if isinstance(first, list):
        return _positional(value, schema, key), rows
    if schema is not None and len(schema.columns) == 1:  # plain values of the one column
        return {schema.names[0]: value}, rows
    raise PayloadError(
        400,
        f"'{key}' has plain values, which only a model with one input column takes: send records "
        "(objects of column -> value)",
        key,
    )


def _read_inputs(
    value: Any, schema: InputSchema | None, max_rows: int, key: str
) -> tuple[Columns, int]:
    if isinstance(value, list):
        return _read_instances(value, schema, max_rows, key)
    if isinstance(value, dict):
        return _columnar(value, schema, max_rows, key)
    if schema is not None and len(schema.columns) == 1:  # one value of the one column
        return {schema.names[0]: [value]}, 1
    raise PayloadError(400, f"'{key}' must be an object of column -> values, or a list", key)


def _columnar(
    value: Mapping[str, Any], schema: InputSchema | None, max_rows: int, key: str
) -> tuple[Columns, int]:
    names = list(value) if schema is None else [n for n in schema.names if n in value]
    # a list is a column's values; anything else is its value in the only row
    columns = {name: v if isinstance(v := value[name], list) else [v] for name in names}
    if not columns:
        if schema is not None and (required := [c.name for c in schema.columns if c.required]):
            raise PayloadError(422, f"missing column {required[0]!r}", required[0])
        raise PayloadError(400, f"'{key}' has no columns the model takes", key)
    lengths = {name: len(values) for name, values in columns.items()}
    rows = next(iter(lengths.values()))
    for name, length in lengths.items():
        if length != rows:
            raise PayloadError(
                400,
                f"column {name!r} of '{key}' has {length} values, but {names[0]!r} has {rows}",
                name,
            )
    return columns, _count(rows, max_rows, key)


_Reader = Callable[[Any, InputSchema | None, int, str], tuple[Columns, int]]
_JSON_READERS: Final[dict[str, _Reader]] = {
    "dataframe_split": _read_split,
    "dataframe_records": _read_records,
    "instances": _read_instances,
    "inputs": _read_inputs,
}


# -- CSV ------------------------------------------------------------------------------------------


def _parse_csv(body: bytes, schema: InputSchema | None, max_rows: int) -> Batch:
    try:
        text = body.decode("utf-8-sig")  # a BOM is what spreadsheets write
    except UnicodeDecodeError as exc:
        raise PayloadError(400, f"the CSV body is not UTF-8: {exc}") from None
    header, lines, data = _csv_rows(text, max_rows)
    names = _csv_header(header)
    for i, row in enumerate(data):
        if len(row) != len(names):
            raise PayloadError(
                400,
                f"CSV row {i} (line {lines[i]}) has {len(row)} fields, but the header has "
                f"{len(names)}",
            )
    columns = dict(zip(names, ([*column] for column in zip(*data, strict=True)), strict=True))
    if schema is None:
        return Batch({name: _infer_text(values) for name, values in columns.items()}, len(data))
    return Batch(_finish(columns, schema, _CSV_CONVERTERS), len(data))


def _csv_rows(text: str, max_rows: int) -> tuple[list[str], list[int], list[list[str]]]:
    """The header, the line number of each data row, and the data rows (blank lines skipped)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)  # bad quoting: an error
    header: list[str] | None = None
    lines: list[int] = []
    data: list[list[str]] = []
    try:
        for row in reader:
            if not row:
                continue
            if header is None:
                header = row
                continue
            if len(data) == max_rows:  # stop reading: the body may be huge
                raise _too_many("more rows", max_rows, "csv")
            lines.append(reader.line_num)
            data.append(row)
    except csv.Error as exc:
        raise PayloadError(
            400, f"the CSV body is malformed at line {reader.line_num}: {exc}"
        ) from None
    if header is None:
        raise PayloadError(400, "the CSV body is empty: send a header row and at least one row")
    _count(len(data), max_rows, "csv")
    return header, lines, data


def _csv_header(header: list[str]) -> list[str]:
    # pandas' name for the unnamed index column that DataFrame.to_csv writes
    names = [name or f"Unnamed: {i}" for i, name in enumerate(header)]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise PayloadError(400, f"the CSV header names column {twice[:80]!r} twice", twice)
    return names


_BOOL_TEXT: Final = {"true": True, "false": False, "1": True, "0": False}


def _bool_text(text: str) -> bool:
    try:
        return _BOOL_TEXT[text.strip().lower()]
    except KeyError:
        raise ValueError(text) from None


def _infer_text(values: list[str]) -> list[Any]:
    """Without a schema: a column of integers, floats or booleans where all values parse."""
    for parse in (int, float, _bool_text):
        try:
            return [parse(v) if v else None for v in values]
        except ValueError:
            continue
    return [v if v else None for v in values]


# -- validation against the schema ----------------------------------------------------------------

# the sets of value types that need no conversion (compared with set(map(type, values)))
_LIST: Final = frozenset({list})
_FLOAT: Final = frozenset({float})
_INT: Final = frozenset({int})
_NUMBER: Final = frozenset({float, int})
_INT_RANGES: Final = {"long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1)}

_EXPECTED: Final = {
    "string": "a string",
    "double": "a number (double)",
    "float": "a number (float)",
    "long": "a 64-bit integer (long)",
    "integer": "a 32-bit integer (integer)",
    "boolean": "true or false (boolean)",
    "binary": "a base64 string (binary)",
    "datetime": "an ISO 8601 date-time string (datetime)",
    "any": "a value",
}


class _Converters:
    """How one source (JSON values or CSV text) becomes column values.

    `fast` returns the converted column, or None to let the value-by-value path find and name
    the bad value; `one` converts a single value or raises ValueError/TypeError/OverflowError.
    """

    def __init__(
        self,
        fast: Mapping[str, Callable[[list[Any], str], list[Any] | None]],
        one: Mapping[str, Callable[[Any, str], Any]],
        blank_is_missing: bool,
    ):
        self.fast = fast
        self.one = one
        self.blank_is_missing = blank_is_missing  # an empty CSV field is a missing value


def _finish(columns: Columns, schema: InputSchema | None, converters: _Converters) -> Columns:
    if schema is None:
        return columns
    out: Columns = {}
    fast = converters.fast
    for column in schema.columns:  # unknown columns are dropped, as MLflow does
        values = columns.get(column.name)
        if values is not None:
            check = fast.get(column.type)
            done = check(values, column.type) if check is not None else None
            values = done if done is not None else _check(column, values, converters)
        if values is not None:
            out[column.name] = values
        elif column.required:
            raise PayloadError(422, f"missing column {column.name!r}", column.name)
    return out


def _check(column: ColumnSpec, values: list[Any], converters: _Converters) -> list[Any] | None:
    """The column's values converted value by value; None when no row gives the column."""
    if values[0] is _MISSING and all(v is _MISSING for v in values):
        return None  # absent from every record: a missing column
    one, blank = converters.one[column.type], converters.blank_is_missing
    out: list[Any] = []
    for i, value in enumerate(values):
        if value is None or value is _MISSING or (blank and value == ""):
            if column.required:
                what = "has no value" if value is _MISSING else "is null"
                raise PayloadError(
                    422,
                    f"column {column.name!r} {what} at row {i}, and it is required",
                    column.name,
                )
            out.append(None)
            continue
        try:
            out.append(one(value, column.type))
        except (ValueError, TypeError, OverflowError):
            raise PayloadError(
                422,
                f"column {column.name!r} at row {i}: expected {_EXPECTED[column.type]}, "
                f"got {_show(value)}",
                column.name,
            ) from None
    return out


def _show(value: Any) -> str:
    """A short description of a bad value for messages (never the whole of a big one)."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int) and value.bit_length() > 128:
        return "a very large integer"  # repr() of huge ints is slow or refused
    if isinstance(value, (int, float)):
        return f"number {value!r}"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"string {text!r}"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


# JSON values


def _json_float(value: Any, kind: str) -> float:
    if type(value) is float:
        return value
    if type(value) is int or type(value) is str:  # a bool is not a number here
        return float(value)
    raise TypeError(kind)


def _json_int(value: Any, kind: str) -> int:
    if type(value) is int:
        number = value
    elif type(value) is str or (type(value) is float and value.is_integer()):
        number = int(value)
    else:
        raise TypeError(kind)
    low, high = _INT_RANGES[kind]
    if not low <= number <= high:
        raise ValueError(f"out of range for {kind}")
    return number


def _exact(python_type: type) -> Callable[[Any, str], Any]:
    def convert(value: Any, kind: str) -> Any:
        if type(value) is not python_type:
            raise TypeError(kind)
        return value

    return convert


def _binary(value: Any, kind: str) -> bytes:
    if type(value) is not str:
        raise TypeError(kind)
    return base64.b64decode("".join(value.split()), validate=True)  # MIME base64 has newlines


def _datetime(value: Any, kind: str) -> datetime:
    if type(value) is not str:
        raise TypeError(kind)
    return datetime.fromisoformat(value)


def _same(value: Any, kind: str) -> Any:
    return value


def _fast_json_float(values: list[Any], kind: str) -> list[Any] | None:
    types = set(map(type, values))
    if types == _FLOAT:
        return values  # NaN and infinities included: MLflow accepts them
    if types <= _NUMBER:
        try:
            return [float(v) for v in values]
        except OverflowError:
            return None
    return None


def _fast_json_int(values: list[Any], kind: str) -> list[Any] | None:
    low, high = _INT_RANGES[kind]
    if set(map(type, values)) == _INT and low <= min(values) and max(values) <= high:
        return values
    return None


def _fast_exact(python_type: type) -> Callable[[list[Any], str], list[Any] | None]:
    only = frozenset({python_type})

    def fast(values: list[Any], kind: str) -> list[Any] | None:
        return values if set(map(type, values)) == only else None

    return fast


def _fast_any(values: list[Any], kind: str) -> list[Any] | None:
    types = set(map(type, values))
    return values if type(None) not in types and _Missing not in types else None


_JSON_CONVERTERS: Final = _Converters(
    fast={
        "double": _fast_json_float,
        "float": _fast_json_float,
        "long": _fast_json_int,
        "integer": _fast_json_int,
        "string": _fast_exact(str),
        "boolean": _fast_exact(bool),
        "any": _fast_any,
    },
    one={
        "double": _json_float,
        "float": _json_float,
        "long": _json_int,
        "integer": _json_int,
        "string": _exact(str),
        "boolean": _exact(bool),
        "binary": _binary,
        "datetime": _datetime,
        "any": _same,
    },
    blank_is_missing=False,
)


# CSV text


def _text_float(text: str, kind: str) -> float:
    return float(text)


def _text_int(text: str, kind: str) -> int:
    number = int(text)
    low, high = _INT_RANGES[kind]
    if not low <= number <= high:
        raise ValueError(f"out of range for {kind}")
    return number


def _fast_text(parse: Callable[[str, str], Any]) -> Callable[[list[Any], str], list[Any] | None]:
    def fast(values: list[Any], kind: str) -> list[Any] | None:
        if "" in values:
            return None
        try:
            return [parse(v, kind) for v in values]
        except (ValueError, OverflowError):
            return None

    return fast


def _fast_text_same(values: list[Any], kind: str) -> list[Any] | None:
    return None if "" in values else values


def _text_bool(text: str, kind: str) -> bool:
    return _bool_text(text)


def _text(text: str, kind: str) -> str:
    return text


_CSV_CONVERTERS: Final = _Converters(
    fast={
        "double": _fast_text(_text_float),
        "float": _fast_text(_text_float),
        "long": _fast_text(_text_int),
        "integer": _fast_text(_text_int),
        "string": _fast_text_same,
        "boolean": _fast_text(_text_bool),
        "any": _fast_text_same,
    },
    one={
        "double": _text_float,
        "float": _text_float,
        "long": _text_int,
        "integer": _text_int,
        "string": _text,
        "boolean": _text_bool,
        "binary": _binary,
        "datetime": _datetime,
        "any": _text,
    },
    blank_is_missing=True,
)
