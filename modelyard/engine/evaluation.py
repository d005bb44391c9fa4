"""The values expressions see while a run advances: params, step outputs and values, run facts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from modelyard.errors import ArtifactError, ExpressionError
from modelyard.pipeline.expressions import Expression
from modelyard.store.artifacts import ArtifactRef, ArtifactStore
from modelyard.store.runs import RunRow, StepRow


@dataclass(frozen=True)
class OutputHandle:
    """An output of a finished step, as seen by an expression (`json(steps.a.outputs.b, ...)`)."""

    __expression_attributes__ = frozenset({"digest", "kind", "size"})

    ref: ArtifactRef

    @property
    def digest(self) -> str:
        return self.ref.digest

    @property
    def kind(self) -> str:
        return self.ref.kind

    @property
    def size(self) -> int:
        return self.ref.size

    def __str__(self) -> str:
        return self.ref.digest


@dataclass(frozen=True)
class DataHandle:
    """A data version the run reads (`${{ data.SOURCE }}`): the source and its manifest digest."""

    __expression_attributes__ = frozenset({"source", "digest"})

    source: str
    digest: str

    def __str__(self) -> str:
        return self.digest


def expression_context(run: RunRow, steps: dict[str, StepRow]) -> dict[str, Any]:
    step_view = {}
    for name, row in steps.items():
        outputs = {
            k: OutputHandle(ArtifactRef.from_json(v)) for k, v in (row.outputs or {}).items()
        }
        step_view[name] = {"outputs": outputs, "values": row.values or {}, "status": row.status}
    return {
        "params": run.params,
        "steps": step_view,
        "run": {"id": run.id, "pipeline": run.pipeline, "project": run.project},
        "data": {name: DataHandle(name, d) for name, d in (run.data_versions or {}).items()},
    }


def expression_functions(store: ArtifactStore) -> dict[str, Any]:
    def json_get(artifact: Any, path: str | None = None) -> Any:
        """Parse a JSON file of an output (like SageMaker's JsonGet on evaluation.json)."""
        if not isinstance(artifact, OutputHandle):
            raise ArtifactError(
                "json() takes a step output, e.g. json(steps.evaluate.outputs.metrics, "
                "'evaluation.json')"
            )
        ref = artifact.ref
        data = store.read_file(ref, path if ref.kind == "dir" else None)
        try:
            return json.loads(data)
        except json.JSONDecodeError as exc:
            raise ArtifactError(
                f"'{path or ref.digest}' is not valid JSON: {exc.msg} (line {exc.lineno})"
            ) from None

    return {"json": json_get}


def evaluate(expression: Expression, context: dict[str, Any], store: ArtifactStore) -> Any:
    try:
        return expression.evaluate(context, expression_functions(store))
    except ArtifactError as exc:
        raise ExpressionError(
            f"in '{expression.text}': {exc.message}", expression=expression.text
        ) from None


def explain(expression: Expression, context: dict[str, Any], store: ArtifactStore) -> str:
    """The values of the non-constant operands of the comparisons in a condition, for the record:
    `json(...).mse.value = 5.21, params.mse_threshold = 6.0`."""
    import ast

    text = expression.text
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        return ""
    source = text.strip()
    shown: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        for operand in (node.left, *node.comparators):
            segment = ast.get_source_segment(source, operand)
            if segment is None or isinstance(operand, ast.Constant):
                continue
            try:
                value = Expression.parse(segment).evaluate(context, expression_functions(store))
            except (ExpressionError, ArtifactError):
                continue
            shown.append(f"{' '.join(segment.split())} = {value!r}")
    return ", ".join(dict.fromkeys(shown))
