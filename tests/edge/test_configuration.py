"""Effective component configuration: defaults, stored values, RESET then MERGE (Greengrass's
documented semantics, "Update component configurations")."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelyard.edge.agent.configuration import (
    ConfigurationError,
    ConfigurationUpdate,
    apply_reset,
    deep_merge,
    effective_configuration,
    parse_merge,
    parse_pointer,
)

DEFAULT: dict[str, Any] = {
    "level": "INFO",
    "limits": {"rate": 10, "burst": 20},
    "tags": ["a", "b"],
    "name": "hello",
}


def test_a_new_component_gets_its_defaults() -> None:
    assert effective_configuration(DEFAULT, None) == DEFAULT


def test_merge_is_deep_for_objects_and_replaces_everything_else() -> None:
    merged = deep_merge(
        DEFAULT, {"limits": {"rate": 5, "extra": True}, "tags": ["c"], "name": None, "new": {}}
    )

    assert merged["limits"] == {"rate": 5, "burst": 20, "extra": True}  # burst kept
    assert merged["tags"] == ["c"]  # a list is replaced whole, never appended to
    assert merged["name"] is None  # null is a value, not a deletion
    assert merged["new"] == {}
    assert merged["level"] == "INFO"


def test_merge_can_change_a_values_type() -> None:
    assert deep_merge({"a": {"b": 1}}, {"a": "flat"}) == {"a": "flat"}
    assert deep_merge({"a": "flat"}, {"a": {"b": 1}}) == {"a": {"b": 1}}


def test_inputs_are_never_modified() -> None:
    default = copy.deepcopy(DEFAULT)
    stored = {"limits": {"rate": 1}}
    update = ConfigurationUpdate(merge={"limits": {"burst": 2}}, reset=("/name",))
    result = effective_configuration(default, stored, update)
    result["limits"]["rate"] = 99

    assert default == DEFAULT
    assert stored == {"limits": {"rate": 1}}
    assert update.merge == {"limits": {"burst": 2}}


def test_stored_configuration_wins_over_defaults_and_new_defaults_are_added() -> None:
    new_default = {**DEFAULT, "added_in_v2": 1}
    stored = {"level": "DEBUG", "limits": {"rate": 1, "burst": 20}}

    result = effective_configuration(new_default, stored)

    assert result["level"] == "DEBUG"
    assert result["limits"] == {"rate": 1, "burst": 20}
    assert result["added_in_v2"] == 1


def test_reset_goes_back_to_the_default_or_removes_keys_without_one() -> None:
    current = {**DEFAULT, "level": "DEBUG", "limits": {"rate": 1, "burst": 2}, "custom": 5}

    result = apply_reset(current, DEFAULT, ["/level", "/limits/rate", "/custom", "/missing/x"])

    assert result["level"] == "INFO"
    assert result["limits"] == {"rate": 10, "burst": 2}
    assert "custom" not in result
    assert "missing" not in result


def test_reset_of_the_empty_pointer_resets_everything() -> None:
    current = {"level": "DEBUG", "custom": 1}

    assert apply_reset(current, DEFAULT, [""]) == DEFAULT


def test_reset_runs_before_merge() -> None:
    update = ConfigurationUpdate(merge={"level": "WARN"}, reset=("/level", ""))

    result = effective_configuration(DEFAULT, {"level": "DEBUG", "x": 1}, update)

    assert result["level"] == "WARN"
    assert "x" not in result


def test_a_whole_list_resets_but_an_element_of_it_does_not() -> None:
    assert apply_reset({"tags": ["z"]}, DEFAULT, ["/tags"]) == {"tags": ["a", "b"]}

    with pytest.raises(ConfigurationError) as caught:
        apply_reset({"tags": ["z", "y"]}, DEFAULT, ["/tags/0"], path="reset")

    assert caught.value.path == "reset[0]"
    assert "reset '/tags' instead" in str(caught.value)


def test_reset_recreates_an_object_the_configuration_replaced() -> None:
    result = apply_reset({"limits": 7}, DEFAULT, ["/limits/rate"])

    assert result == {"limits": {"rate": 10}}


def test_json_pointer_escapes() -> None:
    assert parse_pointer("") == ()
    assert parse_pointer("/a~1b/c~0d") == ("a/b", "c~d")
    default = {"a/b": 1}
    assert apply_reset({"a/b": 2}, default, ["/a~1b"]) == {"a/b": 1}


@pytest.mark.parametrize(
    ("pointer", "message"),
    [("level", "is not a JSON pointer"), ("/a~2", "'~' that is not an escape")],
)
def test_bad_pointers_name_the_field(pointer: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        effective_configuration(
            DEFAULT, None, ConfigurationUpdate(reset=("/ok", pointer)), path="components.x"
        )

    assert caught.value.path == "components.x.reset[1]"
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_merge_strings_must_hold_a_json_object() -> None:
    assert parse_merge('{"a": {"b": [1, null]}}') == {"a": {"b": [1, None]}}

    for text, message in [
        ("[1, 2]", "must be a JSON object, not a list"),
        ("{not json", "not valid JSON"),
        ('{"a": NaN}', "not valid JSON"),
    ]:
        with pytest.raises(ConfigurationError) as caught:
            parse_merge(text, path="components.x.configurationUpdate.merge")
        assert message in str(caught.value)
        assert caught.value.path == "components.x.configurationUpdate.merge"
