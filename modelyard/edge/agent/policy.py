"""IPC authorization policies: which component may do which operation on which resource.

A component grants itself IPC rights in its configuration's `accessControl`, as Greengrass v2
documents it: `accessControl.<IPC service>.<policy id>` = {policyDescription, operations,
resources}. This module reads that (with errors naming the field path) and answers
`allows(component, operation, resource)`: denied unless a policy of that component, for that
service, lists the operation (or `*`) and a resource that matches.

Resource matching follows the Greengrass docs ("Wildcards in authorization policies"):
- `*` alone matches every resource; a `*` inside a resource matches any run of characters,
  `/` included (`factory/*/status`);
- `${*}`, `${?}` and `${$}` are the literal `*`, `?` and `$`; `?` is not a wildcard;
- for local pub/sub (`aws.greengrass.ipc.pubsub`) the MQTT wildcards `+` and `#` in a policy
  are literal characters: a policy for `test/#` lets a component subscribe to the filter
  `test/#`, not to `test/a`. Only a service whose docs say so (`aws.greengrass.ipc.mqttproxy`)
  reads `+`/`#` in a policy as an MQTT filter that covers topics and narrower filters.

Also here, because both the policies and the broker need them: MQTT topic and topic-filter
validation and matching. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

PUBSUB_SERVICE = "aws.greengrass.ipc.pubsub"
MQTT_PROXY_SERVICE = "aws.greengrass.ipc.mqttproxy"
PUBLISH_TO_TOPIC = "aws.greengrass#PublishToTopic"
SUBSCRIBE_TO_TOPIC = "aws.greengrass#SubscribeToTopic"
ANY = "*"
# a topic's length limit, as MQTT has it (a UTF-8 string of at most 65535 bytes)
MAX_TOPIC_BYTES = 65535


@dataclass(frozen=True)
class ServiceSpec:
    """What we know of an IPC service: its operations and how its policy resources match."""

    operations: frozenset[str]
    mqtt_wildcards: bool = False  # `+`/`#` in a policy resource are MQTT wildcards


# Services we validate operation names for. Any other service name is accepted as is (its
# operations unchecked, resources matched literally with `*`), so that adding a service to
# the agent does not need a change here first.
SERVICES: dict[str, ServiceSpec] = {
    PUBSUB_SERVICE: ServiceSpec(frozenset({PUBLISH_TO_TOPIC, SUBSCRIBE_TO_TOPIC})),
    MQTT_PROXY_SERVICE: ServiceSpec(
        frozenset({"aws.greengrass#PublishToIoTCore", "aws.greengrass#SubscribeToIoTCore"}),
        mqtt_wildcards=True,
    ),
}
_POLICY_KEYS = ("policyDescription", "operations", "resources")


class PolicyError(ValueError):
    """An `accessControl` that cannot be read; `path` is the configuration field at fault."""

    def __init__(self, component: str, path: str, problem: str) -> None:
        self.component = component
        self.path = path
        self.problem = problem
        super().__init__(f"{component}: {path}: {problem}")


@dataclass(frozen=True)
class Policy:
    """One authorization policy of one component, for one IPC service."""

    component: str
    service: str
    policy_id: str
    operations: tuple[str, ...]
    resources: tuple[str, ...]
    description: str = ""

    def allows(self, operation: str, resource: str) -> bool:
        if ANY not in self.operations and operation not in self.operations:
            return False
        mqtt = SERVICES.get(self.service, _LITERAL).mqtt_wildcards
        return any(resource_matches(pattern, resource, mqtt=mqtt) for pattern in self.resources)


_LITERAL = ServiceSpec(frozenset())


class Policies:
    """The authorization policies of one or more components; immutable.

    Build one component's with `from_configuration`, combine several with `merge` (which
    checks that policy ids are unique among all components, as Greengrass requires).
    """

    def __init__(self, policies: Iterable[Policy] = ()) -> None:
        self._policies = tuple(policies)
        self._by_component: dict[str, list[Policy]] = {}
        seen: dict[str, Policy] = {}
        for policy in self._policies:
            first = seen.setdefault(policy.policy_id, policy)
            if first is not policy:
                raise PolicyError(
                    policy.component,
                    f"accessControl.{policy.service}.{policy.policy_id}",
                    f"the policy id is already used by {first.component} "
                    f"(accessControl.{first.service}); policy ids must be unique among all "
                    f"components, e.g. prefix them with the component name "
                    f"({policy.component}:pubsub:1)",
                )
            self._by_component.setdefault(policy.component, []).append(policy)

    @classmethod
    def from_configuration(cls, component: str, configuration: Mapping[str, Any]) -> Policies:
        """The policies in `configuration["accessControl"]` (none if it is absent)."""
        if not isinstance(configuration, Mapping):
            raise PolicyError(
                component, "configuration", f"must be a mapping, not {_kind(configuration)}"
            )
        access = configuration.get("accessControl")
        if access is None:
            return cls()
        return cls(_read_access_control(component, access))

    @classmethod
    def merge(cls, *groups: Policies) -> Policies:
        return cls(p for group in groups for p in group)

    def __iter__(self) -> Iterator[Policy]:
        return iter(self._policies)

    def __len__(self) -> int:
        return len(self._policies)

    def for_component(self, component: str) -> tuple[Policy, ...]:
        return tuple(self._by_component.get(component, ()))

    def allows(
        self, component: str, operation: str, resource: str, *, service: str = PUBSUB_SERVICE
    ) -> bool:
        """Whether `component` may do `operation` on `resource`: denied unless a policy says so."""
        return any(
            policy.service == service and policy.allows(operation, resource)
            for policy in self._by_component.get(component, ())
        )


def _read_access_control(component: str, access: Any) -> list[Policy]:
    path = "accessControl"
    if not isinstance(access, Mapping):
        raise PolicyError(
            component,
            path,
            f"must be a mapping of IPC service to policies, e.g. {{{PUBSUB_SERVICE}: "
            f"{{{component}:pubsub:1: {{operations: [...], resources: [...]}}}}}}; "
            f"got {_kind(access)}",
        )
    policies: list[Policy] = []
    for service, by_id in access.items():
        service_path = f"{path}.{service}"
        if not isinstance(service, str) or not service:
            raise PolicyError(component, service_path, "an IPC service name must be a string")
        if not isinstance(by_id, Mapping):
            raise PolicyError(
                component,
                service_path,
                f"must be a mapping of policy id to policy, e.g. {{{component}:pubsub:1: "
                f"{{operations: [...], resources: [...]}}}}; got {_kind(by_id)}",
            )
        for policy_id, body in by_id.items():
            if not isinstance(policy_id, str) or not policy_id:
                raise PolicyError(
                    component, f"{service_path}.{policy_id}", "a policy id must be a string"
                )
            policies.append(_read_policy(component, service, policy_id, body))
    return policies


def _read_policy(component: str, service: str, policy_id: str, body: Any) -> Policy:
    path = f"accessControl.{service}.{policy_id}"
    if not isinstance(body, Mapping):
        raise PolicyError(
            component,
            path,
            f"must be a mapping with operations and resources lists; got {_kind(body)}",
        )
    unknown = sorted(str(key) for key in body if key not in _POLICY_KEYS)
    if unknown:
        raise PolicyError(
            component,
            f"{path}.{unknown[0]}",
            f"unknown field; a policy has only {', '.join(_POLICY_KEYS)}",
        )
    description = body.get("policyDescription", "")
    if not isinstance(description, str):
        raise PolicyError(component, f"{path}.policyDescription", "must be a string")
    spec = SERVICES.get(service)
    operations = _strings(component, f"{path}.operations", body.get("operations"))
    for index, operation in enumerate(operations):
        if spec is not None and operation != ANY and operation not in spec.operations:
            raise PolicyError(
                component,
                f"{path}.operations[{index}]",
                f"unknown operation {operation!r} for {service}; use one of "
                f"{', '.join(sorted(spec.operations))} or {ANY!r}",
            )
    resources = _strings(component, f"{path}.resources", body.get("resources"))
    return Policy(component, service, policy_id, operations, resources, description)


def _strings(component: str, path: str, value: Any) -> tuple[str, ...]:
    if value is None:
        raise PolicyError(component, path, "is required: a list of strings, e.g. ['*']")
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise PolicyError(
            component, path, f"must be a list of strings, e.g. [{value!r}]; got {_kind(value)}"
        )
    if not value:
        raise PolicyError(component, path, "must not be empty (a policy that allows nothing)")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise PolicyError(
                component, f"{path}[{index}]", f"must be a non-empty string; got {item!r}"
            )
    return tuple(value)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# ---- resource patterns -------------------------------------------------------------------

_ESCAPES = {"${*}": "*", "${?}": "?", "${$}": "$"}


@lru_cache(maxsize=4096)
def _resource_regex(pattern: str) -> re.Pattern[str] | None:
    """The regex for a resource with `*` wildcards; None when it has none (compare as is)."""
    parts: list[str] = []
    wildcard = False
    index = 0
    while index < len(pattern):
        chunk = pattern[index : index + 4]
        if chunk in _ESCAPES:
            parts.append(re.escape(_ESCAPES[chunk]))
            index += 4
            continue
        char = pattern[index]
        if char == "*":
            wildcard = True
            parts.append(".*")
        else:
            parts.append(re.escape(char))
        index += 1
    if not wildcard:
        return None
    return re.compile("".join(parts), re.DOTALL)


def _literal(pattern: str) -> str:
    for escape, char in _ESCAPES.items():
        pattern = pattern.replace(escape, char)
    return pattern


def resource_matches(pattern: str, resource: str, *, mqtt: bool = False) -> bool:
    """Whether a policy resource `pattern` covers the requested `resource`.

    With `mqtt`, `+`/`#` in the pattern are MQTT wildcards: the pattern then also covers
    every topic it matches and every filter narrower than itself.
    """
    if pattern == ANY:
        return True
    regex = _resource_regex(pattern)
    if regex is not None:
        return regex.fullmatch(resource) is not None
    literal = _literal(pattern)
    if literal == resource:
        return True
    return mqtt and is_valid_filter(literal) and filter_covers(literal, resource)


# ---- MQTT topics and filters ----------------------------------------------------------------


def topic_problem(topic: Any) -> str | None:
    """Why `topic` is not a topic one can publish to, or None if it is one."""
    problem = _string_problem(topic)
    if problem:
        return problem
    if "+" in topic or "#" in topic:
        return f"a topic to publish to cannot contain the MQTT wildcards + or #: {topic!r}"
    return None


def filter_problem(topic_filter: Any) -> str | None:
    """Why `topic_filter` is not a valid MQTT topic filter, or None if it is one."""
    problem = _string_problem(topic_filter)
    if problem:
        return problem
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return f"# must be a whole level and the last one (a/b/#): {topic_filter!r}"
        if "+" in level and level != "+":
            return f"+ must be a whole level (a/+/c): {topic_filter!r}"
    return None


def _string_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return f"a topic must be a non-empty string, not {value!r}"
    if "\x00" in value:
        return "a topic cannot contain the NUL character"
    if len(value.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        return f"a topic is at most {MAX_TOPIC_BYTES} bytes long"
    return None


def is_valid_filter(topic_filter: str) -> bool:
    return filter_problem(topic_filter) is None


def has_wildcards(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


def filter_covers(wide: str, narrow: str) -> bool:
    """Whether every topic the filter `narrow` matches is matched by the filter `wide`.

    A topic without wildcards is a filter that matches itself, so this is also "does the
    filter `wide` match the topic `narrow`". Both must be valid filters.
    """
    wide_levels = wide.split("/")
    narrow_levels = narrow.split("/")
    for index, level in enumerate(wide_levels):
        if level == "#":
            return True  # `a/#` matches `a`, `a/b`, `a/b/c`, and the filters under `a`
        if index >= len(narrow_levels):
            return False
        other = narrow_levels[index]
        if level == "+":
            if other == "#":
                return False  # `#` spans many levels, `+` only one
            continue
        if level != other:
            return False
    return len(wide_levels) == len(narrow_levels)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether a message published to `topic` is delivered to a subscription to `topic_filter`."""
    return filter_covers(topic_filter, topic)
