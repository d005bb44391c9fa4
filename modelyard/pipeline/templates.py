"""`${{ expression }}` templates inside strings of the project file.

A string that is exactly one template keeps the expression's type (`${{ params.depth }}` -> 5);
a string mixing text and templates renders each expression with `str()`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from modelyard.errors import ExpressionError
from modelyard.pipeline.expressions import Expression

_TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)


@dataclass(frozen=True)
class Template:
    text: str
    start: int
    end: int
    expression: Expression


def templates_in(text: str) -> Iterator[Template]:
    leftover = _TEMPLATE.sub("", text)
    if "${{" in leftover:
        raise ExpressionError(
            "'${{' is not closed", expression=text, hint="end the reference with '}}'"
        )
    for match in _TEMPLATE.finditer(text):
        inner = match.group(1).strip()
        if not inner:
            raise ExpressionError(
                "empty ${{ }}", expression=text, column=match.start(), hint="write a reference"
            )
        yield Template(match.group(0), match.start(), match.end(), Expression.parse(inner))


def has_templates(text: str) -> bool:
    return "${{" in text


def whole_template(text: str) -> Expression | None:
    """The expression if `text` is exactly one template (so its value keeps its type)."""
    stripped = text.strip()
    # `match`, not `fullmatch`: the lazy `.*?` would let fullmatch swallow the `}}` and `${{`
    # between two templates ("${{ a }}-${{ b }}") and parse them as one expression
    match = _TEMPLATE.match(stripped)
    if match is None or match.end() != len(stripped):
        return None
    return Expression.parse(match.group(1).strip())


def render(text: str, evaluate: Callable[[Expression], Any]) -> Any:
    whole = whole_template(text)
    if whole is not None:
        return evaluate(whole)
    parts: list[str] = []
    position = 0
    for template in templates_in(text):
        parts.append(text[position : template.start])
        parts.append(as_text(evaluate(template.expression)))
        position = template.end
    parts.append(text[position:])
    return "".join(parts)


def as_text(value: Any) -> str:
    """A value as it appears in a command line or environment variable: strings as they are,
    everything else as JSON (booleans true/false, lists and mappings parseable by the step)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def render_value(value: Any, evaluate: Callable[[Expression], Any]) -> Any:
    """Render templates in strings nested anywhere inside lists and mappings."""
    if isinstance(value, str):
        return render(value, evaluate) if has_templates(value) else value
    if isinstance(value, list | tuple):
        return [render_value(v, evaluate) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, evaluate) for k, v in value.items()}
    return value


def expressions_in(value: Any) -> Iterator[Expression]:
    """Every template expression in a value (strings nested in lists and mappings)."""
    if isinstance(value, str):
        if has_templates(value):
            for template in templates_in(value):
                yield template.expression
    elif isinstance(value, list | tuple):
        for item in value:
            yield from expressions_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from expressions_in(item)


def split_command(text: str) -> list[str]:
    """Split a command line like a POSIX shell, keeping each `${{ ... }}` inside its word."""
    import shlex

    found: list[str] = []

    def protect(match: re.Match[str]) -> str:
        found.append(match.group(0))
        return f"\x00{len(found) - 1}\x00"

    words = shlex.split(_TEMPLATE.sub(protect, text))
    restore = re.compile("\x00(\\d+)\x00")
    return [restore.sub(lambda m: found[int(m.group(1))], word) for word in words]
