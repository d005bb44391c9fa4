"""Greengrass v2 recipes: parse and validate, pick this device's manifest, resolve versions.

A recipe (RecipeFormatVersion 2020-01-25, YAML or JSON) becomes the typed `model.Recipe`; every
mistake is a `RecipeError` naming the field path ("Manifests[0].Lifecycle.Runn") and how to fix it,
because a user edits recipes by hand and must not get a traceback. Keys are case-sensitive, as in
Greengrass, and an unknown key is an error rather than ignored: a misspelt `Run` would otherwise
deploy a component that silently does nothing.

Manifests that define no `Lifecycle` take theirs from the recipe's top-level (global) lifecycle,
resolved here for the manifest's `Selections`, so each `Manifest` carries the lifecycle it runs.
A recipe without manifests gets one for any platform (the older, top-level-lifecycle style).

Choosing this device's manifest is in `platform`, version ranges and resolution in `versions`,
artifact digests in `digests`.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import difflib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml
from semantic_version import NpmSpec, Version

from modelyard.edge.agent.digests import DIGEST_BYTES
from modelyard.edge.agent.errors import RecipeError, describe_value
from modelyard.edge.agent.model import (
    Access,
    Algorithm,
    Artifact,
    Dependency,
    Lifecycle,
    LifecycleStep,
    Manifest,
    Permission,
    Platform,
    Recipe,
    Skipif,
    Unarchive,
)
from modelyard.edge.agent.versions import RANGE_HINT

FORMAT_VERSION = "2020-01-25"
GENERIC = "aws.greengrass.generic"

_TOP_KEYS = (
    "RecipeFormatVersion",
    "ComponentName",
    "ComponentVersion",
    "ComponentDescription",
    "ComponentPublisher",
    "ComponentType",
    "ComponentDependencies",
    "ComponentConfiguration",
    "Manifests",
    "Lifecycle",
)
_MANIFEST_KEYS = ("Name", "Platform", "Lifecycle", "Artifacts", "Selections")
_LIFECYCLE_KEYS = ("Setenv", "Install", "Startup", "Run", "Shutdown", "Recover")
_STEP_KEYS = ("Script", "Timeout", "Setenv", "RequiresPrivilege", "Skipif")
_ARTIFACT_KEYS = ("URI", "Digest", "Algorithm", "Unarchive", "Permission")
_DEPENDENCY_KEYS = ("VersionRequirement", "DependencyType")
_POLICY_KEYS = ("policyDescription", "operations", "resources")
_SCHEMES = ("s3", "file", "greengrass", "docker", "https")
# the recipe's spelling -> the model's literal types
_ALGORITHMS: dict[str, Algorithm] = {
    "SHA-256": "SHA-256",
    "SHA-384": "SHA-384",
    "SHA-512": "SHA-512",
}
_UNARCHIVE: dict[str, Unarchive] = {"NONE": "NONE", "ZIP": "ZIP"}
_ACCESS: dict[str, Access] = {"NONE": "NONE", "OWNER": "OWNER", "ALL": "ALL"}
_HARD_SOFT = ("HARD", "SOFT")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
# keys Greengrass knows that a modelyard device cannot honour: (why, how to fix)
_UNSUPPORTED = {
    "ComponentSource": (
        "Lambda components are not supported by modelyard-agent",
        "package the code as a generic component with a Run script",
    ),
    "Bootstrap": (
        "the Bootstrap step is not supported by modelyard-agent (it restarts the device)",
        "do that work in Install",
    ),
}

_Selections = (
    tuple[str, ...] | None
)  # None: a manifest's lifecycle, where selection keys are errors


# --- reading text ---------------------------------------------------------------------------


def parse_recipe(
    text: str, *, source: str = "<recipe>", fmt: Literal["yaml", "json"] | None = None
) -> Recipe:
    """The recipe in `text` (YAML or JSON; sniffed when `fmt` is None), validated."""
    if fmt is None:
        fmt = "json" if text.lstrip().startswith(("{", "[")) else "yaml"
    document = _load_json(text, source) if fmt == "json" else _load_yaml(text, source)
    return _build_recipe(document, source)


def load_recipe(path: str | Path) -> Recipe:
    """The recipe in a file: format by extension (.yaml, .yml, .json), else sniffed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read recipe {path}: {exc}") from None
    suffix = path.suffix.lower()
    fmt: Literal["yaml", "json"] | None = (
        "json" if suffix == ".json" else "yaml" if suffix in (".yaml", ".yml") else None
    )
    return parse_recipe(text, source=str(path), fmt=fmt)


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys (PyYAML would silently keep the last one)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<:` merges may override keys legitimately
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        lines = text.splitlines()
        line = lines[mark.line] if mark and mark.line < len(lines) else ""
        hint = "check the indentation and quoting near that line"
        if re.search(r":\s+\{", line):
            hint = "a value that starts with { is a YAML mapping: quote it, or use a block (|)"
        elif "duplicate key" in str(exc.problem):
            hint = "a key may appear once in each mapping: keep one of them"
        raise RecipeError(f"{source}: not valid YAML{where}: {exc.problem}", hint=hint) from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source}: not valid YAML: {exc}") from None


def _load_json(text: str, source: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        mapping = dict(pairs)
        if len(mapping) < len(pairs):
            keys = [key for key, _ in pairs]
            duplicate = next(key for i, key in enumerate(keys) if key in keys[:i])
            raise RecipeError(f"{source}: not valid JSON: duplicate key {duplicate!r}")
        return mapping

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise RecipeError(
            f"{source}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None


# --- validation helpers ---------------------------------------------------------------------


def _at(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _fail(path: str, message: str, hint: str | None = None) -> NoReturn:
    raise RecipeError(message, path=path or None, hint=hint)


def _mapping(value: Any, path: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(path, f"expected {what}, got {describe_value(value)}")
    for key in value:
        if not isinstance(key, str):
            _fail(
                _at(path, str(key)),
                f"keys must be strings, got {describe_value(key)}",
                "quote the key",
            )
    return value


def _list(value: Any, path: str, what: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(path, f"expected {what}, got {describe_value(value)}")
    return value


def _unknown(
    node: Mapping[str, Any], key: str, path: str, known: Sequence[str], what: str
) -> NoReturn:
    if key in _UNSUPPORTED:
        why, fix = _UNSUPPORTED[key]
        _fail(_at(path, key), why, fix)
    lowered = {k.lower(): k for k in known}
    hint: str | None = None
    if ":" in key and node[key] is None:
        hint = f"YAML read {{{key}}} as a mapping: quote the whole value"
    elif key.lower() in lowered:
        hint = f"keys are case-sensitive: write {lowered[key.lower()]}"
    elif close := difflib.get_close_matches(key, known, n=1):
        hint = f"did you mean {close[0]}?"
    _fail(_at(path, key), f"unknown {what} key; known: {', '.join(known)}", hint)


def _check_keys(node: Mapping[str, Any], path: str, known: Sequence[str], what: str) -> None:
    for key in node:
        if key not in known:
            _unknown(node, key, path, known, what)


def _string(value: Any, path: str, *, empty: bool = True) -> str:
    if isinstance(value, str):
        if not empty and not value.strip():
            _fail(path, "must not be empty")
        return value
    hint = "quote it" if isinstance(value, int | float | datetime.date) else None
    _fail(path, f"expected a string, got {describe_value(value)}", hint)


def _choice(value: Any, path: str, choices: Sequence[str]) -> str:
    text = _string(value, path)
    if text not in choices:
        upper = text.upper()
        hint = f"values are case-sensitive: write {upper}" if upper in choices else None
        _fail(path, f"must be one of {', '.join(choices)}; got {text!r}", hint)
    return text


def _json(value: Any, path: str) -> Any:
    """Free configuration as plain JSON values (YAML dates become the text that was written)."""
    if isinstance(value, dict):
        node = _mapping(value, path, "a mapping")
        return {key: _json(item, _at(path, key)) for key, item in node.items()}
    if isinstance(value, list):
        return [_json(item, _at(path, i)) for i, item in enumerate(value)]
    if isinstance(value, datetime.date):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    _fail(
        path, f"configuration values must be JSON values, got {describe_value(value)}", "quote it"
    )


# --- building the recipe --------------------------------------------------------------------


def _build_recipe(document: Any, source: str) -> Recipe:
    if document is None:
        _fail("", f"{source}: the recipe is empty")
    root = _mapping(document, "", "a recipe: a mapping of RecipeFormatVersion, ComponentName, ...")
    _check_keys(root, "", _TOP_KEYS, "recipe")
    for key in ("RecipeFormatVersion", "ComponentName", "ComponentVersion"):
        if root.get(key) is None:
            _fail(key, "required, but missing", f"add {key} to the recipe")
    name = _component_name(root["ComponentName"], "ComponentName")
    global_raw = root.get("Lifecycle")
    global_lifecycle = _global_lifecycle(global_raw) if global_raw is not None else None
    return Recipe(
        format_version=_format_version(root["RecipeFormatVersion"]),
        name=name,
        version=_version(root["ComponentVersion"], "ComponentVersion"),
        description=_string(root.get("ComponentDescription") or "", "ComponentDescription"),
        publisher=_string(root.get("ComponentPublisher") or "", "ComponentPublisher"),
        type=_component_type(root.get("ComponentType")),
        dependencies=_dependencies(root.get("ComponentDependencies"), name),
        default_configuration=_configuration(root.get("ComponentConfiguration")),
        manifests=_manifests(root.get("Manifests"), global_raw),
        global_lifecycle=global_lifecycle,
        source=source,
    )


def _format_version(value: Any) -> str:
    if isinstance(value, datetime.date):  # unquoted in YAML: the same thing, meant as text
        value = value.isoformat()
    if value != FORMAT_VERSION:
        _fail(
            "RecipeFormatVersion",
            f"unsupported recipe format {value!r}; the only format is {FORMAT_VERSION}",
            f"write RecipeFormatVersion: '{FORMAT_VERSION}'",
        )
    return FORMAT_VERSION


def _component_name(value: Any, path: str) -> str:
    name = _string(value, path)
    if not _NAME.fullmatch(name) or name in (".", ".."):  # names become folder names
        _fail(
            path,
            f"invalid component name {name!r}",
            "use 1 to 128 letters, digits, '.', '-' or '_', e.g. com.example.HelloWorld",
        )
    return name


def _version(value: Any, path: str) -> str:
    if not isinstance(value, str):
        _fail(
            path,
            f"expected a version string, got {describe_value(value)}",
            "quote it, e.g. '1.0.0'",
        )
    try:
        Version(value)
    except ValueError:
        _fail(
            path,
            f"not a semantic version MAJOR.MINOR.PATCH[-prerelease][+build]: {value!r}",
            "write e.g. '1.0.0' or '2.1.0-rc.1'",
        )
    if len(value) > 64:
        _fail(path, "a component version has at most 64 characters")
    return value


def _component_type(value: Any) -> str:
    if value is None:
        return GENERIC
    kind = _string(value, "ComponentType")
    if kind != GENERIC:
        _fail(
            "ComponentType",
            f"component type {kind!r} is not supported by modelyard-agent; only {GENERIC}",
            "remove ComponentType: Greengrass sets it, and generic is the default",
        )
    return kind


def _range(value: Any, path: str) -> str:
    if not isinstance(value, str):
        _fail(
            path,
            f"expected a version range, got {describe_value(value)}",
            "quote it, e.g. '^1.0.0'",
        )
    if not value.strip():
        _fail(path, "an empty version range", "write '*' to accept any version")
    try:
        NpmSpec(value)
    except ValueError:
        _fail(path, f"not a valid npm-style version range: {value!r}", RANGE_HINT)
    return value


def _dependencies(value: Any, component: str) -> tuple[Dependency, ...]:
    if value is None:
        return ()
    path = "ComponentDependencies"
    node = _mapping(value, path, "a mapping of component name -> {VersionRequirement, ...}")
    deps = []
    for name, spec in node.items():
        here = _at(path, name)
        _component_name(name, here)
        if name == component:
            _fail(here, "a component cannot depend on itself")
        spec = _mapping(spec, here, "a mapping with VersionRequirement and DependencyType")
        _check_keys(spec, here, _DEPENDENCY_KEYS, "dependency")
        if spec.get("VersionRequirement") is None:
            _fail(_at(here, "VersionRequirement"), "required, but missing", RANGE_HINT)
        requirement = _range(spec["VersionRequirement"], _at(here, "VersionRequirement"))
        kind = spec.get("DependencyType")
        kind = "HARD" if kind is None else _choice(kind, _at(here, "DependencyType"), _HARD_SOFT)
        deps.append(Dependency(name, requirement, "SOFT" if kind == "SOFT" else "HARD"))
    return tuple(deps)


def _configuration(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    path = "ComponentConfiguration"
    node = _mapping(value, path, "a mapping with DefaultConfiguration")
    _check_keys(node, path, ("DefaultConfiguration",), "component configuration")
    raw = node.get("DefaultConfiguration")
    if raw is None:
        return {}
    here = _at(path, "DefaultConfiguration")
    config = _json(_mapping(raw, here, "a JSON object"), here)
    if "accessControl" in config:
        _access_control(config["accessControl"], _at(here, "accessControl"))
    return dict(config)


def _access_control(value: Any, path: str) -> None:
    """accessControl: IPC service -> policy ID -> {policyDescription, operations, resources}."""
    services = _mapping(value, path, "a mapping of IPC service -> policies")
    for service, policies in services.items():
        service_path = _at(path, service)
        policies = _mapping(policies, service_path, "a mapping of policy ID -> policy")
        for policy_id, policy in policies.items():
            here = _at(service_path, policy_id)
            what = "a policy: policyDescription, operations, resources"
            policy = _mapping(policy, here, what)
            _check_keys(policy, here, _POLICY_KEYS, "authorization policy")
            if policy.get("policyDescription") is not None:
                _string(policy["policyDescription"], _at(here, "policyDescription"))
            for key in ("operations", "resources"):
                if policy.get(key) is None:
                    _fail(_at(here, key), "required, but missing", f"list the allowed {key}")
                items = _list(policy[key], _at(here, key), f"a list of {key}")
                if not items:
                    _fail(_at(here, key), "must list at least one entry ('*' for all)")
                for i, item in enumerate(items):
                    _string(item, _at(_at(here, key), i), empty=False)


# --- manifests and lifecycles ---------------------------------------------------------------


def _manifests(value: Any, global_raw: Any) -> tuple[Manifest, ...]:
    items = [] if value is None else _list(value, "Manifests", "a list of manifests")
    manifests = [_manifest(item, f"Manifests[{i}]", global_raw) for i, item in enumerate(items)]
    if not manifests:  # the older style: one lifecycle for every platform
        lifecycle = (
            Lifecycle() if global_raw is None else _lifecycle(global_raw, "Lifecycle", ("all",))
        )
        manifests.append(Manifest(platform=Platform(), lifecycle=lifecycle))
    return tuple(manifests)


def _manifest(value: Any, path: str, global_raw: Any) -> Manifest:
    node = _mapping(value, path, "a manifest: a mapping of Platform, Lifecycle, Artifacts, ...")
    _check_keys(node, path, _MANIFEST_KEYS, "manifest")
    name = node.get("Name")
    platform = node.get("Platform")
    selections = _selections(node.get("Selections"), _at(path, "Selections"))
    if node.get("Lifecycle") is not None:
        lifecycle = _lifecycle(node["Lifecycle"], _at(path, "Lifecycle"), None)
    elif global_raw is not None:
        lifecycle = _lifecycle(global_raw, "Lifecycle", selections or ("all",))
    else:
        lifecycle = Lifecycle()
    return Manifest(
        platform=Platform() if platform is None else _platform(platform, _at(path, "Platform")),
        lifecycle=lifecycle,
        artifacts=_artifacts(node.get("Artifacts"), _at(path, "Artifacts")),
        name=None if name is None else _string(name, _at(path, "Name")),
    )


def _selections(value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = _list(value, path, "a list of selection keys")
    return tuple(_string(item, _at(path, i), empty=False) for i, item in enumerate(items))


def _platform(value: Any, path: str) -> Platform:
    node = _mapping(value, path, "a mapping such as {os: linux, architecture: amd64}")
    for key, item in node.items():
        here = _at(path, key)
        text = _string(item, here, empty=False)
        if text == "*":
            continue
        if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
            try:
                re.compile(text[1:-1])
            except re.error as exc:
                _fail(here, f"invalid regular expression {text}: {exc}")
        elif not text[0].isalnum():
            _fail(here, f"invalid platform value {text!r}", "write a value, '*', or a /regex/")
    attributes = {k: v for k, v in node.items() if k not in ("os", "architecture")}
    return Platform(
        os=None if node.get("os", "*") == "*" else node["os"],
        architecture=None if node.get("architecture", "*") == "*" else node["architecture"],
        attributes=attributes,
    )


def _global_lifecycle(raw: Any) -> Lifecycle:
    """Validate every selection of the top-level lifecycle; its `all` selection is the result."""
    for key in sorted(_selection_keys(raw) - {"all"}):
        _lifecycle(raw, "Lifecycle", (key,))
    return _lifecycle(raw, "Lifecycle", ("all",))


def _selection_keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        keys = {k for k in node if isinstance(k, str) and k[:1].islower()}
        for item in node.values():
            keys |= _selection_keys(item)
        return keys
    if isinstance(node, list):
        return set().union(*(_selection_keys(item) for item in node))
    return set()


def _flatten(
    node: dict[str, Any], path: str, sel: _Selections, known: Sequence[str], what: str
) -> dict[str, tuple[Any, str]]:
    """Known key -> (value, its path), with the chosen selection keys' sections merged in.

    With `sel` None (a manifest's lifecycle) every key must be known. In the global lifecycle a
    key starting in lower case is a selection key (Greengrass's lifecycle keys are capitalised):
    the first of the manifest's selections present is used, and its section wins over unkeyed ones.
    """
    items = {}
    for key, value in node.items():
        if key in known:
            items[key] = (value, _at(path, key))
        elif sel is None or not key[:1].islower() or key.lower() in map(str.lower, known):
            _unknown(node, key, path, known, what)  # `run` is a misspelt Run, not a selection
    chosen = next((key for key in sel or () if key in node and key not in known), None)
    if chosen is not None:
        here = _at(path, chosen)
        section = node[chosen]
        if isinstance(section, str) and "Script" in known:  # `Install: {key1: script}`
            items["Script"] = (section, here)
        else:
            section = _mapping(section, here, f"a {what} section")
            items.update(_flatten(section, here, sel, known, what))
    return items


def _pick(item: tuple[Any, str], sel: _Selections) -> tuple[Any, str] | None:
    """A value, or in the global lifecycle the chosen entry of a {selection: value} mapping."""
    value, path = item
    while sel is not None and isinstance(value, dict):
        key = next((key for key in sel if key in value), None)
        if key is None:
            return None
        value, path = value[key], _at(path, key)
    return value, path


def _lifecycle(value: Any, path: str, sel: _Selections) -> Lifecycle:
    node = _mapping(value, path, f"a mapping of {', '.join(_LIFECYCLE_KEYS)}")
    items = _flatten(node, path, sel, _LIFECYCLE_KEYS, "lifecycle")
    steps = {key: _step(items[key], sel) for key in _LIFECYCLE_KEYS[1:] if key in items}
    if steps.get("Startup") and steps.get("Run"):
        _fail(
            path,
            "defines both Startup and Run; a component has only one of them",
            "Startup for a background service its dependants wait for, Run for its process",
        )
    return Lifecycle(
        setenv=_env(*items["Setenv"], sel) if "Setenv" in items else {},
        install=steps.get("Install"),
        startup=steps.get("Startup"),
        run=steps.get("Run"),
        shutdown=steps.get("Shutdown"),
        recover=steps.get("Recover"),
    )


def _step(item: tuple[Any, str], sel: _Selections) -> LifecycleStep | None:
    value, path = item
    if isinstance(value, str):
        return LifecycleStep(script=value)
    what = f"a script, or a mapping of {', '.join(_STEP_KEYS)}"
    items = _flatten(_mapping(value, path, what), path, sel, _STEP_KEYS, "lifecycle step")
    picked = {key: _pick(entry, sel) for key, entry in items.items() if key != "Setenv"}
    fields = {key: entry for key, entry in picked.items() if entry is not None}
    if "Script" not in fields:
        if sel is not None:
            return None  # this manifest's selections leave the step out
        _fail(_at(path, "Script"), "required, but missing: a step runs a Script")
    timeout = fields.get("Timeout")
    privileged = fields.get("RequiresPrivilege")
    skipif = fields.get("Skipif")
    return LifecycleStep(
        script=_string(*fields["Script"]),
        timeout=None if timeout is None else _timeout(*timeout),
        setenv=_env(*items["Setenv"], sel) if "Setenv" in items else {},
        requires_privilege=False if privileged is None else _boolean(*privileged),
        skipif=None if skipif is None else _skipif(*skipif),
    )


def _env(value: Any, path: str, sel: _Selections) -> dict[str, str]:
    node = _mapping(value, path, "a mapping of environment variable -> value")
    env: dict[str, str] = {}
    for key, item in node.items():
        here = _at(path, key)
        if sel is not None and isinstance(item, dict):
            continue  # a selection key
        if not key or "=" in key or "\0" in key:
            _fail(here, f"invalid environment variable name {key!r}")
        if isinstance(item, bool) or item is None or not isinstance(item, str | int | float):
            hint = f"quote it: '{str(item).lower()}'" if isinstance(item, bool) else "quote it"
            _fail(here, f"expected a string value, got {describe_value(item)}", hint)
        env[key] = str(item)
    chosen = next((k for k in sel or () if isinstance(node.get(k), dict)), None)
    if chosen is not None:
        env.update(_env(node[chosen], _at(path, chosen), sel))
    return env


def _timeout(value: Any, path: str) -> float:
    number: Any = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            _fail(path, f"expected a number of seconds, got {value!r}", "e.g. Timeout: 120")
    if isinstance(number, bool) or not isinstance(number, int | float):
        _fail(
            path, f"expected a number of seconds, got {describe_value(value)}", "e.g. Timeout: 120"
        )
    if not number > 0:
        _fail(path, f"must be more than 0 seconds, got {value}")
    return float(number)


def _boolean(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    _fail(path, f"expected true or false, got {describe_value(value)}")


def _skipif(value: Any, path: str) -> Skipif:
    text = _string(value, path)
    kind, _, argument = text.strip().partition(" ")
    if kind not in ("onpath", "exists") or not argument.strip():
        _fail(
            path,
            f"expected 'onpath <program>' or 'exists <file>', got {text!r}",
            "e.g. Skipif: onpath python3",
        )
    return Skipif("onpath" if kind == "onpath" else "exists", argument.strip())


def _artifacts(value: Any, path: str) -> tuple[Artifact, ...]:
    if value is None:
        return ()
    artifacts = []
    names: dict[str, int] = {}
    for i, item in enumerate(_list(value, path, "a list of artifacts")):
        artifact = _artifact(item, _at(path, i))
        if not artifact.is_docker:
            if artifact.file_name in names:
                _fail(
                    _at(_at(path, i), "URI"),
                    f"file name {artifact.file_name} is already used by "
                    f"Artifacts[{names[artifact.file_name]}]",
                    "each artifact of a manifest needs its own file name",
                )
            names[artifact.file_name] = i
        artifacts.append(artifact)
    return tuple(artifacts)


def _artifact(value: Any, path: str) -> Artifact:
    node = _mapping(value, path, "an artifact: a mapping with URI")
    _check_keys(node, path, _ARTIFACT_KEYS, "artifact")
    if node.get("URI") is None:
        _fail(_at(path, "URI"), "required, but missing", "e.g. URI: s3://bucket/path/file.py")
    uri = _uri(node["URI"], _at(path, "URI"))
    algorithm = _choice(node.get("Algorithm") or "SHA-256", _at(path, "Algorithm"), [*_ALGORITHMS])
    digest = node.get("Digest")
    if digest is not None:
        digest = _digest(digest, _at(path, "Digest"), algorithm)
    unarchive = _choice(node.get("Unarchive") or "NONE", _at(path, "Unarchive"), [*_UNARCHIVE])
    return Artifact(
        uri=uri,
        digest=digest,
        algorithm=_ALGORITHMS[algorithm],
        unarchive=_UNARCHIVE[unarchive],
        permission=_permission(node.get("Permission"), _at(path, "Permission")),
    )


def _uri(value: Any, path: str) -> str:
    uri = _string(value, path, empty=False).strip()
    scheme, colon, rest = uri.partition(":")
    if missing := re.match(r"(s3|https|file)//", uri):  # a typo even the Greengrass docs make
        name = missing.group(1)
        _fail(path, f"malformed {name} URI {uri!r}: no ':' after {name}", f"write {name}://...")
    if not colon or scheme.lower() not in _SCHEMES:
        hint = "use https" if scheme.lower() == "http" else None
        _fail(path, f"unsupported artifact URI {uri!r}; schemes: {', '.join(_SCHEMES)}", hint)
    scheme = scheme.lower()
    if scheme in ("s3", "https"):
        host, _, key = rest.removeprefix("//").partition("/")
        if not rest.startswith("//") or not host or not key:
            where = "bucket/key" if scheme == "s3" else "host/path"
            _fail(path, f"malformed {scheme} URI {uri!r}", f"write {scheme}://{where}")
    elif not rest.strip("/") or any(c.isspace() for c in rest):
        _fail(path, f"malformed {scheme} URI {uri!r}", "name the file or image after the scheme")
    return uri


def _digest(value: Any, path: str, algorithm: str) -> str:
    digest = _string(value, path, empty=False)
    size = DIGEST_BYTES[algorithm]
    try:
        raw = base64.b64decode(digest, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        hint = "write the base64 of the hash, as Greengrass does"
        if re.fullmatch(r"[0-9a-fA-F]+", digest) and len(digest) == 2 * size:
            hint = "this looks like hex: Greengrass writes the base64 of the hash"
        _fail(path, f"not a base64 {algorithm} digest: {digest!r}", hint)
    return digest


def _permission(value: Any, path: str) -> Permission:
    if value is None:
        return Permission()
    node = _mapping(value, path, "a mapping with Read and Execute")
    _check_keys(node, path, ("Read", "Execute"), "permission")
    read = _choice(node.get("Read") or "OWNER", _at(path, "Read"), [*_ACCESS])
    execute = _choice(node.get("Execute") or "NONE", _at(path, "Execute"), [*_ACCESS])
    return Permission(read=_ACCESS[read], execute=_ACCESS[execute])
