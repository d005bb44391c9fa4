"""The DAG of a pipeline: who depends on whom, in which order, and which branch gates a step."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from modelyard.errors import ExpressionError
from modelyard.pipeline.expressions import Expression
from modelyard.pipeline.model import Pipeline, Step
from modelyard.pipeline.templates import expressions_in


def step_expressions(step: Step) -> Iterator[tuple[str, Expression]]:
    """(field, expression) for every expression in a step, for dependencies and lint."""
    fields: dict[str, Any] = {
        "inputs": step.inputs,
        "params": step.params,
        "env": step.env,
        "run": step.command,
        "fail": step.message if step.kind == "fail" else None,
        "approval": step.message if step.kind == "approval" else None,
    }
    for name, value in fields.items():
        if value:
            for expression in expressions_in(value):
                yield name, expression
    if step.registration is not None:
        for expression in expressions_in(list(step.registration.templated().values())):
            yield "register", expression
    if step.condition is not None:
        yield "condition", Expression.parse(step.condition)


def referenced_steps(step: Step) -> set[str]:
    names: set[str] = set()
    try:
        for _, expression in step_expressions(step):
            for ref in expression.references():
                if len(ref) >= 2 and ref[0] == "steps":
                    names.add(str(ref[1]))
    except ExpressionError:
        pass  # a malformed expression: lint reports it with its file:line
    return names


def referenced_data(step: Step) -> set[str]:
    """The data sources a step's inputs read (`${{ data.NAME }}`)."""
    names: set[str] = set()
    try:
        for field, expression in step_expressions(step):
            for ref in expression.references():
                if field == "inputs" and len(ref) >= 2 and ref[0] == "data":
                    names.add(str(ref[1]))
    except ExpressionError:
        pass  # lint reports it
    return names


@dataclass(frozen=True)
class Gate:
    """Step `condition` chose `branch` ('then' or 'else'); the gated step runs only on that one."""

    condition: str
    branch: str


class Dag:
    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline

    @cached_property
    def gates(self) -> dict[str, list[Gate]]:
        gates: dict[str, list[Gate]] = {}
        for step in self.pipeline.steps.values():
            if step.kind == "condition":
                for target in step.then:
                    gates.setdefault(target, []).append(Gate(step.name, "then"))
                for target in step.otherwise:
                    gates.setdefault(target, []).append(Gate(step.name, "else"))
        return gates

    @cached_property
    def dependencies(self) -> dict[str, frozenset[str]]:
        """Direct upstream steps of each step (names may be unknown: lint reports those)."""
        deps = {}
        for name, step in self.pipeline.steps.items():
            upstream = set(step.upstream) | referenced_steps(step)
            upstream |= {gate.condition for gate in self.gates.get(name, [])}
            deps[name] = frozenset(upstream)
        return deps

    @cached_property
    def dependents(self) -> dict[str, frozenset[str]]:
        down: dict[str, set[str]] = {name: set() for name in self.pipeline.steps}
        for name, upstream in self.dependencies.items():
            for dep in upstream:
                if dep in down:
                    down[dep].add(name)
        return {name: frozenset(d) for name, d in down.items()}

    def find_cycle(self) -> list[str] | None:
        """A cycle as a path [a, b, ..., a], or None."""
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done
        path: list[str] = []

        def visit(name: str) -> list[str] | None:
            state[name] = 1
            path.append(name)
            for dep in sorted(self.dependencies.get(name, ())):
                if dep not in self.pipeline.steps:
                    continue
                if state.get(dep) == 1:
                    return [*path[path.index(dep) :], dep]
                if dep not in state:
                    found = visit(dep)
                    if found:
                        return found
            path.pop()
            state[name] = 2
            return None

        for name in self.pipeline.steps:
            if name not in state:
                found = visit(name)
                if found:
                    return found
        return None

    @cached_property
    def order(self) -> list[str]:
        """Topological order, stable with respect to the file's order (assumes no cycle)."""
        remaining = {n: set(d) & set(self.pipeline.steps) for n, d in self.dependencies.items()}
        ordered: list[str] = []
        while remaining:
            ready = [n for n, d in remaining.items() if not d]
            if not ready:
                raise ValueError("the pipeline has a cycle")
            for name in ready:
                ordered.append(name)
                del remaining[name]
            for deps in remaining.values():
                deps.difference_update(ready)
        return ordered

    def downstream(self, name: str) -> set[str]:
        seen: set[str] = set()
        stack = [name]
        while stack:
            for child in self.dependents.get(stack.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        return seen

    def render_text(self) -> str:
        """The DAG as text: each step with the steps it waits for, in execution order."""
        lines = []
        for name in self.order:
            deps = sorted(self.dependencies[name])
            gates = self.gates.get(name, [])
            line = f"{name}"
            if deps:
                line += "  <- " + ", ".join(deps)
            if gates:
                line += "  [if " + ", ".join(f"{g.condition}:{g.branch}" for g in gates) + "]"
            lines.append(line)
        return "\n".join(lines)
