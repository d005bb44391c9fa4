"""A component's effective configuration, computed as Greengrass v2 does on a core device.

The effective configuration of a component is, in this order (developer guide, "Update component
configurations"):

1. the recipe's `DefaultConfiguration`;
2. what earlier deployments left on the device (kept across versions: a new version's defaults
   only add the keys the stored configuration does not have);
3. this deployment's RESET: each JSON pointer goes back to its default value, or is removed when
   the default has no such key; `""` resets the whole configuration. A list is reset as a whole:
   a pointer into a list element is an error;
4. this deployment's MERGE, a deep merge: objects merge key by key, anything else (lists, null,
   strings, numbers) replaces what was there, so a merge can change a value's type and can set
   null or empty values, but cannot insert into a list.

Pure functions on plain JSON values; inputs are never modified (results are deep copies), so a
rollback snapshot can't be changed behind the journal's back.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelyard.edge.agent.errors import AgentError, describe_value

MAX_MERGE_CHARS = 10_485_760  # CreateDeployment's limit on the merge string
MAX_RESET_POINTERS = 256  # and on the reset list
_BAD_ESCAPE = re.compile(r"~(?![01])")


class ConfigurationError(AgentError):
    """A configuration update that can't be applied: bad JSON, bad pointer, a list element."""

    exit_code = 2


@dataclass(frozen=True)
class ConfigurationUpdate:
    """One component's configuration update in a deployment: RESET first, then MERGE."""

    merge: Mapping[str, Any] | None = None
    reset: tuple[str, ...] = field(default_factory=tuple)

    @property
    def empty(self) -> bool:
        return not self.merge and not self.reset


def parse_pointer(pointer: str, *, path: str | None = None) -> tuple[str, ...]:
    """The reference tokens of an RFC 6901 JSON pointer; `""` (the whole document) is `()`."""
    if not isinstance(pointer, str):
        raise ConfigurationError(
            f"a JSON pointer must be a string, not {type(pointer).__name__}", path=path
        )
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ConfigurationError(
            f"{pointer!r} is not a JSON pointer",
            path=path,
            hint=f"start it with '/', e.g. '/{pointer}'; '' resets the whole configuration",
        )
    tokens = pointer[1:].split("/")
    for token in tokens:
        if _BAD_ESCAPE.search(token):
            raise ConfigurationError(
                f"{pointer!r} has a '~' that is not an escape",
                path=path,
                hint="write '~0' for '~' and '~1' for '/' inside a key",
            )
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in tokens)


def parse_merge(text: str, *, path: str | None = None) -> dict[str, Any]:
    """A MERGE given as a serialized JSON string (CreateDeployment's form): a JSON object."""
    if not isinstance(text, str):
        raise ConfigurationError(
            f"merge must be a string holding a JSON object, not {type(text).__name__}",
            path=path,
            hint='serialize it, e.g. "{\\"level\\": \\"DEBUG\\"}"',
        )
    if len(text) > MAX_MERGE_CHARS:
        raise ConfigurationError(
            f"merge is {len(text)} characters, more than the {MAX_MERGE_CHARS} allowed", path=path
        )

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON value")

    try:
        value = json.loads(text, parse_constant=no_constants)
    except ValueError as exc:
        raise ConfigurationError(
            f"merge is not valid JSON: {exc}", path=path, hint="write a JSON object"
        ) from None
    return check_merge(value, path=path)


def check_merge(value: Any, *, path: str | None = None) -> dict[str, Any]:
    """`value` if it is a JSON object of JSON values (what a MERGE must be)."""
    if not isinstance(value, dict):
        raise ConfigurationError(
            f"merge must be a JSON object, not {describe_value(value)}",
            path=path,
            hint='write the keys to set, e.g. {"level": "DEBUG"}',
        )
    _check_json(value, path or "merge")
    return value


def deep_merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `patch` merged in: objects key by key, every other value replaces."""
    result = copy.deepcopy(dict(base))
    for key, value in patch.items():
        current = result.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            result[key] = deep_merge(current, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def apply_reset(
    configuration: Mapping[str, Any],
    default: Mapping[str, Any],
    pointers: Sequence[str],
    *,
    path: str = "reset",
) -> dict[str, Any]:
    """`configuration` with each pointer reset to `default` (removed where it has none)."""
    result = copy.deepcopy(dict(configuration))
    for index, pointer in enumerate(pointers):
        where = f"{path}[{index}]"
        tokens = parse_pointer(pointer, path=where)
        if not tokens:
            result = copy.deepcopy(dict(default))
            continue
        _refuse_list_elements(result, tokens, pointer, where)
        _refuse_list_elements(default, tokens, pointer, where)
        found, value = _lookup(default, tokens)
        if found:
            _set(result, tokens, copy.deepcopy(value))
        else:
            _remove(result, tokens)
    return result


def effective_configuration(
    default: Mapping[str, Any],
    stored: Mapping[str, Any] | None,
    update: ConfigurationUpdate | None = None,
    *,
    path: str = "configurationUpdate",
) -> dict[str, Any]:
    """Defaults, then the stored configuration, then RESET, then MERGE (the module docstring)."""
    result = deep_merge(default, stored) if stored is not None else copy.deepcopy(dict(default))
    if update is None:
        return result
    result = apply_reset(result, default, update.reset, path=f"{path}.reset")
    if update.merge:
        result = deep_merge(result, update.merge)
    return result


# --- helpers ----------------------------------------------------------------------------------


def _check_json(value: Any, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigurationError(
                    f"keys must be strings, not {describe_value(key)}", path=path
                )
            _check_json(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigurationError(f"{value} is not a JSON number", path=path)
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise ConfigurationError(f"{describe_value(value)} is not a JSON value", path=path)


def _refuse_list_elements(
    document: Mapping[str, Any], tokens: tuple[str, ...], pointer: str, where: str
) -> None:
    node: Any = document
    for depth, token in enumerate(tokens):
        if isinstance(node, list):
            whole = "/" + "/".join(t.replace("~", "~0").replace("/", "~1") for t in tokens[:depth])
            raise ConfigurationError(
                f"{pointer!r} points into a list; a list is reset as a whole",
                path=where,
                hint=f"reset {whole!r} instead",
            )
        if not isinstance(node, Mapping) or token not in node:
            return
        node = node[token]


def _lookup(document: Mapping[str, Any], tokens: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = document
    for token in tokens:
        if not isinstance(node, Mapping) or token not in node:
            return False, None
        node = node[token]
    return True, node


def _set(document: dict[str, Any], tokens: tuple[str, ...], value: Any) -> None:
    node = document
    for token in tokens[:-1]:
        child = node.get(token)
        if not isinstance(child, dict):  # the default has an object here: so does the result
            child = node[token] = {}
        node = child
    node[tokens[-1]] = value


def _remove(document: dict[str, Any], tokens: tuple[str, ...]) -> None:
    node: Any = document
    for token in tokens[:-1]:
        if not isinstance(node, dict) or token not in node:
            return
        node = node[token]
    if isinstance(node, dict):
        node.pop(tokens[-1], None)
