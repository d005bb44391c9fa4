"""Deployment documents and what a deployment changes on the device.

A deployment document has the shape of Greengrass v2's CreateDeployment request, so that a
control plane can later send one unchanged:

    {"deploymentId": "...", "deploymentName"?: "...", "targetArn"?: "...",
     "components": {NAME: {"componentVersion": "1.0.0",
                           "configurationUpdate"?: {"merge": "<JSON object as a string>",
                                                    "reset": ["/json/pointer", ...]}}},
     "deploymentPolicies"?: {"failureHandlingPolicy": "ROLLBACK" | "DO_NOTHING",
                             "componentUpdatePolicy": {"action": "NOTIFY_COMPONENTS" |
                                                        "SKIP_NOTIFY_COMPONENTS",
                                                       "timeoutInSeconds": 60},
                             "configurationValidationPolicy": {"timeoutInSeconds": 30}},
     "artifactDirs"?: ["/local/folder", ...]}          <- modelyard's own, for local deployments

`components` is the device's full set of *root* components after the deployment, as for a
thing-group deployment: a root left out is removed. `local_deployment` builds one the way
`greengrass-cli deployment create` does: the current roots, plus `--merge NAME=VERSION`, minus
`--remove NAME`, with `--update-config` in the CLI's `{NAME: {"MERGE": {...}, "RESET": [...]}}`.

`plan_deployment` turns a document and the device's state into a `Plan`: the versions resolved
(dependencies included), each component's effective configuration, and which components stop
and start. `changes` is the same comparison between any two states (a rollback uses it too).
"""

from __future__ import annotations

import difflib
import json
import re
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

from semantic_version import Version

from modelyard.edge.agent.builtins import is_builtin
from modelyard.edge.agent.configuration import (
    MAX_RESET_POINTERS,
    ConfigurationError,
    ConfigurationUpdate,
    check_merge,
    effective_configuration,
    parse_merge,
    parse_pointer,
)
from modelyard.edge.agent.errors import AgentError, DeploymentError, RecipeError, describe_value
from modelyard.edge.agent.journal import DeviceState, check_deployment_id
from modelyard.edge.agent.model import Component, DependencyType, Platform, Recipe
from modelyard.edge.agent.platform import select_manifest
from modelyard.edge.agent.policy import Policies, PolicyError
from modelyard.edge.agent.variables import ComponentPaths, VariableContext, interpolate_lifecycle
from modelyard.edge.agent.versions import resolve_versions

ROLLBACK = "ROLLBACK"
DO_NOTHING = "DO_NOTHING"
NOTIFY_COMPONENTS = "NOTIFY_COMPONENTS"
SKIP_NOTIFY_COMPONENTS = "SKIP_NOTIFY_COMPONENTS"
DEFAULT_UPDATE_TIMEOUT = 60.0  # seconds components have to answer an update notice
FailureHandling = Literal["ROLLBACK", "DO_NOTHING"]
UpdateAction = Literal["NOTIFY_COMPONENTS", "SKIP_NOTIFY_COMPONENTS"]

_TOP_KEYS = (
    "deploymentId",
    "deploymentName",
    "targetArn",
    "components",
    "deploymentPolicies",
    "artifactDirs",
)
# CreateDeployment keys that only mean something to the cloud: accepted, without effect here
_CLOUD_KEYS = ("iotJobConfiguration", "tags", "parentTargetArn", "clientToken")
_COMPONENT_KEYS = ("componentVersion", "configurationUpdate", "runWith")
_UPDATE_KEYS = ("merge", "reset")
_POLICY_KEYS = ("failureHandlingPolicy", "componentUpdatePolicy", "configurationValidationPolicy")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


class DocumentError(AgentError):
    """A deployment document (or `deploy` option) that is malformed: bad input."""

    exit_code = 2


class NotDeployedError(AgentError):
    """A component the user names is not on the device."""

    exit_code = 3


# --- the document --------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentTarget:
    """One root component of a deployment: its exact version and configuration update."""

    version: str
    update: ConfigurationUpdate = field(default_factory=ConfigurationUpdate)


@dataclass(frozen=True)
class DeploymentPolicies:
    failure_handling: FailureHandling = "ROLLBACK"
    update_action: UpdateAction = "NOTIFY_COMPONENTS"
    update_timeout: float = DEFAULT_UPDATE_TIMEOUT
    # accepted for compatibility; the agent has no configuration validation IPC yet
    validation_timeout: float | None = None


@dataclass(frozen=True)
class Deployment:
    deployment_id: str
    components: Mapping[str, ComponentTarget]
    policies: DeploymentPolicies = field(default_factory=DeploymentPolicies)
    name: str | None = None
    target_arn: str | None = None
    artifact_dirs: tuple[str, ...] = ()
    document: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def roots(self) -> dict[str, str]:
        return {name: target.version for name, target in self.components.items()}


def _fail(path: str, message: str, hint: str | None = None) -> NoReturn:
    raise DocumentError(message, path=path or None, hint=hint)


def _component_path(name: str) -> str:
    return f"components[{json.dumps(name)}]"


def _mapping(value: Any, path: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(path, f"expected {what}, got {describe_value(value)}")
    return value


def _check_keys(
    node: Mapping[str, Any], path: str, known: Sequence[str], extra: Sequence[str] = ()
) -> None:
    for key in node:
        if key in known or key in extra:
            continue
        close = difflib.get_close_matches(str(key), [*known], n=1)
        lowered = {k.lower(): k for k in known}
        hint = f"did you mean {close[0]}?" if close else None
        if str(key).lower() in lowered:
            hint = f"keys are case-sensitive: write {lowered[str(key).lower()]}"
        where = f"{path}.{key}" if path else str(key)
        _fail(where, f"unknown key; known: {', '.join(known)}", hint)


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(path, f"expected a non-empty string, got {describe_value(value)}")
    return value


def _seconds(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        _fail(path, f"expected a number of seconds above 0, got {value!r}", "e.g. 60")
    return float(value)


def check_component_name(name: Any, path: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        _fail(
            path,
            f"invalid component name {name!r}",
            "use 1 to 128 letters, digits, '.', '-' or '_', e.g. com.example.HelloWorld",
        )
    return name


def check_version(value: Any, path: str) -> str:
    if not isinstance(value, str):
        _fail(path, f"expected a version string, got {describe_value(value)}", 'e.g. "1.0.0"')
    try:
        Version(value)
    except ValueError:
        _fail(
            path,
            f"not an exact semantic version: {value!r}",
            "a deployment names one version per component, e.g. 1.0.0 or 2.1.0-rc.1",
        )
    if len(value) > 64:
        _fail(path, "a component version has at most 64 characters")
    return value


def parse_deployment(document: Any) -> Deployment:
    """A validated `Deployment`; DocumentError naming the field path otherwise."""
    root = _mapping(document, "", "a deployment document: an object with deploymentId, components")
    _check_keys(root, "", _TOP_KEYS, _CLOUD_KEYS)
    if root.get("deploymentId") is None:
        _fail("deploymentId", "required, but missing", "give the deployment an id, e.g. a UUID")
    try:
        deployment_id = check_deployment_id(root["deploymentId"])
    except AgentError as exc:
        raise DocumentError(exc.message, path=exc.path, hint=exc.hint) from None
    if "components" not in root:
        _fail(
            "components",
            "required, but missing",
            "list every root component the device should run ({} removes them all)",
        )
    components = {}
    for name, spec in _mapping(
        root["components"], "components", "an object of name -> spec"
    ).items():
        here = _component_path(name)
        check_component_name(name, here)
        components[name] = _component_target(spec, here)
    title = root.get("deploymentName")
    arn = root.get("targetArn")
    return Deployment(
        deployment_id=deployment_id,
        components=components,
        policies=_policies(root.get("deploymentPolicies")),
        name=None if title is None else _string(title, "deploymentName"),
        target_arn=None if arn is None else _string(arn, "targetArn"),
        artifact_dirs=_artifact_dirs(root.get("artifactDirs")),
        document=root,
    )


def _component_target(value: Any, path: str) -> ComponentTarget:
    spec = _mapping(value, path, "an object with componentVersion")
    _check_keys(spec, path, _COMPONENT_KEYS)
    if "runWith" in spec:
        _fail(
            f"{path}.runWith",
            "runWith is not supported by modelyard-agent: components run as the agent's user",
            "remove runWith, and run the agent as the user the components need",
        )
    if spec.get("componentVersion") is None:
        _fail(f"{path}.componentVersion", "required, but missing", 'e.g. "1.0.0"')
    version = check_version(spec["componentVersion"], f"{path}.componentVersion")
    raw = spec.get("configurationUpdate")
    if raw is None:
        return ComponentTarget(version)
    here = f"{path}.configurationUpdate"
    update = _mapping(raw, here, "an object with merge and/or reset")
    _check_keys(update, here, _UPDATE_KEYS)
    try:
        merge = (
            None
            if update.get("merge") is None
            else parse_merge(update["merge"], path=f"{here}.merge")
        )
        reset = _reset_list(update.get("reset"), f"{here}.reset")
    except ConfigurationError as exc:
        raise DocumentError(exc.message, path=exc.path, hint=exc.hint) from None
    return ComponentTarget(version, ConfigurationUpdate(merge=merge, reset=reset))


def _reset_list(value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        _fail(
            path,
            f"expected a list of JSON pointers, got {describe_value(value)}",
            'e.g. ["/level"]',
        )
    if len(value) > MAX_RESET_POINTERS:
        _fail(path, f"at most {MAX_RESET_POINTERS} pointers, got {len(value)}")
    for i, pointer in enumerate(value):
        parse_pointer(pointer, path=f"{path}[{i}]")
    return tuple(value)


def _policies(value: Any) -> DeploymentPolicies:
    if value is None:
        return DeploymentPolicies()
    path = "deploymentPolicies"
    node = _mapping(value, path, "an object")
    _check_keys(node, path, _POLICY_KEYS)
    failure = node.get("failureHandlingPolicy", ROLLBACK)
    if failure not in (ROLLBACK, DO_NOTHING):
        _fail(f"{path}.failureHandlingPolicy", f"must be ROLLBACK or DO_NOTHING, got {failure!r}")
    action: Any = NOTIFY_COMPONENTS
    timeout = DEFAULT_UPDATE_TIMEOUT
    update = node.get("componentUpdatePolicy")
    if update is not None:
        here = f"{path}.componentUpdatePolicy"
        update = _mapping(update, here, "an object with action and timeoutInSeconds")
        _check_keys(update, here, ("action", "timeoutInSeconds"))
        action = update.get("action", NOTIFY_COMPONENTS)
        if action not in (NOTIFY_COMPONENTS, SKIP_NOTIFY_COMPONENTS):
            _fail(
                f"{here}.action",
                f"must be NOTIFY_COMPONENTS or SKIP_NOTIFY_COMPONENTS, got {action!r}",
            )
        if "timeoutInSeconds" in update:
            timeout = _seconds(update["timeoutInSeconds"], f"{here}.timeoutInSeconds")
    validation_timeout = None
    validation = node.get("configurationValidationPolicy")
    if validation is not None:
        here = f"{path}.configurationValidationPolicy"
        validation = _mapping(validation, here, "an object with timeoutInSeconds")
        _check_keys(validation, here, ("timeoutInSeconds",))
        if "timeoutInSeconds" in validation:
            validation_timeout = _seconds(
                validation["timeoutInSeconds"], f"{here}.timeoutInSeconds"
            )
    return DeploymentPolicies(failure, action, timeout, validation_timeout)


def _artifact_dirs(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        _fail("artifactDirs", f"expected a list of folders, got {describe_value(value)}")
    dirs = []
    for i, item in enumerate(value):
        folder = _string(item, f"artifactDirs[{i}]")
        if not folder.startswith("/"):
            _fail(f"artifactDirs[{i}]", f"{folder!r} is not an absolute path", "give the full path")
        dirs.append(folder)
    return tuple(dirs)


# --- local deployments (the CLI) -----------------------------------------------------------


def parse_update_config(
    data: Any, *, source: str = "--update-config"
) -> dict[str, ConfigurationUpdate]:
    """The CLI's `{NAME: {"MERGE": {...}, "RESET": [...]}}` as one update per component."""
    root = _mapping(data, source, 'an object {"NAME": {"MERGE": {...}, "RESET": [...]}}')
    updates = {}
    for name, spec in root.items():
        here = f"{source}.{name}"
        check_component_name(name, here)
        node = _mapping(spec, here, 'an object with "MERGE" and/or "RESET"')
        _check_keys(node, here, ("MERGE", "RESET"))
        try:
            merge = (
                None
                if node.get("MERGE") is None
                else check_merge(node["MERGE"], path=f"{here}.MERGE")
            )
            reset = _reset_list(node.get("RESET"), f"{here}.RESET")
        except ConfigurationError as exc:
            raise DocumentError(exc.message, path=exc.path, hint=exc.hint) from None
        updates[name] = ConfigurationUpdate(merge=merge, reset=reset)
    return updates


def parse_merge_option(text: str) -> tuple[str, str]:
    """`--merge NAME=VERSION` -> (name, version)."""
    name, sep, version = text.partition("=")
    if not sep or not name or not version:
        _fail(
            "--merge",
            f"expected NAME=VERSION, got {text!r}",
            "e.g. --merge com.example.Hello=1.0.0",
        )
    return check_component_name(name, "--merge"), check_version(version, f"--merge {name}")


def local_deployment(
    base_roots: Mapping[str, str],
    *,
    merge: Sequence[str] = (),
    remove: Sequence[str] = (),
    update_config: Mapping[str, ConfigurationUpdate] | None = None,
    failure_policy: FailureHandling = "ROLLBACK",
    notify_timeout: float = DEFAULT_UPDATE_TIMEOUT,
    skip_notify: bool = False,
    artifact_dirs: Sequence[str] = (),
    deployment_id: str | None = None,
) -> dict[str, Any]:
    """A deployment document from the device's roots and `deploy`'s options (validated)."""
    roots = dict(base_roots)
    merged = dict(parse_merge_option(item) for item in merge)
    for name in remove:
        if name in merged:
            _fail("--remove", f"{name} is both merged and removed", "give it in one of them only")
        if name not in roots:
            known = ", ".join(sorted(roots)) or "none"
            raise NotDeployedError(
                f"{name} is not a root component of this device (roots: {known})",
                path="--remove",
                hint="check the name with `modelyard-agent components`",
            )
        del roots[name]
    roots.update(merged)
    components: dict[str, dict[str, Any]] = {
        name: {"componentVersion": version} for name, version in sorted(roots.items())
    }
    for name, update in (update_config or {}).items():
        if name not in components:
            _fail(
                f"--update-config.{name}",
                f"{name} is not among the deployment's root components",
                f"add --merge {name}=VERSION, or remove it from the configuration update",
            )
        entry: dict[str, Any] = {}
        if update.merge is not None:
            entry["merge"] = json.dumps(update.merge, separators=(",", ":"))
        if update.reset:
            entry["reset"] = list(update.reset)
        if entry:
            components[name]["configurationUpdate"] = entry
    document: dict[str, Any] = {
        "deploymentId": deployment_id or str(uuid.uuid4()),
        "deploymentName": "local deployment",
        "components": components,
        "deploymentPolicies": {
            "failureHandlingPolicy": failure_policy,
            "componentUpdatePolicy": {
                "action": SKIP_NOTIFY_COMPONENTS if skip_notify else NOTIFY_COMPONENTS,
                "timeoutInSeconds": notify_timeout,
            },
        },
    }
    if artifact_dirs:
        document["artifactDirs"] = list(artifact_dirs)
    parse_deployment(document)  # what we write must be what the agent accepts
    return document


# --- planning ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a deployment does: the state it aims at and the components it stops and starts."""

    target: DeviceState
    components: Mapping[str, Component]  # every component of the target, manifest selected
    stop: tuple[str, ...]  # removed or changed components (they may not be running)
    start: tuple[str, ...]  # new or changed components, and those not running healthily


def dependencies_of(
    components: Mapping[str, Component],
) -> dict[str, list[tuple[str, DependencyType]]]:
    """Name -> [(dependency, HARD|SOFT)], without AWS-provided ones (the agent provides them)."""
    return {
        name: [
            (dep.name, dep.dependency_type)
            for dep in component.recipe.dependencies
            if not is_builtin(dep.name)
        ]
        for name, component in components.items()
    }


def changes(
    before: DeviceState,
    after: DeviceState,
    dependencies: Mapping[str, Sequence[tuple[str, str]]],
    unhealthy: Collection[str] = (),
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(stop, start) to go from `before` to `after`.

    A component starts when it is new, its version or configuration changed, it is in
    `unhealthy` (not running as it should), or a HARD dependency of it starts (Greengrass
    restarts hard dependents with their dependency). It stops when it starts again or is removed.
    """
    start = {
        name
        for name, version in after.components.items()
        if before.components.get(name) != version
        or dict(before.configuration.get(name, {})) != dict(after.configuration.get(name, {}))
        or name in unhealthy
    }
    grew = True
    while grew:
        hard = {
            name
            for name in after.components
            if name not in start
            and any(dep in start and kind == "HARD" for dep, kind in dependencies.get(name, ()))
        }
        start |= hard
        grew = bool(hard)
    removed = set(before.components) - set(after.components)
    stop = (start & set(before.components)) | removed
    return tuple(sorted(stop)), tuple(sorted(start))


def plan_deployment(
    deployment: Deployment,
    current: DeviceState,
    available: Mapping[str, Sequence[Recipe]],
    *,
    platform: Platform,
    unhealthy: Collection[str] = (),
) -> Plan:
    """Resolve versions, select manifests and compute configurations; nothing is changed."""
    recipes = resolve_versions(deployment.roots, available)
    components = {name: select_manifest(recipe, platform) for name, recipe in recipes.items()}
    configuration = {}
    for name, component in components.items():
        stored = current.configuration.get(name) if name in current.components else None
        target = deployment.components.get(name)
        try:
            configuration[name] = effective_configuration(
                component.recipe.default_configuration,
                stored,
                target.update if target is not None else None,
                path=f"{_component_path(name)}.configurationUpdate",
            )
        except ConfigurationError as exc:
            raise DocumentError(exc.message, path=exc.path, hint=exc.hint) from None
    state = DeviceState(
        roots=deployment.roots,
        components={name: c.version for name, c in components.items()},
        configuration=configuration,
        last_deployment_id=deployment.deployment_id,
    )
    stop, start = changes(current, state, dependencies_of(components), unhealthy)
    return Plan(state, components, stop, start)


def components_for_state(
    state: DeviceState, recipe: Callable[[str, str], Recipe], *, platform: Platform
) -> dict[str, Component]:
    """The components of a recorded state, from the store's recipes (`recipe(name, version)`)."""
    return {
        name: select_manifest(recipe(name, version), platform)
        for name, version in state.components.items()
    }


def check_plan(
    components: Mapping[str, Component],
    configuration: Mapping[str, Mapping[str, Any]],
    paths: Mapping[str, ComponentPaths],
    *,
    thing_name: str,
    root_path: str,
) -> None:
    """Refuse, before anything stops, what would only fail once started: a recipe variable that
    does not render, or accessControl policies that can't be read or clash between components."""
    policies = []
    for name in sorted(components):
        component = components[name]
        context = VariableContext.for_component(
            component,
            paths=paths,
            configuration=configuration,
            thing_name=thing_name,
            root_path=root_path,
        )
        try:
            interpolate_lifecycle(component.lifecycle, context)
        except RecipeError as exc:
            raise RecipeError(
                f"{component.recipe.ref}: {exc.message}", path=exc.path, hint=exc.hint
            ) from None
        try:
            policies.append(Policies.from_configuration(name, configuration.get(name, {})))
        except PolicyError as exc:
            raise DeploymentError(
                f"{name}: configuration.{exc.path}: {exc.problem}",
                hint="fix the component's accessControl (DefaultConfiguration or the merge)",
            ) from None
    try:
        Policies.merge(*policies)
    except PolicyError as exc:
        raise DeploymentError(f"{exc.component}: configuration.{exc.path}: {exc.problem}") from None
