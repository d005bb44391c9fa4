"""Greengrass recipe variables: `{artifacts:path}`, `{configuration:/a/b}`, `{iot:thingName}`, ...

Lifecycle scripts name device paths and configuration through `{namespace:key}` variables, or
`{com.example.Dep:namespace:key}` for a direct dependency's. `interpolate` replaces them as the
Greengrass nucleus does:

- a configuration value is written as text (`null` for null), an object or array as compact JSON;
  a JSON pointer that names no node leaves the variable as written (the recipe reference says so);
- a variable of a known namespace with an unknown key, a `{name:key}` whose namespace is unknown,
  or another component's variable when that component is not a direct dependency, is an error:
  silently keeping it would run a broken script.

A known namespace is always replaced. Other brace text is an error only when it looks like a
variable (an identifier-like `name:key`, not right after a `$`), so shell text such as
`${VAR:-default}`, `{ cmd; }` or `{print $1}` stays as written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from modelyard.edge.agent.errors import RecipeError
from modelyard.edge.agent.model import Component, Lifecycle, LifecycleStep

# namespaces a component-qualified variable may use, and each one's keys
_PER_COMPONENT = {
    "artifacts": ("path", "decompressedPath"),
    "work": ("path",),
    "configuration": (),  # the key is a JSON pointer
}
_DEVICE = {"iot": ("thingName",), "kernel": ("rootPath",)}
_NAMESPACES = {**_PER_COMPONENT, **_DEVICE}

# `{...}` holding at least one colon and no whitespace or braces: a candidate variable
_CANDIDATE = re.compile(r"\{([A-Za-z0-9._-]+:[^{}\s]*)\}")
# what an (unknown) variable looks like, as opposed to shell text such as `{PORT:-8080}`
_VARIABLE_LIKE = re.compile(r"(?:[A-Za-z][\w.-]*:)?[A-Za-z]\w*:[A-Za-z/][^{}\s]*")


@dataclass(frozen=True)
class ComponentPaths:
    """Where a component's files are on the device."""

    artifacts: str  # {artifacts:path}
    decompressed: str  # {artifacts:decompressedPath}
    work: str  # {work:path}


@dataclass(frozen=True)
class VariableContext:
    """What recipe variables resolve to for one component."""

    component: str  # the component whose recipe is interpolated
    paths: Mapping[str, ComponentPaths]  # per component name (itself and its dependencies)
    configuration: Mapping[str, Mapping[str, Any]]  # effective configuration per component
    thing_name: str  # {iot:thingName}
    root_path: str  # {kernel:rootPath}
    dependencies: frozenset[str] = field(default_factory=frozenset)  # direct dependencies

    @classmethod
    def for_component(
        cls,
        component: Component,
        *,
        paths: Mapping[str, ComponentPaths],
        configuration: Mapping[str, Mapping[str, Any]],
        thing_name: str,
        root_path: str,
    ) -> VariableContext:
        """A context whose allowed dependencies are the component's own."""
        deps = frozenset(dep.name for dep in component.recipe.dependencies)
        return cls(component.name, paths, configuration, thing_name, root_path, deps)


def interpolate(text: str, context: VariableContext, *, path: str | None = None) -> str:
    """`text` with its recipe variables replaced; `path` names the field in errors."""

    def substitute(match: re.Match[str]) -> str:
        after_dollar = match.start() > 0 and text[match.start() - 1] == "$"
        value = _resolve(match.group(1), context, after_dollar, path)
        return match.group(0) if value is None else value

    return _CANDIDATE.sub(substitute, text)


def interpolate_lifecycle(
    lifecycle: Lifecycle, context: VariableContext, *, path: str = "Lifecycle"
) -> Lifecycle:
    """The lifecycle with variables replaced in scripts, Setenv values and Skipif arguments."""

    def env(values: dict[str, str], where: str) -> dict[str, str]:
        return {k: interpolate(v, context, path=f"{where}.{k}") for k, v in values.items()}

    def step(item: LifecycleStep | None, where: str) -> LifecycleStep | None:
        if item is None:
            return None
        skipif = item.skipif
        if skipif is not None:
            value = interpolate(skipif.value, context, path=f"{where}.Skipif")
            skipif = replace(skipif, value=value)
        return replace(
            item,
            script=interpolate(item.script, context, path=f"{where}.Script"),
            setenv=env(item.setenv, f"{where}.Setenv"),
            skipif=skipif,
        )

    return Lifecycle(
        setenv=env(lifecycle.setenv, f"{path}.Setenv"),
        install=step(lifecycle.install, f"{path}.Install"),
        startup=step(lifecycle.startup, f"{path}.Startup"),
        run=step(lifecycle.run, f"{path}.Run"),
        shutdown=step(lifecycle.shutdown, f"{path}.Shutdown"),
        recover=step(lifecycle.recover, f"{path}.Recover"),
    )


def _resolve(body: str, ctx: VariableContext, after_dollar: bool, path: str | None) -> str | None:
    """The value of `{body}`; None to leave it as written."""
    first, _, rest = body.partition(":")
    if first in _NAMESPACES:
        return _value(ctx.component, first, rest, body, ctx, path)
    second, _, key = rest.partition(":")
    if second in _PER_COMPONENT and rest.count(":") >= 1:
        return _value(_component(first, body, ctx, path), second, key, body, ctx, path)
    if second in _DEVICE and rest.count(":") >= 1:
        raise RecipeError(
            f"recipe variable {{{body}}}: {second} variables have no component-qualified form",
            path=path,
            hint=f"write {{{second}:{key}}}",
        )
    if after_dollar or not _VARIABLE_LIKE.fullmatch(body):
        return None  # shell text, not a recipe variable
    known = ", ".join(sorted(_NAMESPACES))
    namespace = second if ":" in rest and "." in first else first  # {com.example.Dep:ns:key}
    raise RecipeError(
        f"unknown recipe variable {{{body}}}: no namespace {namespace!r}",
        path=path,
        hint=f"namespaces are {known}, optionally prefixed by a dependency's name",
    )


def _component(name: str, body: str, ctx: VariableContext, path: str | None) -> str:
    """The component a qualified variable refers to, if the recipe may refer to it."""
    if name == ctx.component or name in ctx.dependencies:
        return name
    raise RecipeError(
        f"recipe variable {{{body}}}: {name} is not a dependency of {ctx.component}",
        path=path,
        hint=f"only direct dependencies can be referenced: add {name} to ComponentDependencies",
    )


def _value(
    component: str, ns: str, key: str, body: str, ctx: VariableContext, path: str | None
) -> str | None:
    if ns == "configuration":
        return _configuration(component, key, body, ctx, path)
    if key not in _NAMESPACES[ns]:
        known = ", ".join(f"{{{ns}:{k}}}" for k in _NAMESPACES[ns])
        raise RecipeError(f"unknown recipe variable {{{body}}}", path=path, hint=f"known: {known}")
    if ns == "iot":
        return ctx.thing_name
    if ns == "kernel":
        return ctx.root_path
    paths = ctx.paths.get(component)
    if paths is None:
        raise RecipeError(
            f"recipe variable {{{body}}}: the agent knows no paths for {component}",
            path=path,
            hint="install the dependency before the components that use it",
        )
    if ns == "work":
        return paths.work
    return paths.artifacts if key == "path" else paths.decompressed


def _configuration(
    component: str, pointer: str, body: str, ctx: VariableContext, path: str | None
) -> str | None:
    if not pointer.startswith("/"):
        raise RecipeError(
            f"recipe variable {{{body}}}: a configuration key is a JSON pointer",
            path=path,
            hint=f"start it with '/', e.g. {{configuration:/{pointer}}}",
        )
    config = ctx.configuration.get(component)
    if config is None:
        raise RecipeError(
            f"recipe variable {{{body}}}: the agent knows no configuration for {component}",
            path=path,
            hint="install the dependency before the components that use it",
        )
    node: Any = config
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")  # RFC 6901 escapes
        if isinstance(node, Mapping) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None  # no such node: Greengrass leaves the variable as written
    if isinstance(node, str):
        return node
    return json.dumps(node, separators=(",", ":"))
