"""Typed parameters: inference, coercion of `-p key=value`, resolution (`pipeline.params`)."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.errors import ConfigError
from modelyard.pipeline.model import Parameter, Pipeline, Step
from modelyard.pipeline.params import check_choice, coerce, infer_type, resolve_params


@pytest.mark.parametrize(
    ("default", "expected"),
    [
        (True, "bool"),
        (3, "int"),
        (0.5, "float"),
        ([1], "json"),
        ({"a": 1}, "json"),
        ("x", "str"),
        (None, "str"),
    ],
)
def test_infer_type(default: Any, expected: str):
    assert infer_type(default) == expected


@pytest.mark.parametrize(
    ("type_", "text", "value"),
    [
        ("int", "42", 42),
        ("int", " -7 ", -7),
        ("int", 3.0, 3),
        ("float", "0.25", 0.25),
        ("float", "1e-3", 0.001),
        ("float", 2, 2.0),
        ("bool", "true", True),
        ("bool", "Yes", True),
        ("bool", "on", True),
        ("bool", "1", True),
        ("bool", "false", False),
        ("bool", "NO", False),
        ("bool", "0", False),
        ("json", '{"a": [1, 2]}', {"a": [1, 2]}),
        ("json", "[1, 2]", [1, 2]),
        ("json", "3", 3),
        ("json", {"already": "parsed"}, {"already": "parsed"}),
        ("str", "123", "123"),
        ("str", 5, "5"),
        ("path", "data/x.csv", "data/x.csv"),
    ],
)
def test_coerce(type_: str, text: Any, value: Any):
    result = coerce(type_, text)
    assert result == value
    assert type(result) is type(value)


@pytest.mark.parametrize(
    ("type_", "text", "message"),
    [
        ("int", "five", "expected an integer, got 'five'"),
        ("int", "2.5", "expected an integer"),
        ("int", 2.5, "expected an integer"),
        ("int", True, "expected an integer"),
        ("float", "fast", "expected a number"),
        ("float", False, "expected a number"),
        ("bool", "maybe", "expected true or false, got 'maybe'"),
        ("bool", 1, "expected true or false"),
        ("json", "{a: 1}", "expected JSON"),
        ("str", True, "expected a string"),
        ("str", [1], "expected a string"),
        ("tensor", "x", "unknown type 'tensor'"),
    ],
)
def test_coerce_refuses(type_: str, text: Any, message: str):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        coerce(type_, text)


def test_check_choice():
    param = Parameter("algo", "str", choices=("xgb", "rf"))
    check_choice(param, "rf")
    with pytest.raises(ValueError, match="'svm' is not one of the allowed values: 'xgb', 'rf'"):
        check_choice(param, "svm")
    check_choice(Parameter("free", "str"), "anything")


def make_pipeline(**parameters: Parameter) -> Pipeline:
    step = Step(name="s", kind="run", command="echo")
    return Pipeline(name="train", steps={"s": step}, parameters=parameters)


PIPELINE = make_pipeline(
    depth=Parameter("depth", "int", default=3),
    rate=Parameter("rate", "float", default=0.1),
    early=Parameter("early", "bool", default=False),
    grid=Parameter("grid", "json", default={"a": 1}),
    name=Parameter("name", "str", default="m"),
    algo=Parameter("algo", "str", default="xgb", choices=("xgb", "rf")),
)


def test_resolve_defaults():
    assert resolve_params(PIPELINE, {}) == {
        "depth": 3,
        "rate": 0.1,
        "early": False,
        "grid": {"a": 1},
        "name": "m",
        "algo": "xgb",
    }


def test_resolve_overrides_from_text():
    overrides = {
        "depth": "6",
        "rate": "0.5",
        "early": "yes",
        "grid": '{"b": [2]}',
        "name": "007",
        "algo": "rf",
    }
    resolved = resolve_params(PIPELINE, overrides)
    assert resolved == {
        "depth": 6,
        "rate": 0.5,
        "early": True,
        "grid": {"b": [2]},
        "name": "007",
        "algo": "rf",
    }
    assert type(resolved["depth"]) is int
    assert type(resolved["name"]) is str


def test_defaults_are_converted_to_their_declared_type():
    pipeline = make_pipeline(
        rate=Parameter("rate", "float", default=1),
        grid=Parameter("grid", "json", default='{"a": 1}'),
        tag=Parameter("tag", "str", default=5),
        flag=Parameter("flag", "bool", default="on"),
        unset=Parameter("unset", "int"),
    )
    resolved = resolve_params(pipeline, {})
    assert resolved == {"rate": 1.0, "grid": {"a": 1}, "tag": "5", "flag": True, "unset": None}
    assert type(resolved["rate"]) is float


def test_unknown_parameter_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        resolve_params(PIPELINE, {"dpeth": "5"})
    error = info.value
    assert error.message == "pipeline 'train' has no parameter 'dpeth'"
    assert error.hint == "the parameters are: algo, depth, early, grid, name, rate"
    assert error.where == "-p dpeth"


def test_unknown_parameter_when_none_are_declared():
    with pytest.raises(ConfigError) as info:
        resolve_params(make_pipeline(), {"x": "1"})
    assert info.value.hint == "the parameters are: (none)"


@pytest.mark.parametrize(
    ("name", "text", "message", "example"),
    [
        ("depth", "deep", "parameter 'depth' (int): expected an integer", "-p depth=3"),
        ("rate", "fast", "parameter 'rate' (float): expected a number", "-p rate=0.1"),
        ("early", "maybe", "parameter 'early' (bool): expected true or false", "-p early=False"),
        ("grid", "{", "parameter 'grid' (json): expected JSON", '-p grid={"a": 1}'),
        ("algo", "svm", "'svm' is not one of the allowed values", "-p algo=xgb"),
    ],
)
def test_bad_override(name: str, text: str, message: str, example: str):
    with pytest.raises(ConfigError) as info:
        resolve_params(PIPELINE, {name: text})
    error = info.value
    assert message in error.message
    assert error.where == f"-p {name}={text}"
    assert error.hint is not None
    assert example in error.hint


def test_int_choices_are_checked_after_conversion():
    pipeline = make_pipeline(k=Parameter("k", "int", default=3, choices=(3, 5)))
    assert resolve_params(pipeline, {"k": "5"}) == {"k": 5}
    with pytest.raises(ConfigError, match="4 is not one of the allowed values: 3, 5"):
        resolve_params(pipeline, {"k": "4"})


def test_required_parameter():
    pipeline = make_pipeline(data=Parameter("data", "path", required=True))
    with pytest.raises(ConfigError) as info:
        resolve_params(pipeline, {})
    assert info.value.message == "parameter 'data' is required"
    assert info.value.hint == "pass it with -p data=VALUE"
    assert resolve_params(pipeline, {"data": "x.csv"}) == {"data": "x.csv"}


def test_typed_overrides_are_kept_when_not_from_text():
    pipeline = make_pipeline(depth=Parameter("depth", "int", default=3))
    assert resolve_params(pipeline, {"depth": 7}, from_text=False) == {"depth": 7}
    assert resolve_params(pipeline, {"depth": None}, from_text=False) == {"depth": None}
