"""Behaviour of the safe expression language (`modelyard.pipeline.expressions`)."""

from __future__ import annotations

import copy
import pickle
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import pytest

from modelyard.errors import ArtifactError, ConfigError, ExpressionError
from modelyard.pipeline.expressions import (
    BUILTIN_FUNCTIONS,
    MAX_DEPTH,
    MAX_EXPONENT,
    MAX_ITEMS,
    MAX_LENGTH,
    Expression,
    evaluate,
)

JSON_GET = (
    'json(steps.evaluate.outputs.metrics, "evaluation.json").regression_metrics.mse.value'
    " <= params.mse_threshold"
)

METRICS = {"regression_metrics": {"mse": {"value": 0.25, "standard_deviation": 0.01}}}


def fake_json(path: str, name: str) -> Any:
    assert path == "/artifacts/metrics"
    assert name == "evaluation.json"
    return METRICS


CONTEXT: dict[str, Any] = {
    "params": {
        "mse_threshold": 0.5,
        "max_depth": 6,
        "name": "churn",
        "layers": [64, 32, 16],
        "flags": {"fast": True},
        "empty": {},
        "zero": 0,
        "none": None,
    },
    "steps": {
        "evaluate": {"outputs": {"metrics": "/artifacts/metrics"}, "values": {"auc": 0.91}},
        "train": {"outputs": {"model": "/artifacts/model"}},
    },
    "run": {"id": "r-1", "pipeline": "training"},
}


def ev(text: str, context: Mapping[str, Any] | None = None, **functions: Any) -> Any:
    return Expression.parse(text).evaluate(CONTEXT if context is None else context, functions)


def parse_error(text: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        Expression.parse(text)
    return info.value


def eval_error(
    text: str, context: Mapping[str, Any] | None = None, **functions: Any
) -> ExpressionError:
    expression = Expression.parse(text)  # must parse: the failure is at evaluation
    with pytest.raises(ExpressionError) as info:
        expression.evaluate(CONTEXT if context is None else context, functions)
    return info.value


# ----------------------------------------------------------------------------------------------
# The JsonGet-style condition, end to end


def test_json_get_condition_evaluates_with_a_caller_function() -> None:
    assert ev(JSON_GET, json=fake_json) is True
    strict = {**CONTEXT, "params": {**CONTEXT["params"], "mse_threshold": 0.1}}
    assert ev(JSON_GET, strict, json=fake_json) is False


def test_json_get_condition_references() -> None:
    assert Expression.parse(JSON_GET).references() == [
        ("steps", "evaluate", "outputs", "metrics"),
        ("params", "mse_threshold"),
    ]
    assert Expression.parse(JSON_GET).function_names() == ["json"]


def test_json_get_misspelled_key_names_the_part_lists_keys_and_suggests() -> None:
    text = JSON_GET.replace(".value", ".valu")
    error = eval_error(text, json=fake_json)
    assert "'valu'" in error.message
    assert "regression_metrics.mse`" in error.message
    assert error.hint is not None
    assert "value" in error.hint and "standard_deviation" in error.hint
    assert "did you mean 'value'" in error.hint
    assert error.expression == text
    assert error.column == text.index(".valu ") + 2
    assert f"column {error.column}" in str(error)
    assert "fix:" in str(error)


def test_expression_error_is_a_config_error() -> None:
    assert isinstance(parse_error("a +"), ConfigError)


# ----------------------------------------------------------------------------------------------
# Allowed constructs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("-1.5", -1.5),
        ("'text'", "text"),
        ('"double"', "double"),
        ("True", True),
        ("False", False),
        ("None", None),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[1, 'a', None]", [1, "a", None]),
        ("(1, 2)", (1, 2)),
        ("()", ()),
        ("{'a': 1, 'b': [2]}", {"a": 1, "b": [2]}),
        ("{1, 2, 2}", {1, 2}),
        ("1_000", 1000),
    ],
)
def test_literals(text: str, expected: Any) -> None:
    assert ev(text, {}) == expected


def test_names_attributes_and_subscripts_read_the_context() -> None:
    assert ev("params.max_depth") == 6
    assert ev("params['max_depth']") == 6
    assert ev("steps.train.outputs.model") == "/artifacts/model"
    assert ev("steps['train']['outputs'].model") == "/artifacts/model"
    assert ev("params.layers[0]") == 64
    assert ev("params.layers[-1]") == 16
    assert ev("params.name[0]") == "c"
    assert ev("params.layers[1:]") == [32, 16]
    assert ev("params.layers[::-1]") == [16, 32, 64]
    assert ev("params.name[:3]") == "chu"
    assert ev("{1: 'one'}[1]") == "one"
    assert ev("params") is CONTEXT["params"]


def test_a_mapping_that_is_not_a_dict_works_as_context_and_value() -> None:
    context = MappingProxyType({"params": MappingProxyType({"x": 3})})
    assert ev("params.x * 2", context) == 6


def test_keys_that_look_like_methods_are_keys_on_mappings() -> None:
    assert ev("data.keys + data.items", {"data": {"keys": 1, "items": 2}}) == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2", 3),
        ("'a' + 'b'", "ab"),
        ("[1] + [2]", [1, 2]),
        ("7 - 10", -3),
        ("3 * 4", 12),
        ("'ab' * 3", "ababab"),
        ("3 * [0]", [0, 0, 0]),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("2 ** 10", 1024),
        ("2 ** -1", 0.5),
        ("4 ** 0.5", 2.0),
        ("-params.max_depth", -6),
        ("+params.max_depth", 6),
        ("not params.zero", True),
        ("not params.layers", False),
        ("(1 + 2) * 3", 9),
        ("1 + 2 * 3", 7),
        ("2 ** 3 ** 2", 512),
    ],
)
def test_arithmetic(text: str, expected: Any) -> None:
    assert ev(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("params.max_depth == 6", True),
        ("params.max_depth != 6", False),
        ("params.max_depth < 7", True),
        ("params.max_depth <= 6", True),
        ("params.max_depth > 6", False),
        ("params.max_depth >= 6", True),
        ("0 < params.max_depth <= 6", True),
        ("0 < params.max_depth < 6", False),
        ("1 < 2 < 3 < 4", True),
        ("1 < 3 < 2", False),
        ("3 > 2 == 2", True),
        ("64 in params.layers", True),
        ("65 not in params.layers", True),
        ("'fast' in params.flags", True),
        ("'slow' in params.flags", False),
        ("'hur' in params.name", True),
        ("params.none is None", True),
        ("params.zero is not None", True),
        ("params.none == null", True),
    ],
)
def test_comparisons(text: str, expected: bool) -> None:
    assert ev(text) is expected


def test_chained_comparison_evaluates_each_operand_once() -> None:
    calls: list[int] = []

    def count(value: int) -> int:
        calls.append(value)
        return value

    assert ev("0 < count(5) <= 6", count=count) is True
    assert calls == [5]


def test_chained_comparison_stops_at_the_first_false_link() -> None:
    assert ev("2 < 1 < undefined_name") is False
    assert ev("2 < 1 < undefined_name") is False


def test_and_or_not_return_python_values() -> None:
    assert ev("params.zero or 'default'") == "default"
    assert ev("params.max_depth or 'default'") == 6
    assert ev("params.max_depth and params.name") == "churn"
    assert ev("params.zero and params.name") == 0
    assert ev("true and false or true") is True
    assert ev("not (params.max_depth > 3 and params.flags.fast)") is False


def test_short_circuit_does_not_evaluate_the_rest() -> None:
    assert ev("false and undefined_thing") is False
    assert ev("true or undefined_thing") is True
    assert ev("params.zero and params.missing_key") == 0
    assert ev("params.flags.fast or 1 / params.zero") is True
    assert ev("params.none is not None and params.none.value > 1") is False


def test_short_circuit_still_fails_on_the_evaluated_part() -> None:
    error = eval_error("undefined_thing and false")
    assert "unknown name 'undefined_thing'" in error.message


def test_unevaluated_operands_still_count_as_references() -> None:
    # The linter sees them even though evaluation may never reach them.
    assert Expression.parse("false and undefined_thing").references() == [("undefined_thing",)]


def test_conditional_expression_evaluates_only_the_chosen_branch() -> None:
    assert ev("'big' if params.max_depth > 5 else 'small'") == "big"
    assert ev("'big' if params.max_depth > 10 else 'small'") == "small"
    assert ev("params.max_depth if true else undefined_name") == 6
    assert ev("undefined_name if false else 1 / 2") == 0.5


# ----------------------------------------------------------------------------------------------
# Functions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("min(3, 1, 2)", 1),
        ("min(params.layers)", 16),
        ("min(params.empty, default=0)", 0),
        ("max(3, 1, 2)", 3),
        ("max(params.layers)", 64),
        ("abs(-2.5)", 2.5),
        ("round(2.567, 2)", 2.57),
        ("round(2.567, ndigits=1)", 2.6),
        ("round(2.5)", 2),
        ("len(params.layers)", 3),
        ("len(params.name)", 5),
        ("len(params.flags)", 1),
        ("float('1.5')", 1.5),
        ("float(params.max_depth)", 6.0),
        ("int('42')", 42),
        ("int(3.9)", 3),
        ("str(params.max_depth) + 'x'", "6x"),
        ("str(params.layers)", "[64, 32, 16]"),
        ("str()", ""),
        ("bool(params.zero)", False),
        ("bool(params.layers)", True),
    ],
)
def test_builtin_functions(text: str, expected: Any) -> None:
    assert ev(text) == expected


def test_builtin_functions_listing_is_exact() -> None:
    assert sorted(BUILTIN_FUNCTIONS) == [
        "abs",
        "bool",
        "float",
        "int",
        "len",
        "max",
        "min",
        "round",
        "str",
    ]


def test_caller_functions_take_positional_and_keyword_arguments() -> None:
    def scale(value: float, *, factor: float = 1.0) -> float:
        return value * factor

    assert ev("scale(params.max_depth, factor=0.5)", scale=scale) == 3.0
    assert ev("scale(2)", scale=scale) == 2.0


def test_caller_functions_replace_builtins_of_the_same_name() -> None:
    assert ev("len(params.layers)", len=lambda value: -1) == -1


def test_unknown_function_lists_available_functions() -> None:
    error = eval_error("jsn(steps.evaluate.outputs.metrics)", json=fake_json)
    assert "unknown function 'jsn'" in error.message
    assert error.hint is not None
    assert "json" in error.hint and "len" in error.hint
    assert "did you mean 'json'" in error.hint
    assert error.column == 1


def test_context_values_are_never_callable() -> None:
    error = eval_error("hook()", {"hook": lambda: "called"})
    assert "unknown function 'hook'" in error.message


def test_failing_caller_function_is_wrapped_with_its_name() -> None:
    def broken(_: Any) -> Any:
        raise ValueError("cannot read metrics")

    error = eval_error("broken(1) > 0", broken=broken)
    assert "broken()" in error.message
    assert "cannot read metrics" in error.message
    assert isinstance(error.__cause__, ValueError)


def test_modelyard_errors_from_caller_functions_pass_unchanged() -> None:
    def missing(_: Any) -> Any:
        raise ArtifactError("evaluation.json is not in the artifact", hint="log it")

    with pytest.raises(ArtifactError, match=r"evaluation\.json"):
        ev("missing(1)", missing=missing)


def test_builtin_type_errors_are_reported() -> None:
    error = eval_error("len(params.max_depth)")
    assert "len()" in error.message
    assert "TypeError" in error.message
    error = eval_error("int('x1')")
    assert "int()" in error.message


def test_min_and_max_refuse_key_functions() -> None:
    # A callable reached through the context must not be called by a built-in either.
    error = eval_error("max(xs, key=f)", {"xs": [1, -3], "f": abs})
    assert "max() failed" in error.message
    assert ev("max(xs, default=0)", {"xs": []}) == 0


@pytest.mark.parametrize("digits", ["10**9", "-1000000000", "101", "1.5"])
def test_round_refuses_unbounded_digits(digits: str) -> None:
    start = time.perf_counter()
    error = eval_error(f"round(params.max_depth, {digits})")
    assert "round()" in error.message
    assert time.perf_counter() - start < 1


def test_str_refuses_huge_nested_values() -> None:
    nested = [[0] * 1000] * 1000  # a million items behind a thousand shared references
    error = eval_error("str(value)", {"value": nested})
    assert "too large" in error.message
    assert ev("str(value)", {"value": "x" * 1_000_000}) == "x" * 1_000_000


# ----------------------------------------------------------------------------------------------
# Objects exposing attributes


class Run:
    __expression_attributes__ = frozenset({"id", "status", "metrics", "broken", "missing"})

    def __init__(self) -> None:
        self.id = "r-42"
        self.status = "done"
        self.metrics = {"auc": 0.9}
        self.secret = "s3cr3t"

    @property
    def broken(self) -> str:
        raise RuntimeError("database gone")

    def delete(self) -> None:  # pragma: no cover - must never be reachable
        raise AssertionError("called")


class Plain:
    def __init__(self) -> None:
        self.value = 1


def test_object_attributes_listed_in_expression_attributes_are_readable() -> None:
    context = {"run": Run()}
    assert ev("run.id", context) == "r-42"
    assert ev("run.metrics.auc > 0.5", context) is True
    assert Expression.parse("run.metrics.auc").references() == [("run", "metrics", "auc")]


def test_object_attributes_not_listed_are_refused_with_the_list() -> None:
    error = eval_error("run.secret", {"run": Run()})
    assert "has no attribute 'secret'" in error.message
    assert error.hint is not None
    assert "id" in error.hint and "status" in error.hint
    assert "secret" not in error.hint
    assert error.column == len("run.") + 1


def test_methods_are_not_attributes_unless_listed() -> None:
    error = eval_error("run.delete", {"run": Run()})
    assert "delete" in error.message


def test_listed_attribute_that_is_not_set_or_raises_is_reported() -> None:
    error = eval_error("run.missing", {"run": Run()})
    assert "missing" in error.message
    error = eval_error("run.broken", {"run": Run()})
    assert "database gone" in error.message


def test_objects_without_expression_attributes_expose_nothing() -> None:
    error = eval_error("thing.value", {"thing": Plain()})
    assert "cannot read 'value'" in error.message
    assert "Plain" in error.message


def test_expression_attributes_on_an_instance_grant_nothing() -> None:
    thing = Plain()
    thing.__expression_attributes__ = frozenset({"value"})  # type: ignore[attr-defined]
    with pytest.raises(ExpressionError):
        ev("thing.value", {"thing": thing})


def test_attributes_of_builtin_values_are_refused() -> None:
    error = eval_error("params.name.upper")
    assert "cannot read 'upper'" in error.message
    assert "str" in error.message


# ----------------------------------------------------------------------------------------------
# Refused at parse time


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("lambda: 1", "lambda"),
        ("(lambda x: x)(1)", "only functions called by name"),
        ("[x for x in params.layers]", "list comprehensions"),
        ("{x for x in y}", "set comprehensions"),
        ("{x: 1 for x in y}", "dict comprehensions"),
        ("sum(x for x in y)", "generator expressions"),
        ("(x := 1)", "assignment expressions"),
        ("f'{params.name}'", "f-strings"),
        ("f'{params.max_depth:>10}'", "f-strings"),
        ("len(*params.layers)", "unpacking with *"),
        ("[*params.layers]", "unpacking with *"),
        ("f(**params)", "unpacking with **"),
        ("{**params}", "unpacking with **"),
        ("f(a=1, a=2)", "given twice"),
        ("x.__class__", "'__class__'"),
        ("().__class__.__bases__", "'__bases__'"),
        ("''.__class__.__mro__[1].__subclasses__", "'__subclasses__'"),
        ("params._private", "'_private'"),
        ("_hidden", "'_hidden'"),
        ("__builtins__", "'__builtins__'"),
        ("__import__('os')", "'__import__'"),
        ("x.upper()", "method calls"),
        ("'a,b'.split(',')", "method calls"),
        ("params.layers.pop()", "method calls"),
        ("f()()", "only functions called by name"),
        ("eval('1')", "calling 'eval'"),
        ("exec('1')", "calling 'exec'"),
        ("getattr(x, 'y')", "calling 'getattr'"),
        ("open('/etc/passwd')", "calling 'open'"),
        ("globals()", "calling 'globals'"),
        ("type(x)", "calling 'type'"),
        ("1 << 10", "'<<'"),
        ("1 >> 1", "'>>'"),
        ("a | b", "'|'"),
        ("a & b", "'&'"),
        ("a ^ b", "'^'"),
        ("a @ b", "'@'"),
        ("~x", "'~'"),
        ("b'bytes'", "bytes"),
        ("1j", "complex"),
        ("...", "`...`"),
        ("await x", "await"),
        ("(yield)", "yield"),
        ("'%s' % params.name", "'%' does not format"),
        ("params.layers[0:1, 2]", "multi-dimensional slices"),
    ],
)
def test_forbidden_constructs_are_refused_when_parsing(text: str, words: str) -> None:
    error = parse_error(text)
    assert words in error.message
    assert error.column is not None
    assert error.hint


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("2 ** 1000", "exponent"),
        ("params.max_depth ** 1000", "exponent"),
        ("2 ** -101", "exponent"),
        ("2.0 ** (10 ** 2 + 1)", "exponent"),
        ("x ** 10**400", "exponent"),
        ("((10 ** 100) ** 100) ** 10", "too large"),
        ("'a' * 10**9", "more than"),
        ("10**9 * 'a'", "more than"),
        ("[0] * 10**9", "more than"),
        ("[[0] * 100] * 101", "more than"),
        ("('a',) * 10001", "more than"),
        ("1 / 0", "division by zero"),
        ("(1, 2)[5]", "out of range"),
        ("{'a': 1}.b", "'b' not found"),
        ("'abc'.upper", "cannot read 'upper'"),
    ],
)
def test_constant_parts_are_checked_when_parsing(text: str, words: str) -> None:
    start = time.perf_counter()
    error = parse_error(text)
    assert words in error.message
    assert time.perf_counter() - start < 1


def test_refusal_columns_point_at_the_construct() -> None:
    assert parse_error("x.__class__").column == 3
    assert parse_error("a + (lambda: 1)").column == 6
    assert parse_error("1 << 10").column == 3
    assert parse_error("f(1, **kw)").column == 6


def test_parse_errors_never_run_caller_code() -> None:
    # Nothing in the context is touched while parsing.
    expression = Expression.parse("run.id == 'x'")
    assert expression.references() == [("run", "id")]


# ----------------------------------------------------------------------------------------------
# Bounds at evaluation time (values from the context)


def test_repetition_of_context_values_is_bounded() -> None:
    error = eval_error("text * count", {"text": "ab", "count": 10**9})
    assert "more than" in error.message
    assert ev("text * count", {"text": "ab", "count": 3}) == "ababab"
    assert ev("text * count", {"text": "ab", "count": -1}) == ""


def test_exponent_from_the_context_is_bounded() -> None:
    error = eval_error("2 ** n", {"n": MAX_EXPONENT + 1})
    assert "exponent" in error.message
    assert ev("2 ** n", {"n": MAX_EXPONENT}) == 2**MAX_EXPONENT


def test_huge_integer_products_are_refused() -> None:
    big = 10**20000
    error = eval_error("a * a * a", {"a": big})
    assert "too large" in error.message


def test_string_formatting_with_percent_is_refused_at_evaluation() -> None:
    error = eval_error("fmt % (width, 1)", {"fmt": "%*d", "width": 10**8})
    assert "'%' does not format" in error.message


def test_complex_results_are_refused() -> None:
    error = eval_error("x ** 0.5", {"x": -8})
    assert "complex" in error.message


def test_float_overflow_is_reported() -> None:
    error = eval_error("x ** 100", {"x": 1e300})
    assert "too large" in error.message


# ----------------------------------------------------------------------------------------------
# Evaluation errors


def test_unknown_name_lists_available_names() -> None:
    error = eval_error("parms.max_depth > 3")
    assert "unknown name 'parms'" in error.message
    assert error.hint is not None
    assert "params" in error.hint and "steps" in error.hint and "run" in error.hint
    assert "did you mean 'params'" in error.hint
    assert error.column == 1


def test_unknown_name_with_an_empty_context() -> None:
    error = eval_error("x", {})
    assert error.hint == "no names are available here"


def test_missing_key_lists_at_most_ten_keys() -> None:
    many = {f"key{i:02}": i for i in range(25)}
    error = eval_error("m.nope", {"m": many})
    assert error.hint is not None
    assert "key00" in error.hint and "key09" in error.hint
    assert "key10" not in error.hint
    assert "15+ more" in error.hint


def test_missing_key_in_an_empty_mapping() -> None:
    error = eval_error("params.empty.x")
    assert "'x' not found in `params.empty`" in error.message
    assert error.hint is not None and "empty" in error.hint


def test_missing_subscript_key_points_at_the_key() -> None:
    text = "steps['evaluat'].outputs"
    error = eval_error(text)
    assert "'evaluat' not found in `steps`" in error.message
    assert error.hint is not None and "did you mean 'evaluate'" in error.hint
    assert error.column == text.index("'evaluat'") + 1


def test_index_errors() -> None:
    error = eval_error("params.layers[3]")
    assert "index 3 is out of range for `params.layers` (3 items)" in error.message
    assert error.hint is not None and "0..2" in error.hint
    error = eval_error("params.layers['a']")
    assert "whole number" in error.message
    error = eval_error("params.max_depth[0]")
    assert "cannot index `params.max_depth`" in error.message
    error = eval_error("params.flags[1:2]")
    assert "cannot slice" in error.message
    error = eval_error("params.layers[::0]")
    assert "invalid slice" in error.message


def test_type_errors_name_the_operation() -> None:
    error = eval_error("params.name < 1")
    assert "cannot compare str with int using '<'" in error.message
    assert error.column == len("params.name ") + 1
    error = eval_error("params.name + 1")
    assert "cannot apply '+' to str and int" in error.message
    assert "`params.name + 1`" in error.message
    error = eval_error("1 in params.max_depth")
    assert "cannot test `1 in params.max_depth`" in error.message
    error = eval_error("-params.name")
    assert "cannot apply '-' to str" in error.message


def test_division_by_zero_names_the_divisor() -> None:
    text = "params.max_depth / params.zero"
    error = eval_error(text)
    assert "division by zero" in error.message
    assert "`params.zero` is 0" in error.message
    assert error.column == text.index("/") + 1
    assert error.hint is not None and "!= 0" in error.hint
    for text in ("params.max_depth // params.zero", "params.max_depth % params.zero"):
        assert "division by zero" in eval_error(text).message


def test_unhashable_values_in_sets_and_dict_keys() -> None:
    assert "set" in eval_error("{params.layers}").message
    assert "key" in eval_error("{params.layers: 1}").message
    assert "key" in eval_error("params.flags[params.layers]").message


def test_truth_value_errors_are_reported() -> None:
    class Ambiguous:
        def __bool__(self) -> bool:
            raise ValueError("truth value is ambiguous")

    error = eval_error("x and 1", {"x": Ambiguous()})
    assert "true or false" in error.message


# ----------------------------------------------------------------------------------------------
# Syntax errors


@pytest.mark.parametrize(
    ("text", "column", "hint_words"),
    [
        ("a +", 4, "Python syntax"),
        ("params.x && params.y", 11, "and, or, not"),
        ("params.x || params.y", 11, "and, or, not"),
        ("!params.x", 1, "and, or, not"),
        ("params.x = 1", 10, "=="),
        ("(params.x", 1, "brackets"),
        ("params.x)", 9, "brackets"),
        ("'unterminated", 1, "quote"),
        ("${{ params.x }}", 1, "between ${{ and }}"),
        ("import os", 1, "statements"),
        ("x := 1", 3, "Python syntax"),
    ],
)
def test_syntax_errors_give_column_and_hint(text: str, column: int, hint_words: str) -> None:
    error = parse_error(text)
    assert error.message.startswith("invalid expression")
    assert error.column == column
    assert error.hint is not None and hint_words in error.hint
    assert error.expression == text


def test_empty_expression() -> None:
    for text in ("", "   ", "\n"):
        error = parse_error(text)
        assert "empty" in error.message
        assert error.column == 1


def test_non_text_expression() -> None:
    with pytest.raises(ExpressionError, match="must be text"):
        Expression.parse(5)  # type: ignore[arg-type]


def test_too_long_expression() -> None:
    error = parse_error("1" + " + 1" * MAX_LENGTH)
    assert "too long" in error.message


def test_too_deep_expression() -> None:
    error = parse_error(" + ".join(["1"] * (MAX_DEPTH + 5)))
    assert "nested too deeply" in error.message
    error = parse_error("-" * 3000 + "1")
    assert error.column == 1
    assert ev("[" * 50 + "]" * 50, {}) is not None


def test_too_long_integer_literal() -> None:
    default = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        error = parse_error("9" * 700)
    finally:
        sys.set_int_max_str_digits(default)
    assert "number is too long" in error.message
    assert error.hint is not None and "shorter number" in error.hint


def test_null_bytes() -> None:
    error = parse_error("a\x00b")
    assert error.message.startswith("invalid expression") or "cannot be parsed" in error.message


def test_parsing_emits_no_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Expression("x is 1")
        Expression("'\\d' in x")


# ----------------------------------------------------------------------------------------------
# Positions


def test_columns_count_characters_not_bytes() -> None:
    text = "'héllo wörld' + params.nope"
    error = eval_error(text)
    assert error.column == text.index("nope") + 1


def test_columns_count_leading_whitespace() -> None:
    text = "   params.nope"
    error = eval_error(text)
    assert error.column == text.index("nope") + 1
    assert ev("  params.max_depth  ") == 6


def test_multi_line_expressions_evaluate_and_locate_errors() -> None:
    text = "params.max_depth > 1 and\n  params.flags.fast and\r\n  params.flags.slow"
    error = eval_error(text)
    assert error.column == text.index("slow") + 1
    assert ev("params.max_depth > 1 and\n  params.flags.fast") is True
    assert Expression.parse("a and\n b").references() == [("a",), ("b",)]


def test_multi_line_syntax_errors_point_at_the_problem() -> None:
    text = "a and\n (b +"
    error = parse_error(text)
    assert error.column == text.index("(") + 1


# ----------------------------------------------------------------------------------------------
# References


@pytest.mark.parametrize(
    ("text", "references"),
    [
        ("params.max_depth", [("params", "max_depth")]),
        ("steps.a.outputs.b", [("steps", "a", "outputs", "b")]),
        ("steps['a'].outputs[\"b\"]", [("steps", "a", "outputs", "b")]),
        ("params.layers[0]", [("params", "layers")]),
        ("params.layers[-1].x", [("params", "layers")]),
        ("params.table[params.key].x", [("params", "table"), ("params", "key")]),
        ("params.a + params.b * params.a", [("params", "a"), ("params", "b")]),
        ("x", [("x",)]),
        ("len(steps)", [("steps",)]),
        ("f(a, key=b.c)", [("a",), ("b", "c")]),
        ("f(a).b.c", [("a",)]),
        ("a if b else c", [("a",), ("b",), ("c",)]),
        ("c if b else a", [("c",), ("b",), ("a",)]),
        ("[a, {'k': b}]", [("a",), ("b",)]),
        ("true and false or null", []),
        ("1 + 2", []),
        ("{'a': 1}.a", []),
        ("len('text')", []),
        ("0 < params.x <= params.y", [("params", "x"), ("params", "y")]),
    ],
)
def test_references(text: str, references: list[tuple[str, ...]]) -> None:
    assert Expression.parse(text).references() == references


def test_references_returns_a_fresh_list() -> None:
    expression = Expression.parse("params.x")
    expression.references().clear()
    assert expression.references() == [("params", "x")]


def test_simple_references() -> None:
    assert Expression.parse("steps.a.outputs.b").is_simple_reference()
    assert Expression.parse("params.x").is_simple_reference()
    assert Expression.parse("params['x']").simple_reference() == ("params", "x")
    assert Expression.parse("x").simple_reference() == ("x",)
    for text in ("params.x + 1", "params.layers[0]", "len(x)", "true", "'text'", "f(x).y"):
        expression = Expression.parse(text)
        assert not expression.is_simple_reference(), text
        assert expression.simple_reference() is None


def test_first_reference() -> None:
    assert Expression.parse("1 + params.x + steps.a.outputs.b").first_reference() == (
        "params",
        "x",
    )
    assert Expression.parse("1 + 2").first_reference() is None


def test_function_names() -> None:
    expression = Expression.parse("max(json(a), len(b)) > json(c)")
    assert expression.function_names() == ["max", "json", "len"]


# ----------------------------------------------------------------------------------------------
# The Expression object


def test_parse_is_cached_and_expressions_are_immutable() -> None:
    first = Expression.parse("params.max_depth + 1")
    assert Expression.parse("params.max_depth + 1") is first
    with pytest.raises(AttributeError):
        first.text = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        first._text = "other"


def test_equality_hash_repr_and_str() -> None:
    a = Expression("params.x")
    b = Expression.parse("params.x")
    assert a == b and hash(a) == hash(b)
    assert a != Expression("params.y")
    assert repr(a) == "Expression('params.x')"
    assert str(a) == "params.x"
    assert a.text == "params.x"


def test_expressions_pickle_and_copy_by_text() -> None:
    expression = Expression.parse("params.max_depth + 1")
    assert pickle.loads(pickle.dumps(expression)) == expression
    assert copy.deepcopy(expression).evaluate(CONTEXT) == 7
    assert copy.copy(expression).references() == [("params", "max_depth")]


def test_same_expression_evaluates_against_different_contexts() -> None:
    expression = Expression.parse("params.x * 2")
    assert [expression.evaluate({"params": {"x": n}}) for n in range(3)] == [0, 2, 4]


def test_evaluate_shortcut() -> None:
    assert evaluate("params.x + 1", {"params": {"x": 1}}) == 2
    functions: dict[str, Callable[..., Any]] = {"double": lambda v: v * 2}
    assert evaluate("double(params.x)", {"params": {"x": 2}}, functions) == 4


def test_folded_constants_are_not_shared_between_evaluations() -> None:
    expression = Expression.parse("[1, 2]")
    first = expression.evaluate({})
    first.append(3)
    assert expression.evaluate({}) == [1, 2]


def test_repetition_limit_is_inclusive() -> None:
    assert len(ev(f"'a' * {MAX_ITEMS}", {})) == MAX_ITEMS
    assert len(ev(f"[0] * {MAX_ITEMS}", {})) == MAX_ITEMS
