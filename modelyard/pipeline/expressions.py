"""Safe expressions for `${{ ... }}` references and `condition` steps.

An expression is parsed with :mod:`ast` and interpreted by this module over a small whitelist of
Python syntax; nothing is ever handed to ``eval``. Everything outside the whitelist is refused when
the expression is parsed, so a pipeline can be linted before anything runs.

Allowed:

* literals: numbers, strings, ``True``/``False``/``None`` (also spelled ``true``, ``false``,
  ``null``), lists, tuples, sets and dicts;
* names, looked up in the evaluation context (``params``, ``steps``, ...);
* ``a.b``: a key of a mapping, or an attribute that the object's class lists in
  ``__expression_attributes__`` (a frozenset of names); names starting with ``_`` never;
* ``a[0]``, ``a[-1]``, ``a["key"]``, ``a[1:3]`` on mappings and sequences;
* comparisons, also chained (``0 < x <= 6``), ``in``/``not in``, ``is``/``is not``;
* ``and``/``or``/``not`` (short-circuit, with Python's semantics), ``a if c else b``;
* ``+ - * / // % **`` and unary ``-``/``+``, with bounds against denial of service;
* calls of functions by name: the caller's ``functions`` and :data:`BUILTIN_FUNCTIONS`.

Every error is a :class:`~modelyard.errors.ExpressionError` that names the failing part of the
expression, gives its column (1-based, counted in characters from the start of the text) and a hint.

Decisions worth knowing:

* ``and``/``or``/``if-else`` short-circuit: ``false and undefined`` is ``False``, no error; the
  linter still sees ``undefined`` through :meth:`Expression.references`.
* Parts that need no context (``1/0``, ``"a" * 10**9``, ``2 ** 1000``) are evaluated when parsing,
  so their errors are parse errors.
* Calls resolve only in ``functions`` (first) and :data:`BUILTIN_FUNCTIONS`, never in the context.
  ``eval``, ``exec``, ``open``, ``getattr``, ``type`` and a few more are refused by name when
  parsing.
  A :class:`~modelyard.errors.ModelyardError` raised by a caller's function passes unchanged; any
  other exception is wrapped in an ExpressionError (chained as ``__cause__``).
* ``true``, ``false`` and ``null`` are constants, not context names.
* A text with line breaks is parsed as if in parentheses, so a condition may span lines.
"""

from __future__ import annotations

import ast
import functools
import itertools
import numbers
import operator
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, NoReturn

from modelyard.errors import ExpressionError, ModelyardError

__all__ = [
    "BUILTIN_FUNCTIONS",
    "LITERAL_NAMES",
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "MAX_INT_BITS",
    "MAX_ITEMS",
    "MAX_LENGTH",
    "MAX_STR_ITEMS",
    "Expression",
    "evaluate",
]

MAX_LENGTH: Final = 4096
"""Longest accepted expression text, in characters."""
MAX_DEPTH: Final = 100
"""Deepest accepted nesting of the syntax tree."""
MAX_EXPONENT: Final = 100
"""Largest absolute exponent of ``**``."""
MAX_INT_BITS: Final = 100_000
"""Largest integer (in bits) that ``*`` and ``**`` may produce."""
MAX_ITEMS: Final = 10_000
"""Largest result of repeating a string, list or tuple with ``*`` (characters plus nested items)."""
MAX_STR_ITEMS: Final = 100_000
"""Largest container (nested items and characters) that ``str()`` converts to text."""

LITERAL_NAMES: Final[Mapping[str, Any]] = MappingProxyType(
    {"true": True, "false": False, "null": None}
)
"""YAML-style spellings of the constants; they are never looked up in the context."""

# Python built-ins that are refused by name when parsing, even if a caller offered them.
_FORBIDDEN_CALLS: Final = frozenset(
    {
        "breakpoint",
        "compile",
        "delattr",
        "dir",
        "eval",
        "exec",
        "getattr",
        "globals",
        "hasattr",
        "help",
        "input",
        "locals",
        "open",
        "setattr",
        "type",
        "vars",
    }
)

_BINARY: Final[dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.FloorDiv: ("//", operator.floordiv),
    ast.Mod: ("%", operator.mod),
    ast.Pow: ("**", operator.pow),
}
_REFUSED_BINARY: Final[dict[type[ast.operator], str]] = {
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.BitXor: "^",
}


def _contains(container: Any, item: Any) -> bool:
    return item in container


def _not_contains(container: Any, item: Any) -> bool:
    return item not in container


_COMPARE: Final[dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], Any]]]] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
    ast.In: ("in", lambda left, right: _contains(right, left)),
    ast.NotIn: ("not in", lambda left, right: _not_contains(right, left)),
    ast.Is: ("is", operator.is_),
    ast.IsNot: ("is not", operator.is_not),
}

_EXAMPLE: Final = "params.threshold > 0.5 and steps.evaluate.outputs.ok"
_JOIN_HINT: Final = 'join text with + and str(), e.g. "model-" + str(params.version)'

_REFUSED_NODES: Final[dict[type[ast.AST], tuple[str, str]]] = {
    ast.Lambda: (
        "lambda functions are not allowed",
        "compute the value in a step and refer to its output",
    ),
    ast.ListComp: (
        "list comprehensions are not allowed",
        "compute the value in a step and refer to its output",
    ),
    ast.SetComp: (
        "set comprehensions are not allowed",
        "compute the value in a step and refer to its output",
    ),
    ast.DictComp: (
        "dict comprehensions are not allowed",
        "compute the value in a step and refer to its output",
    ),
    ast.GeneratorExp: (
        "generator expressions are not allowed",
        "compute the value in a step and refer to its output",
    ),
    ast.NamedExpr: (
        "assignment expressions (:=) are not allowed",
        "compare with == instead of assigning",
    ),
    ast.JoinedStr: (
        "f-strings are not allowed",
        _JOIN_HINT,
    ),
    ast.FormattedValue: (
        "f-strings are not allowed",
        _JOIN_HINT,
    ),
    ast.Starred: ("unpacking with * is not allowed", "write the items one by one"),
    ast.Await: ("await is not allowed", "remove it"),
    ast.Yield: ("yield is not allowed", "remove it"),
    ast.YieldFrom: ("yield from is not allowed", "remove it"),
}


# --------------------------------------------------------------------------------------------
# Built-in functions


class _Refused(Exception):
    """A built-in refused its arguments; turned into an ExpressionError at the call."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.message = message
        self.hint = hint


_NO_DEFAULT: Final = object()


def _size(value: Any, limit: int) -> int:
    """Characters plus nested items of `value` (each at least 1); stops once past `limit`.

    Every value popped adds at least 1 and at most `limit` values are ever pending, so the walk
    costs O(limit) even for shared or self-referencing structures.
    """
    total = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str | bytes | bytearray):
            total += max(1, len(item))
        else:
            total += 1
            children: Iterable[Any] | None = None
            if isinstance(item, Mapping):
                children = itertools.chain.from_iterable(item.items())
            elif isinstance(item, list | tuple | set | frozenset):
                children = item
            if children is not None:
                budget = limit - total - len(stack)
                taken = list(itertools.islice(children, max(budget, 0) + 1))
                if len(taken) > budget:
                    return limit + 1
                stack.extend(taken)
        if total > limit:
            return total
    return total


def _str(value: Any = "") -> str:
    if isinstance(value, str):
        return value
    if _size(value, MAX_STR_ITEMS) > MAX_STR_ITEMS:
        raise _Refused(
            f"the value is too large to convert to text (over {MAX_STR_ITEMS} items)",
            "convert a smaller part of it",
        )
    return str(value)


def _round(number: Any, ndigits: Any = None) -> Any:
    if ndigits is None:
        return round(number)
    if not isinstance(ndigits, int) or abs(ndigits) > MAX_EXPONENT:
        raise _Refused(
            f"round() takes a number of digits between {-MAX_EXPONENT} and {MAX_EXPONENT}",
            "pass a small whole number of digits, e.g. round(x, 3)",
        )
    return round(number, ndigits)


def _extreme(name: str, pick: Callable[..., Any], args: tuple[Any, ...], default: Any) -> Any:
    if not args:
        raise _Refused(
            f"{name}() needs at least one argument", f"e.g. {name}(a, b) or {name}(list)"
        )
    if len(args) > 1:
        if default is not _NO_DEFAULT:
            raise _Refused(
                f"{name}() takes default= only with a single list",
                f"e.g. {name}(values, default=0)",
            )
        return pick(args)
    if default is _NO_DEFAULT:
        return pick(args[0])
    return pick(args[0], default=default)


def _min(*args: Any, default: Any = _NO_DEFAULT) -> Any:
    return _extreme("min", min, args, default)


def _max(*args: Any, default: Any = _NO_DEFAULT) -> Any:
    return _extreme("max", max, args, default)


BUILTIN_FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = MappingProxyType(
    {
        "abs": abs,
        "bool": bool,
        "float": float,
        "int": int,
        "len": len,
        "max": _max,
        "min": _min,
        "round": _round,
        "str": _str,
    }
)
"""Functions every expression may call; a caller's ``functions`` of the same name replace them."""


# --------------------------------------------------------------------------------------------
# Positions and messages


def _shorten(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _show(value: Any, limit: int = 40) -> str:
    """A short repr for messages (never fails on huge numbers)."""
    try:
        text = repr(value)
    except Exception:
        return f"<{_type_name(value)}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _suggest(word: str, candidates: Iterable[str]) -> str:
    import difflib  # only on the error path, to keep importing this module fast

    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{matches[0]}'?" if matches else ""


def _listing(names: Iterable[Any], limit: int = 10) -> tuple[str, list[str]]:
    """A short listing of names (first `limit`) and the full list for suggestions (up to 1000)."""
    everything: list[str] = []
    for name in names:
        everything.append(str(name))
        if len(everything) >= 1000:
            break
    shown = ", ".join(everything[:limit])
    if len(everything) > limit:
        shown += f", ... ({len(everything) - limit}+ more)"
    return shown, everything


class _Source:
    """The text as given and the string handed to the parser, with position mapping."""

    __slots__ = ("lead", "line_starts", "shift", "source", "text", "wrapped")

    def __init__(self, text: str):
        self.text = text
        stripped = text.lstrip()
        lead = self.lead = len(text) - len(stripped)
        self.wrapped = "\n" in stripped or "\r" in stripped
        if self.wrapped:
            # Implicit line joining inside parentheses lets a condition span lines (YAML `|`).
            # Same-length replacements keep every offset valid.
            body = stripped.replace("\r\n", " \n").replace("\r", "\n")
            self.source = "(" + body + "\n)"
            self.shift = 1 - lead
        else:
            self.source = stripped
            self.shift = -lead
        starts = [0]
        for index, char in enumerate(self.source):
            if char == "\n":
                starts.append(index + 1)
        self.line_starts = tuple(starts)

    def _source_index(self, lineno: int, col: int, *, in_bytes: bool) -> int:
        lineno = min(max(lineno, 1), len(self.line_starts))
        start = self.line_starts[lineno - 1]
        if in_bytes and not self.source.isascii():
            end = self.line_starts[lineno] if lineno < len(self.line_starts) else len(self.source)
            line = self.source[start:end]
            col = len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
        return start + col

    def column_at(self, source_index: int) -> int:
        """1-based column in the text of an index in the parsed source, clamped to the text."""
        return min(max(source_index - self.shift + 1, 1), len(self.text) + 1)

    def start(self, node: ast.AST) -> int:
        return self._source_index(
            getattr(node, "lineno", 1), getattr(node, "col_offset", 0), in_bytes=True
        )

    def end(self, node: ast.AST) -> int:
        lineno = getattr(node, "end_lineno", None)
        col = getattr(node, "end_col_offset", None)
        if lineno is None or col is None:
            return self.start(node)
        return self._source_index(lineno, col, in_bytes=True)

    def column(self, node: ast.AST) -> int:
        return self.column_at(self.start(node))

    def syntax_column(self, error: SyntaxError) -> int:
        if error.lineno is None or error.offset is None or error.offset < 1:
            return len(self.text) + 1
        return self.column_at(self._source_index(error.lineno, error.offset - 1, in_bytes=False))

    def segment(self, node: ast.AST) -> str:
        found = ast.get_source_segment(self.source, node)
        return _shorten(found if found is not None else self.text, 80)

    def operator_column(self, left: ast.AST, right: ast.AST, symbol: str) -> int:
        """Column of the operator written between `left` and `right` (start of `left` if lost)."""
        begin = self.end(left)
        found = self.source.find(symbol, begin, self.start(right))
        return self.column_at(found if found >= 0 else self.start(left))

    def error(
        self, problem: str, hint: str, *, node: ast.AST | None = None, column: int | None = None
    ) -> ExpressionError:
        if column is None and node is not None:
            column = self.column(node)
        where = f" (column {column} of `{_shorten(self.text)}`)" if column is not None else ""
        return ExpressionError(problem + where, expression=self.text, column=column, hint=hint)


# --------------------------------------------------------------------------------------------
# Parsing and checks


def _syntax_hint(text: str, message: str) -> str:
    import re  # only on the error path

    if re.match(r"\s*(import|from|def|class|for|while|with|del|raise|return)\b", text):
        return "an expression computes a value; statements (import, def, ...) are not allowed"
    if "${{" in text or "}}" in text:
        return "write only what goes between ${{ and }}, e.g. params.max_depth"
    if "&&" in text or "||" in text or re.search(r"!(?!=)", text):
        return "use and, or, not instead of &&, ||, !"
    if "never closed" in message or "unmatched" in message or "does not match" in message:
        return "balance the brackets ( ) [ ] { }"
    if "unterminated" in message:
        return "close each string with the quote it starts with"
    if "Exceeds the limit" in message:
        return "write a shorter number"
    if re.search(r"(?<![=!<>:])=(?!=)", text):
        return "compare with == (a single = assigns and is not allowed)"
    return f"expressions use Python syntax, e.g. {_EXAMPLE}"


def _syntax_problem(message: str) -> str:
    if "Exceeds the limit" in message:
        return "invalid expression: the number is too long"
    return f"invalid expression: {message}"


def _parse_tree(source: _Source) -> ast.expr:
    text = source.text
    if not text.strip():
        raise source.error(
            "the expression is empty", f"write a value or a reference, e.g. {_EXAMPLE}", column=1
        )
    if len(text) > MAX_LENGTH:
        raise source.error(
            f"the expression is too long ({len(text)} characters, the limit is {MAX_LENGTH})",
            "compute complex values in a step and refer to its output",
            column=MAX_LENGTH + 1,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for `x is 1`
            tree = ast.parse(source.source, filename="<expression>", mode="eval")
    except SyntaxError as exc:
        message, column = exc.msg or "invalid syntax", source.syntax_column(exc)
        if source.wrapped:
            # The parentheses added around a multi-line text can hide where the error is: parsing
            # the text as one line (same length) usually tells.
            flat = text[source.lead :].replace("\r", " ").replace("\n", " ")
            try:
                ast.parse(flat, mode="eval")
            except SyntaxError as second:
                if second.offset is not None and second.offset >= 1:
                    message = second.msg or message
                    column = min(source.lead + second.offset, len(text) + 1)
            except (ValueError, RecursionError, MemoryError, OverflowError):
                pass
        raise source.error(
            _syntax_problem(message), _syntax_hint(text, message), column=column
        ) from None
    except (ValueError, RecursionError, MemoryError, OverflowError):
        raise source.error(
            "the expression cannot be parsed (too deeply nested or invalid characters)",
            "simplify the expression",
            column=1,
        ) from None
    _check_depth(source, tree.body)
    return tree.body


def _check_depth(source: _Source, root: ast.AST) -> None:
    stack: list[tuple[ast.AST, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise source.error(
                f"the expression is nested too deeply (more than {MAX_DEPTH} levels)",
                "simplify the expression or compute the value in a step",
                node=node,
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _check_name(source: _Source, node: ast.AST, name: str, what: str) -> None:
    if name.startswith("_"):
        raise source.error(
            f"{what} '{name}' is not allowed: names starting with '_' are never reachable",
            "use a public name",
            node=node,
        )


def _check(source: _Source, node: ast.AST) -> None:
    """Refuse, at parse time, everything outside the whitelist."""
    refused = _REFUSED_NODES.get(type(node))
    if refused is not None:
        raise source.error(refused[0], refused[1], node=node)
    if isinstance(node, ast.Constant):
        value = node.value
        if value is not None and type(value) not in (bool, int, float, str):
            if isinstance(value, bytes):
                problem = "bytes literals are not allowed"
            elif isinstance(value, complex):
                problem = "complex numbers are not allowed"
            else:
                problem = f"`{source.segment(node)}` is not allowed"
            raise source.error(problem, "use numbers, strings, true, false and null", node=node)
        return
    if isinstance(node, ast.Name):
        _check_name(source, node, node.id, "the name")
        return
    if isinstance(node, ast.Attribute):
        if node.attr.startswith("_"):
            raise source.error(
                f"the attribute '{node.attr}' is not allowed: names starting with '_' are "
                "never reachable",
                "read public keys or attributes only",
                column=source.column_at(source.end(node) - len(node.attr)),
            )
    elif isinstance(node, ast.BinOp):
        symbol = _REFUSED_BINARY.get(type(node.op))
        if symbol is not None:
            raise source.error(
                f"the operator '{symbol}' is not allowed",
                "use + - * / // % ** and comparisons; and, or, not for logic",
                column=source.operator_column(node.left, node.right, symbol),
            )
        if (
            isinstance(node.op, ast.Mod)
            and isinstance(node.left, ast.Constant)
            and isinstance(node.left.value, str)
        ):
            raise source.error(
                "'%' does not format text in expressions",
                _JOIN_HINT,
                column=source.operator_column(node.left, node.right, "%"),
            )
    elif isinstance(node, ast.Subscript):
        if isinstance(node.slice, ast.Tuple) and any(
            isinstance(item, ast.Slice) for item in node.slice.elts
        ):
            raise source.error(
                "multi-dimensional slices are not allowed",
                "slice one dimension at a time, e.g. x[1:3]",
                node=node.slice,
            )
    elif isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Invert):
            raise source.error(
                "the operator '~' is not allowed", "use not for logic, - to negate", node=node
            )
    elif isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise source.error(
                "unpacking with ** is not allowed in a dict", "write the keys one by one", node=node
            )
    elif isinstance(node, ast.Call):
        _check_call(source, node)
    elif not isinstance(
        node,
        ast.BoolOp
        | ast.Compare
        | ast.IfExp
        | ast.Slice
        | ast.List
        | ast.Tuple
        | ast.Set
        | ast.Load
        | ast.boolop
        | ast.operator
        | ast.unaryop
        | ast.cmpop
        | ast.keyword,
    ):
        raise source.error(
            f"{type(node).__name__} is not allowed in expressions",
            f"expressions are limited to values, references, operators and calls, e.g. {_EXAMPLE}",
            node=node,
        )
    for child in ast.iter_child_nodes(node):
        _check(source, child)


def _check_call(source: _Source, node: ast.Call) -> None:
    func = node.func
    if not isinstance(func, ast.Name):
        if isinstance(func, ast.Attribute):
            problem = f"method calls such as `{source.segment(func)}(...)` are not allowed"
        else:
            problem = f"only functions called by name are allowed, not `{source.segment(func)}`"
        available = ", ".join(sorted(BUILTIN_FUNCTIONS))
        raise source.error(
            problem,
            f"call a function with the value as argument, e.g. len(x); built-ins: {available}",
            node=node,
        )
    _check_name(source, func, func.id, "the function")
    if func.id in _FORBIDDEN_CALLS:
        raise source.error(
            f"calling '{func.id}' is not allowed",
            "built-ins available: " + ", ".join(sorted(BUILTIN_FUNCTIONS)),
            node=func,
        )
    seen: set[str] = set()
    for keyword in node.keywords:
        if keyword.arg is None:
            raise source.error(
                "unpacking with ** is not allowed in a call",
                "pass the arguments one by one",
                node=keyword,
            )
        if keyword.arg in seen:
            raise source.error(
                f"the argument '{keyword.arg}' is given twice", "pass it once", node=keyword
            )
        seen.add(keyword.arg)


def _constant_nodes(root: ast.AST) -> set[int]:
    """ids of the nodes whose value does not depend on the context or on functions."""
    constant: set[int] = set()

    def visit(node: ast.AST) -> bool:
        children = [visit(child) for child in ast.iter_child_nodes(node)]
        if isinstance(node, ast.Call):
            result = False
        elif isinstance(node, ast.Name):
            result = node.id in LITERAL_NAMES
        else:
            result = all(children)
        if result:
            constant.add(id(node))
        return result

    visit(root)
    return constant


def _check_constants(source: _Source, root: ast.expr) -> None:
    """Evaluate the parts that need no context now, so `"a" * 10**9` or `1/0` fail at parse time."""
    constant = _constant_nodes(root)
    evaluator = _Evaluator(source, {}, None)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.expr) and not isinstance(node, ast.Slice) and id(node) in constant:
            evaluator.eval(node)
            return
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Pow)
            and id(node.right) in constant
        ):
            evaluator.check_exponent(node, evaluator.eval(node.right))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(root)


def _chain(node: ast.AST) -> tuple[str, ...] | None:
    """The reference `node` is, if it is a chain of keys rooted at a name, else None."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Constant)
            and type(node.slice.value) is str
        ):
            parts.append(node.slice.value)
            node = node.value
        elif isinstance(node, ast.Name) and node.id not in LITERAL_NAMES:
            parts.append(node.id)
            return tuple(reversed(parts))
        else:
            return None


def _collect_references(root: ast.expr) -> tuple[tuple[str, ...], ...]:
    found: list[tuple[int, int, tuple[str, ...]]] = []

    def visit(node: ast.AST) -> None:
        chain = _chain(node)
        if chain is not None:
            found.append((getattr(node, "lineno", 0), getattr(node, "col_offset", 0), chain))
            return
        if isinstance(node, ast.Call):
            children: list[ast.AST] = [*node.args, *node.keywords]
        else:
            children = list(ast.iter_child_nodes(node))
        for child in children:
            visit(child)

    visit(root)
    found.sort(key=lambda item: (item[0], item[1]))
    return tuple(dict.fromkeys(chain for _, _, chain in found))


def _collect_functions(root: ast.expr) -> tuple[str, ...]:
    calls = [
        node
        for node in ast.walk(root)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    calls.sort(key=lambda node: (node.lineno, node.col_offset))
    return tuple(dict.fromkeys(node.func.id for node in calls if isinstance(node.func, ast.Name)))


# --------------------------------------------------------------------------------------------
# Evaluation


class _Evaluator:
    __slots__ = ("context", "functions", "source")

    def __init__(
        self,
        source: _Source,
        context: Mapping[str, Any],
        functions: Mapping[str, Callable[..., Any]] | None,
    ):
        self.source = source
        self.context = context
        self.functions = functions

    def fail(
        self,
        problem: str,
        hint: str,
        node: ast.AST | None = None,
        column: int | None = None,
        cause: BaseException | None = None,
    ) -> NoReturn:
        raise self.source.error(problem, hint, node=node, column=column) from cause

    def seg(self, node: ast.AST) -> str:
        return self.source.segment(node)

    def eval(self, node: ast.expr) -> Any:
        handler = _HANDLERS.get(type(node))
        if handler is None:  # unreachable for a checked tree
            self.fail(f"{type(node).__name__} is not allowed in expressions", "simplify", node)
        return handler(self, node)

    def constant(self, node: ast.Constant) -> Any:
        return node.value

    def if_else(self, node: ast.IfExp) -> Any:
        chosen = node.body if self.truth(self.eval(node.test), node.test) else node.orelse
        return self.eval(chosen)

    def list_display(self, node: ast.List) -> list[Any]:
        return [self.eval(item) for item in node.elts]

    def tuple_display(self, node: ast.Tuple) -> tuple[Any, ...]:
        return tuple(self.eval(item) for item in node.elts)

    def set_display(self, node: ast.Set) -> set[Any]:
        items = [self.eval(item) for item in node.elts]
        try:
            return set(items)
        except TypeError:
            self.fail(
                f"`{self.seg(node)}` holds a value that cannot be in a set (a list or dict)",
                "use a list instead of a set",
                node,
            )

    def truth(self, value: Any, node: ast.AST) -> bool:
        try:
            return bool(value)
        except ModelyardError:
            raise
        except Exception as exc:
            self.fail(
                f"`{self.seg(node)}` cannot be used as true or false: {_shorten(str(exc), 200)}",
                "compare it explicitly, e.g. with == or len(...) > 0",
                node,
            )

    def name(self, node: ast.Name) -> Any:
        if node.id in LITERAL_NAMES:
            return LITERAL_NAMES[node.id]
        try:
            return self.context[node.id]
        except KeyError:
            pass
        shown, names = _listing(self.context)
        hint = f"available names: {shown}" if names else "no names are available here"
        self.fail(f"unknown name '{node.id}'", hint + _suggest(node.id, names), node)

    def attribute(self, node: ast.Attribute) -> Any:
        value = self.eval(node.value)
        name = node.attr
        if isinstance(value, Mapping):
            try:
                return value[name]
            except KeyError:
                self.missing_key(value, name, node.value, self.attribute_column(node))
        allowed = getattr(type(value), "__expression_attributes__", None)
        if allowed is not None and not isinstance(allowed, str) and name in allowed:
            try:
                return getattr(value, name)
            except ModelyardError:
                raise
            except Exception as exc:
                self.fail(
                    f"cannot read '{name}' of `{self.seg(node.value)}`: {_shorten(str(exc), 200)}",
                    "check that the value is ready when the expression is evaluated",
                    column=self.attribute_column(node),
                )
        if allowed is not None and not isinstance(allowed, str):
            shown, names = _listing(sorted(str(a) for a in allowed if not str(a).startswith("_")))
            self.fail(
                f"`{self.seg(node.value)}` ({_type_name(value)}) has no attribute '{name}'",
                f"available attributes: {shown or '(none)'}" + _suggest(name, names),
                column=self.attribute_column(node),
            )
        self.fail(
            f"cannot read '{name}' of `{self.seg(node.value)}`: it is of type {_type_name(value)}, "
            "which has no keys or attributes",
            "`.name` reads a key of a mapping; to transform a value call a function, e.g. len(x)",
            column=self.attribute_column(node),
        )

    def attribute_column(self, node: ast.Attribute) -> int:
        return self.source.column_at(self.source.end(node) - len(node.attr))

    def missing_key(
        self, mapping: Mapping[Any, Any], key: Any, of: ast.AST, column: int
    ) -> NoReturn:
        shown, keys = _listing(mapping)
        hint = f"available keys: {shown}" if keys else f"`{self.seg(of)}` is empty"
        suggestion = _suggest(key, keys) if isinstance(key, str) else ""
        self.fail(
            f"key {_show(key)} not found in `{self.seg(of)}`", hint + suggestion, column=column
        )

    def subscript(self, node: ast.Subscript) -> Any:
        container = self.eval(node.value)
        if isinstance(node.slice, ast.Slice):
            return self.slice(node, node.slice, container)
        key = self.eval(node.slice)
        if isinstance(container, Mapping):
            try:
                return container[key]
            except KeyError:
                self.missing_key(container, key, node.value, self.source.column(node.slice))
            except TypeError:
                self.fail(
                    f"{_type_name(key)} cannot be a key of `{self.seg(node.value)}`",
                    "use a string or a number as key",
                    column=self.source.column(node.slice),
                )
        if isinstance(container, Sequence):
            try:
                index = operator.index(key)
            except TypeError:
                self.fail(
                    f"the index of `{self.seg(node.value)}` must be a whole number, "
                    f"not {_type_name(key)}",
                    "use e.g. [0] for the first item and [-1] for the last",
                    column=self.source.column(node.slice),
                )
            try:
                return container[index]
            except IndexError:
                size = len(container)
                valid = f"0..{size - 1} or -{size}..-1" if size else "none, it is empty"
                self.fail(
                    f"index {index} is out of range for `{self.seg(node.value)}` ({size} items)",
                    f"valid indexes: {valid}",
                    column=self.source.column(node.slice),
                )
        self.fail(
            f"cannot index `{self.seg(node.value)}`: it is of type {_type_name(container)}, "
            "not a mapping or a sequence",
            "index mappings, lists, tuples and strings only",
            column=self.source.column(node.slice),
        )

    def slice(self, node: ast.Subscript, part: ast.Slice, container: Any) -> Any:
        bounds: list[int | None] = []
        for bound in (part.lower, part.upper, part.step):
            if bound is None:
                bounds.append(None)
                continue
            value = self.eval(bound)
            if value is None:
                bounds.append(None)
                continue
            try:
                bounds.append(operator.index(value))
            except TypeError:
                self.fail(
                    f"slice bounds must be whole numbers, not {_type_name(value)}",
                    "use e.g. [1:3]",
                    bound,
                )
        if isinstance(container, Mapping) or not isinstance(container, Sequence):
            self.fail(
                f"cannot slice `{self.seg(node.value)}`: it is of type {_type_name(container)}, "
                "not a sequence",
                "slice lists, tuples and strings only",
                part,
            )
        try:
            return container[slice(*bounds)]
        except ValueError as exc:
            self.fail(f"invalid slice `{self.seg(node)}`: {exc}", "use a step other than 0", part)

    def compare(self, node: ast.Compare) -> Any:
        left_node: ast.expr = node.left
        left = self.eval(left_node)
        result: Any = True
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.eval(right_node)
            symbol, function = _COMPARE[type(op)]
            try:
                result = function(left, right)
            except ModelyardError:
                raise
            except Exception as exc:
                column = self.source.operator_column(left_node, right_node, symbol.split()[0])
                if symbol in ("in", "not in"):
                    hint = "the right side of `in` must be a list, a string or a mapping"
                    problem = f"cannot test `{self.seg(left_node)} {symbol} {self.seg(right_node)}`"
                else:
                    hint = "convert one side first, e.g. float(x) or str(x)"
                    problem = (
                        f"cannot compare {_type_name(left)} with {_type_name(right)} using "
                        f"'{symbol}' in `{self.seg(left_node)} {symbol} {self.seg(right_node)}`"
                    )
                detail = f": {_shorten(str(exc), 200)}" if symbol in ("in", "not in") else ""
                self.fail(problem + detail, hint, column=column)
            if not self.truth(result, node):
                return result
            left_node, left = right_node, right
        return result

    def boolean(self, node: ast.BoolOp) -> Any:
        want_true = isinstance(node.op, ast.Or)
        value: Any = None
        for item in node.values:
            value = self.eval(item)
            if self.truth(value, item) == want_true:
                return value
        return value

    def unary(self, node: ast.UnaryOp) -> Any:
        operand = self.eval(node.operand)
        if isinstance(node.op, ast.Not):
            return not self.truth(operand, node.operand)
        symbol = "-" if isinstance(node.op, ast.USub) else "+"
        try:
            return operator.neg(operand) if symbol == "-" else operator.pos(operand)
        except ModelyardError:
            raise
        except Exception:
            self.fail(
                f"cannot apply '{symbol}' to {_type_name(operand)} in `{self.seg(node)}`",
                "use it on numbers only",
                node,
            )

    def check_exponent(self, node: ast.BinOp, exponent: Any) -> None:
        if not isinstance(exponent, numbers.Real):
            return
        try:
            magnitude = abs(float(exponent))
        except OverflowError:
            magnitude = float("inf")
        if not magnitude <= MAX_EXPONENT:  # also refuses NaN
            self.fail(
                f"the exponent {_show(exponent)} of `{self.seg(node)}` is too large "
                f"(the limit is {MAX_EXPONENT})",
                f"use an exponent between {-MAX_EXPONENT} and {MAX_EXPONENT}",
                column=self.source.operator_column(node.left, node.right, "**"),
            )

    def binary(self, node: ast.BinOp) -> Any:
        left = self.eval(node.left)
        right = self.eval(node.right)
        symbol, function = _BINARY[type(node.op)]
        if symbol == "**":
            self.check_exponent(node, right)
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and right > 0
                and left.bit_length() * right > MAX_INT_BITS
            ):
                self.too_large(node)
        elif symbol == "*":
            self.check_product(node, left, right)
        elif symbol == "%" and isinstance(left, str | bytes):
            self.fail(
                f"'%' does not format text in expressions (`{self.seg(node)}`)",
                _JOIN_HINT,
                column=self.operator_column(node),
            )
        try:
            result = function(left, right)
        except ModelyardError:
            raise
        except ZeroDivisionError:
            self.fail(
                f"division by zero in `{self.seg(node)}`: `{self.seg(node.right)}` is 0",
                f"guard it, e.g. `{self.seg(node)} if {self.seg(node.right)} != 0 else 0`",
                column=self.operator_column(node),
            )
        except OverflowError:
            self.too_large(node)
        except Exception:
            self.fail(
                f"cannot apply '{symbol}' to {_type_name(left)} and {_type_name(right)} in "
                f"`{self.seg(node)}`",
                "convert the values first, e.g. float(x) for numbers or str(x) for text",
                column=self.operator_column(node),
            )
        if isinstance(result, complex) and not isinstance(left, complex):
            self.fail(
                f"`{self.seg(node)}` is a complex number",
                "raise only non-negative numbers to fractional powers",
                column=self.operator_column(node),
            )
        return result

    def check_product(self, node: ast.BinOp, left: Any, right: Any) -> None:
        repeatable = (str, bytes, list, tuple)
        if isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                self.too_large(node)
            return
        if isinstance(left, repeatable) and isinstance(right, int):
            sequence, count = left, right
        elif isinstance(right, repeatable) and isinstance(left, int):
            sequence, count = right, left
        else:
            return
        # Items of the result: characters of a string, or the (nested) items of a list or tuple.
        items = _size(sequence, MAX_ITEMS + 1)
        if not isinstance(sequence, str | bytes):
            items -= 1
        if count > 0 and items * count > MAX_ITEMS:
            self.fail(
                f"`{self.seg(node)}` would repeat a {_type_name(sequence)} into more than "
                f"{MAX_ITEMS} items",
                f"keep repeated values under {MAX_ITEMS} characters or items",
                column=self.operator_column(node),
            )

    def too_large(self, node: ast.BinOp) -> NoReturn:
        self.fail(
            f"the result of `{self.seg(node)}` would be too large",
            "use smaller numbers",
            column=self.operator_column(node),
        )

    def operator_column(self, node: ast.BinOp) -> int:
        return self.source.operator_column(node.left, node.right, _BINARY[type(node.op)][0])

    def dictionary(self, node: ast.Dict) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            if key_node is None:  # refused when parsing
                self.fail("unpacking with ** is not allowed in a dict", "write the keys", node)
            key = self.eval(key_node)
            value = self.eval(value_node)
            try:
                result[key] = value
            except TypeError:
                self.fail(
                    f"{_type_name(key)} cannot be a key of a dict (`{self.seg(key_node)}`)",
                    "use a string or a number as key",
                    key_node,
                )
        return result

    def call(self, node: ast.Call) -> Any:
        func = node.func
        if not isinstance(func, ast.Name):  # refused when parsing
            self.fail("only functions called by name are allowed", "call e.g. len(x)", node)
        name = func.id
        function = self.functions.get(name) if self.functions is not None else None
        if function is None:
            function = BUILTIN_FUNCTIONS.get(name)
        if function is None:
            known = sorted({*BUILTIN_FUNCTIONS, *(self.functions or {})})
            shown, names = _listing(known, limit=30)
            self.fail(
                f"unknown function '{name}'",
                f"available functions: {shown}" + _suggest(name, names),
                func,
            )
        args = [self.eval(arg) for arg in node.args]
        kwargs = {str(kw.arg): self.eval(kw.value) for kw in node.keywords}
        try:
            return function(*args, **kwargs)
        except ModelyardError:
            raise
        except _Refused as exc:
            self.fail(f"{exc.message} (in `{self.seg(node)}`)", exc.hint, func)
        except RecursionError:
            raise
        except Exception as exc:
            self.fail(
                f"{name}() failed in `{self.seg(node)}`: "
                f"{type(exc).__name__}: {_shorten(str(exc), 200)}",
                "check the arguments' types and values",
                func,
                cause=exc,
            )


_HANDLERS: Final[dict[type[ast.AST], Callable[[_Evaluator, Any], Any]]] = {
    ast.Constant: _Evaluator.constant,
    ast.Name: _Evaluator.name,
    ast.Attribute: _Evaluator.attribute,
    ast.Subscript: _Evaluator.subscript,
    ast.Compare: _Evaluator.compare,
    ast.BoolOp: _Evaluator.boolean,
    ast.UnaryOp: _Evaluator.unary,
    ast.BinOp: _Evaluator.binary,
    ast.IfExp: _Evaluator.if_else,
    ast.Call: _Evaluator.call,
    ast.List: _Evaluator.list_display,
    ast.Tuple: _Evaluator.tuple_display,
    ast.Set: _Evaluator.set_display,
    ast.Dict: _Evaluator.dictionary,
}


# --------------------------------------------------------------------------------------------
# Public API


class Expression:
    """A parsed, checked expression. Build with :meth:`parse` (cached); immutable."""

    __slots__ = ("_functions", "_references", "_source", "_text", "_tree")

    def __init__(self, text: str):
        """Parse and check `text`; prefer :meth:`parse`, which caches."""
        if not isinstance(text, str):
            raise ExpressionError(
                f"an expression must be text, not {_type_name(text)}",
                expression=repr(text),
                hint="quote the expression in the project file",
            )
        source = _Source(text)
        tree = _parse_tree(source)
        _check(source, tree)
        _check_constants(source, tree)
        self._text = text
        self._source = source
        self._references = _collect_references(tree)
        self._functions = _collect_functions(tree)
        self._tree = tree  # last: __setattr__ refuses changes once it is set

    @classmethod
    def parse(cls, text: str) -> Expression:
        """Parse `text` (the part between ``${{`` and ``}}``, or a condition); cached."""
        if cls is Expression and isinstance(text, str):
            return _parse_cached(text)
        return cls(text)

    @property
    def text(self) -> str:
        return self._text

    def references(self) -> list[tuple[str, ...]]:
        """Every chain of names and keys rooted at a context name, longest form, in text order.

        `json(steps.evaluate.outputs.metrics, "m.json").mse <= params.x` gives
        ``[("steps", "evaluate", "outputs", "metrics"), ("params", "x")]``. A chain stops before
        an index that is not a string literal (``params.layers[0]`` gives ``("params", "layers")``)
        and chains rooted at a call's result are not references. Duplicates are listed once.
        """
        return list(self._references)

    def first_reference(self) -> tuple[str, ...] | None:
        """The first reference in the text, or None."""
        return self._references[0] if self._references else None

    def is_simple_reference(self) -> bool:
        """True if the whole expression is one reference, like `steps.a.outputs.b` or `params.x`."""
        return _chain(self._tree) is not None

    def simple_reference(self) -> tuple[str, ...] | None:
        """The reference if the whole expression is one (see :meth:`is_simple_reference`)."""
        return _chain(self._tree)

    def function_names(self) -> list[str]:
        """Names of the functions the expression calls, in text order, each once."""
        return list(self._functions)

    def evaluate(
        self,
        context: Mapping[str, Any],
        functions: Mapping[str, Callable[..., Any]] | None = None,
    ) -> Any:
        """The value of the expression.

        Names are looked up in `context`; calls go to `functions` first, then to
        :data:`BUILTIN_FUNCTIONS`. Raises ExpressionError; a
        :class:`~modelyard.errors.ModelyardError` raised by one of `functions` passes unchanged.
        """
        evaluator = _Evaluator(self._source, context, functions)
        try:
            return evaluator.eval(self._tree)
        except RecursionError:
            raise self._source.error(
                "the expression is nested too deeply to evaluate", "simplify it", column=1
            ) from None

    def __reduce__(self) -> tuple[Callable[[str], Expression], tuple[str]]:
        # Pickle and copy by text: the syntax tree is rebuilt (and cached) on the other side.
        return (Expression.parse, (self._text,))

    def __repr__(self) -> str:
        return f"Expression({self._text!r})"

    def __str__(self) -> str:
        return self._text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and other._text == self._text

    def __hash__(self) -> int:
        return hash((Expression, self._text))

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_tree"):
            raise AttributeError("Expression is immutable")
        super().__setattr__(name, value)


@functools.lru_cache(maxsize=2048)
def _parse_cached(text: str) -> Expression:
    return Expression(text)


def evaluate(
    text: str,
    context: Mapping[str, Any],
    functions: Mapping[str, Callable[..., Any]] | None = None,
) -> Any:
    """Parse (cached) and evaluate `text` in one call."""
    return Expression.parse(text).evaluate(context, functions)
