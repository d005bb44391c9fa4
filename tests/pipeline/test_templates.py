"""`${{ ... }}` templates in strings (`modelyard.pipeline.templates`)."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.errors import ExpressionError
from modelyard.pipeline.expressions import Expression
from modelyard.pipeline.templates import (
    expressions_in,
    has_templates,
    render,
    render_value,
    split_command,
    templates_in,
    whole_template,
)

VALUES: dict[str, Any] = {
    "params.depth": 5,
    "params.rate": 0.5,
    "params.name": "my model",
    "params.flag": True,
    "params.grid": {"a": [1, 2]},
    "outputs.model": "/work/out/model",
}


def lookup(expression: Expression) -> Any:
    return VALUES[expression.text]


def test_split_command_keeps_templates_inside_words():
    words = split_command(
        "python train.py --name ${{ params.name }} --out=${{ outputs.model }}/m.bin "
        "--expr '${{ params.depth > 3 and params.name == \"a b\" }}'"
    )
    assert words == [
        "python",
        "train.py",
        "--name",
        "${{ params.name }}",
        "--out=${{ outputs.model }}/m.bin",
        "--expr",
        '${{ params.depth > 3 and params.name == "a b" }}',
    ]


def test_split_command_template_with_spaces_is_one_word():
    assert split_command("echo ${{ params.depth   +   1 }}") == [
        "echo",
        "${{ params.depth   +   1 }}",
    ]


def test_split_command_handles_quotes_like_a_shell():
    assert split_command("""echo 'a b' "c d" e\\ f""") == ["echo", "a b", "c d", "e f"]


def test_split_command_two_templates_in_one_word():
    assert split_command("cp ${{ a }}/${{ b }} x") == ["cp", "${{ a }}/${{ b }}", "x"]


def test_split_command_unbalanced_quote():
    with pytest.raises(ValueError):
        split_command("echo 'oops")


def test_render_whole_template_keeps_the_type():
    assert render("${{ params.depth }}", lookup) == 5
    assert render("${{ params.rate }}", lookup) == 0.5
    assert render("${{ params.flag }}", lookup) is True
    assert render("${{ params.grid }}", lookup) == {"a": [1, 2]}
    assert render("  ${{ params.depth }}\n", lookup) == 5  # surrounding space is ignored


def test_render_mixed_text_is_a_string():
    assert render("depth=${{ params.depth }}", lookup) == "depth=5"
    assert render("${{ params.flag }}!", lookup) == "true!"
    assert render("${{ params.depth }}-${{ params.rate }}", lookup) == "5-0.5"
    assert render("${{params.name}}: ${{ params.depth }} ", lookup) == "my model: 5 "


def test_render_without_templates_is_unchanged():
    assert render("plain text", lookup) == "plain text"


def test_render_value_goes_into_lists_and_mappings():
    value = {"a": ["${{ params.depth }}", "x${{ params.depth }}"], "b": 3, "c": "plain"}
    assert render_value(value, lookup) == {"a": [5, "x5"], "b": 3, "c": "plain"}


def test_whole_template():
    assert whole_template("${{ params.depth }}").text == "params.depth"
    assert whole_template("x${{ params.depth }}") is None
    assert whole_template("plain") is None


def test_two_templates_are_not_one_whole_template():
    assert whole_template("${{ params.depth }}-${{ params.rate }}") is None
    assert whole_template("${{ params.depth }}${{ params.rate }}") is None


def test_unclosed_template():
    with pytest.raises(ExpressionError) as info:
        list(templates_in("echo ${{ params.depth"))
    assert "'${{' is not closed" in info.value.message
    assert info.value.hint == "end the reference with '}}'"
    with pytest.raises(ExpressionError, match="not closed"):
        render("a ${{ params.depth }} b ${{ params.rate", lookup)


def test_empty_template():
    with pytest.raises(ExpressionError, match=r"empty \$\{\{ \}\}"):
        list(templates_in("echo ${{   }}"))


def test_templates_in_positions():
    text = "a ${{ params.depth }} b"
    [template] = templates_in(text)
    assert text[template.start : template.end] == "${{ params.depth }}"
    assert template.expression.text == "params.depth"


def test_expressions_in_nested_values():
    value = {"x": ["${{ params.depth }}", {"y": "${{ params.rate }} ${{ params.name }}"}], "z": 3}
    assert [e.text for e in expressions_in(value)] == ["params.depth", "params.rate", "params.name"]


def test_has_templates():
    assert has_templates("a ${{ b }}")
    assert not has_templates("a ${ b } {{ c }}")
