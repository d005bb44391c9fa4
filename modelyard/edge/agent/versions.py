"""Dependency version ranges (npm style, via `semantic_version.NpmSpec`) and resolving a
deployment's components to one version each, transitively, with conflicts and cycles named.
AWS-provided components are checked by `builtins`, never looked for in the store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from semantic_version import NpmSpec, Version

from modelyard.edge.agent.builtins import is_builtin, require_builtins
from modelyard.edge.agent.errors import DeploymentError, RecipeError
from modelyard.edge.agent.model import (
    Recipe,
)

RANGE_HINT = "write an npm-style range, e.g. '^1.2.0', '~1.2.0', '>=1.0.0 <2.0.0' or '1.2.3'"


def version_satisfies(version: str, requirement: str) -> bool:
    """Whether `version` is in the npm-style range `requirement`."""
    try:
        return bool(Version(version) in NpmSpec(requirement))
    except ValueError as exc:
        raise RecipeError(f"cannot compare {version!r} with {requirement!r}: {exc}") from None


def _precedence(recipe: Recipe) -> tuple[Any, str]:
    return Version(recipe.version).precedence_key, recipe.version


def resolve_versions(
    roots: Mapping[str, str], available: Mapping[str, Sequence[Recipe]]
) -> dict[str, Recipe]:
    """One recipe per component a deployment needs: the highest version satisfying every range.

    `roots` are the deployment's components and ranges; the chosen recipes' dependencies add
    theirs, transitively. Choices are revised until they settle (a newly chosen version may drop
    or add requirements); there is no backtracking to lower versions of a requirer. AWS-provided
    dependencies (`aws.greengrass.*`) are checked by `builtins` and left out of the result.
    """
    for name, requirement in roots.items():
        try:
            NpmSpec(requirement)
        except ValueError:
            raise DeploymentError(
                f"the deployment's version range for {name} is invalid: {requirement!r}",
                hint=RANGE_HINT,
            ) from None
    candidates = {
        name: sorted(recipes, key=_precedence, reverse=True) for name, recipes in available.items()
    }
    chosen: dict[str, Recipe] = {}
    for _ in range(100 + sum(len(recipes) for recipes in candidates.values())):
        wanted = _requirements(roots, chosen)
        settled: dict[str, Recipe] = {}
        conflicts = []
        for name, by in wanted.items():
            if is_builtin(name):
                continue
            pick = next(
                (
                    r
                    for r in candidates.get(name, ())
                    if all(_satisfies(r, req) for req in by.values())
                ),
                None,
            )
            if pick is None:
                conflicts.append(name)
                if name in chosen:  # keep it while other choices move, so this round can settle
                    settled[name] = chosen[name]
            else:
                settled[name] = pick
        if _refs(settled) == _refs(chosen):
            if conflicts:
                raise _conflict_error(conflicts, wanted, candidates)
            break
        chosen = settled
    else:
        raise DeploymentError(
            "the version requirements do not settle: each choice changes another",
            hint="pin the versions of the components involved in the deployment",
        )
    _check_cycles(chosen)
    require_builtins({name: by for name, by in wanted.items() if is_builtin(name)})
    return chosen


def _satisfies(recipe: Recipe, requirement: str) -> bool:
    return bool(Version(recipe.version) in NpmSpec(requirement))


def _refs(chosen: Mapping[str, Recipe]) -> dict[str, str]:
    return {name: recipe.ref for name, recipe in chosen.items()}


def _requirements(
    roots: Mapping[str, str], chosen: Mapping[str, Recipe]
) -> dict[str, dict[str, str]]:
    """Component name -> {who requires it: range}, from the roots and the chosen recipes."""
    wanted: dict[str, dict[str, str]] = {
        name: {"the deployment": req} for name, req in roots.items()
    }
    for recipe in chosen.values():
        for dep in recipe.dependencies:
            wanted.setdefault(dep.name, {})[recipe.ref] = dep.version_requirement
    return wanted


def _conflict_error(
    names: list[str],
    wanted: Mapping[str, Mapping[str, str]],
    candidates: Mapping[str, Sequence[Recipe]],
) -> DeploymentError:
    problems = []
    for name in names:
        asks = ", ".join(f"{who} requires {req}" for who, req in wanted[name].items())
        versions = [recipe.version for recipe in reversed(candidates.get(name, ()))]
        if versions:
            problems.append(
                f"no version of {name} satisfies every requirement "
                f"({asks}; available: {', '.join(versions)})"
            )
        else:
            problems.append(f"no recipe for {name} ({asks})")
    return DeploymentError(
        "; ".join(problems),
        hint="add a recipe version that fits, or change the version requirements",
    )


def _check_cycles(chosen: Mapping[str, Recipe]) -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*trail[trail.index(name) :], name]
            raise DeploymentError(
                "dependency cycle: " + " -> ".join(chosen[n].ref for n in cycle),
                hint="components cannot depend on each other in a circle; remove one dependency",
            )
        state[name] = 1
        for dep in chosen[name].dependencies:
            if dep.name in chosen:
                visit(dep.name, [*trail, name])
        state[name] = 2

    for name in sorted(chosen):
        visit(name, [])
