"""IPC authorization policies read from `accessControl`: default deny, `*`, wildcards, errors."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.edge.agent.policy import (
    MQTT_PROXY_SERVICE,
    PUBLISH_TO_TOPIC,
    PUBSUB_SERVICE,
    SUBSCRIBE_TO_TOPIC,
    Policies,
    PolicyError,
    filter_covers,
    filter_problem,
    topic_matches,
    topic_problem,
)

XGB = "com.ml.xgboost"


def _config(*resources: str, operations: Any = None, service: str = PUBSUB_SERVICE) -> Any:
    return {
        "accessControl": {
            service: {
                f"{XGB}:pubsub:1": {
                    "policyDescription": "Allows access to publish/subscribe to the topics.",
                    "operations": operations or [PUBLISH_TO_TOPIC, SUBSCRIBE_TO_TOPIC],
                    "resources": list(resources),
                }
            }
        }
    }


def test_the_documented_example_allows_its_operations_on_its_topics_only() -> None:
    policies = Policies.from_configuration(XGB, _config("local/inference", "local/result"))

    assert policies.allows(XGB, PUBLISH_TO_TOPIC, "local/inference")
    assert policies.allows(XGB, SUBSCRIBE_TO_TOPIC, "local/result")
    assert not policies.allows(XGB, PUBLISH_TO_TOPIC, "local/other")
    assert not policies.allows(XGB, PUBLISH_TO_TOPIC, "local/inference/x")  # no prefix match
    assert not policies.allows("com.other", PUBLISH_TO_TOPIC, "local/inference")
    assert not policies.allows(XGB, "aws.greengrass#PublishToIoTCore", "local/inference")
    # the right operation on the right resource, but for another service
    assert not policies.allows(XGB, PUBLISH_TO_TOPIC, "local/inference", service="other.svc")
    (policy,) = policies.for_component(XGB)
    assert policy.policy_id == f"{XGB}:pubsub:1"
    assert policy.description.startswith("Allows access")


@pytest.mark.parametrize("configuration", [{}, {"accessControl": None}, {"other": 1}])
def test_without_access_control_everything_is_denied(configuration: Any) -> None:
    policies = Policies.from_configuration(XGB, configuration)

    assert len(policies) == 0
    assert not policies.allows(XGB, PUBLISH_TO_TOPIC, "anything")
    assert not policies.allows(XGB, SUBSCRIBE_TO_TOPIC, "#")


def test_a_policy_grants_only_the_operations_it_lists() -> None:
    policies = Policies.from_configuration(
        XGB, _config("local/result", operations=[SUBSCRIBE_TO_TOPIC])
    )

    assert policies.allows(XGB, SUBSCRIBE_TO_TOPIC, "local/result")
    assert not policies.allows(XGB, PUBLISH_TO_TOPIC, "local/result")


def test_star_operation_and_star_resource_allow_everything_of_the_service() -> None:
    policies = Policies.from_configuration(XGB, _config("*", operations=["*"]))

    for operation in (PUBLISH_TO_TOPIC, SUBSCRIBE_TO_TOPIC):
        for resource in ("a", "a/b/c", "a/#", "+/x", "$aws/things"):
            assert policies.allows(XGB, operation, resource)


def test_star_inside_a_resource_matches_any_run_of_characters() -> None:
    policies = Policies.from_configuration(XGB, _config("factory/1/devices/Thermostat*/status"))

    assert policies.allows(XGB, PUBLISH_TO_TOPIC, "factory/1/devices/Thermostat7/status")
    assert policies.allows(XGB, PUBLISH_TO_TOPIC, "factory/1/devices/Thermostat/status")
    # like the Greengrass nucleus, `*` is not bound to one level
    assert policies.allows(XGB, PUBLISH_TO_TOPIC, "factory/1/devices/ThermostatA/b/status")
    assert not policies.allows(XGB, PUBLISH_TO_TOPIC, "factory/1/devices/Sensor7/status")
    assert not policies.allows(XGB, PUBLISH_TO_TOPIC, "factory/1/devices/Thermostat7/status/x")


def test_escape_sequences_are_literal_and_question_mark_is_not_a_wildcard() -> None:
    policies = Policies.from_configuration(XGB, _config("a/${*}", "b/${?}", "c/${$}{x}", "d/?"))

    assert policies.allows(XGB, PUBLISH_TO_TOPIC, "a/*")
    assert not policies.allows(XGB, PUBLISH_TO_TOPIC, "a/b")
    assert policies.allows(XGB, PUBLISH_TO_TOPIC, "b/?")
    assert policies.allows(XGB, PUBLISH_TO_TOPIC, "c/${x}")
    assert policies.allows(XGB, PUBLISH_TO_TOPIC, "d/?")
    assert not policies.allows(XGB, PUBLISH_TO_TOPIC, "d/x")


def test_mqtt_wildcards_are_literal_in_local_pubsub_policies() -> None:
    # the Greengrass docs' example: test/topic/# grants the filter test/topic/#, nothing under it
    policies = Policies.from_configuration(XGB, _config("test/topic/#", "test/+/x"))

    assert policies.allows(XGB, SUBSCRIBE_TO_TOPIC, "test/topic/#")
    assert not policies.allows(XGB, SUBSCRIBE_TO_TOPIC, "test/topic/filter")
    assert not policies.allows(XGB, PUBLISH_TO_TOPIC, "test/topic/filter")
    assert policies.allows(XGB, SUBSCRIBE_TO_TOPIC, "test/+/x")
    assert not policies.allows(XGB, SUBSCRIBE_TO_TOPIC, "test/a/x")


def test_a_star_resource_covers_subscription_filters_as_text() -> None:
    policies = Policies.from_configuration(XGB, _config("sensors/*"))

    assert policies.allows(XGB, SUBSCRIBE_TO_TOPIC, "sensors/#")
    assert policies.allows(XGB, SUBSCRIBE_TO_TOPIC, "sensors/+/temp")
    assert not policies.allows(XGB, SUBSCRIBE_TO_TOPIC, "#")
    assert not policies.allows(XGB, SUBSCRIBE_TO_TOPIC, "+/temp")


def test_mqtt_proxy_policies_read_mqtt_wildcards_as_filters() -> None:
    operations = ["aws.greengrass#PublishToIoTCore", "aws.greengrass#SubscribeToIoTCore"]
    policies = Policies.from_configuration(
        XGB,
        _config("test/topic/#", "dev/+/status", operations=operations, service=MQTT_PROXY_SERVICE),
    )
    publish, subscribe = operations

    def allows(operation: str, resource: str) -> bool:
        return policies.allows(XGB, operation, resource, service=MQTT_PROXY_SERVICE)

    assert allows(subscribe, "test/topic/#")
    assert allows(publish, "test/topic/filter")
    assert allows(subscribe, "test/topic/a/+")  # a narrower filter
    assert allows(subscribe, "dev/k1/status")
    assert not allows(subscribe, "dev/#")  # wider than the policy
    assert not allows(subscribe, "dev/k1/status/x")
    assert not allows(publish, "test/other")


def test_other_services_are_accepted_with_any_operation_name() -> None:
    policies = Policies.from_configuration(
        XGB, _config("secret-arn", operations=["aws.greengrass#GetSecretValue"], service="x.svc")
    )

    assert policies.allows(XGB, "aws.greengrass#GetSecretValue", "secret-arn", service="x.svc")
    assert not policies.allows(XGB, "aws.greengrass#GetSecretValue", "secret-arn")


def _policy(**fields: Any) -> dict[str, Any]:
    return {"accessControl": {PUBSUB_SERVICE: {"p:1": fields}}}


P = f"accessControl.{PUBSUB_SERVICE}.p:1"


@pytest.mark.parametrize(
    ("configuration", "path", "hint"),
    [
        ({"accessControl": ["x"]}, "accessControl", "mapping of IPC service"),
        (
            {"accessControl": {PUBSUB_SERVICE: ["x"]}},
            f"accessControl.{PUBSUB_SERVICE}",
            "policy id",
        ),
        ({"accessControl": {PUBSUB_SERVICE: {"p:1": "x"}}}, P, "operations and resources"),
        (_policy(resources=["a"]), f"{P}.operations", "is required"),
        (_policy(operations=PUBLISH_TO_TOPIC, resources=["a"]), f"{P}.operations", "list"),
        (_policy(operations=[], resources=["a"]), f"{P}.operations", "must not be empty"),
        (
            _policy(operations=[PUBLISH_TO_TOPIC, 3], resources=["a"]),
            f"{P}.operations[1]",
            "string",
        ),
        (
            _policy(operations=["aws.greengrass#PublishTopic"], resources=["a"]),
            f"{P}.operations[0]",
            PUBLISH_TO_TOPIC,
        ),
        (_policy(operations=["*"]), f"{P}.resources", "is required"),
        (_policy(operations=["*"], resources=[""]), f"{P}.resources[0]", "non-empty"),
        (_policy(operations=["*"], resource=["a"]), f"{P}.resource", "unknown field"),
        (
            _policy(operations=["*"], resources=["a"], policyDescription=1),
            f"{P}.policyDescription",
            "string",
        ),
    ],
)
def test_malformed_access_control_names_the_field_path(
    configuration: Any, path: str, hint: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        Policies.from_configuration(XGB, configuration)

    assert caught.value.path == path
    assert str(caught.value).startswith(f"{XGB}: {path}: ")
    assert hint in str(caught.value)


def test_policy_ids_must_be_unique_among_components() -> None:
    first = Policies.from_configuration("com.a", _policy(operations=["*"], resources=["a"]))
    second = Policies.from_configuration("com.b", _policy(operations=["*"], resources=["b"]))

    with pytest.raises(PolicyError) as caught:
        Policies.merge(first, second)

    assert caught.value.component == "com.b"
    assert "com.a" in str(caught.value)
    merged = Policies.merge(first, Policies.from_configuration(XGB, _config("c")))
    assert merged.allows("com.a", PUBLISH_TO_TOPIC, "a")
    assert merged.allows(XGB, PUBLISH_TO_TOPIC, "c")
    assert not merged.allows(XGB, PUBLISH_TO_TOPIC, "a")


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a/b/c", False),
        ("+/b", "a/b", True),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("a/#", "b/a", False),
        ("#", "x/y/z", True),
        ("a/+/c", "a//c", True),
    ],
)
def test_topic_filters_match_topics_as_in_mqtt(
    topic_filter: str, topic: str, expected: bool
) -> None:
    assert topic_matches(topic_filter, topic) is expected


def test_filter_covers_compares_filters() -> None:
    assert filter_covers("a/#", "a/+/c")
    assert filter_covers("a/+", "a/+")
    assert not filter_covers("a/+", "a/#")
    assert not filter_covers("a/b", "a/+")


@pytest.mark.parametrize("bad", ["a/#/b", "a/b#", "a+/b", "", "a\x00b"])
def test_invalid_topic_filters_are_explained(bad: str) -> None:
    assert filter_problem(bad)


def test_a_topic_to_publish_to_has_no_wildcards() -> None:
    assert topic_problem("a/b") is None
    assert "wildcards" in (topic_problem("a/+") or "")
    assert "wildcards" in (topic_problem("a/#") or "")
    assert topic_problem(3) is not None
