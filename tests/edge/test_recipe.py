"""Recipes: validation with field paths, manifest selection, versions, builtins, digests."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.edge.agent.builtins import (
    check_builtin,
    check_builtins,
    check_docker_artifacts,
    require_builtins,
)
from modelyard.edge.agent.digests import (
    artifact_digest,
    verify_artifact,
    verify_component_artifacts,
)
from modelyard.edge.agent.errors import ArtifactError, DeploymentError, RecipeError
from modelyard.edge.agent.model import Dependency, Permission, Platform, Recipe, Skipif
from modelyard.edge.agent.platform import current_platform, select_manifest
from modelyard.edge.agent.recipe import load_recipe, parse_recipe
from modelyard.edge.agent.versions import resolve_versions, version_satisfies

RECIPES = Path(__file__).parent / "recipes"
LINUX = Platform(os="linux", architecture="amd64")

BASE: dict[str, Any] = {
    "RecipeFormatVersion": "2020-01-25",
    "ComponentName": "com.example.Base",
    "ComponentVersion": "1.0.0",
    "ComponentDependencies": {"com.example.Other": {"VersionRequirement": "^1.0.0"}},
    "ComponentConfiguration": {
        "DefaultConfiguration": {
            "accessControl": {
                "aws.greengrass.ipc.pubsub": {
                    "p1": {
                        "operations": ["aws.greengrass#PublishToTopic"],
                        "resources": ["local/x"],
                    }
                }
            }
        }
    },
    "Manifests": [
        {
            "Platform": {"os": "linux"},
            "Lifecycle": {"Install": {"Script": "true"}, "Run": {"Script": "echo hi"}},
            "Artifacts": [{"URI": "s3://bucket/app.py"}, {"URI": "s3://bucket/data.json"}],
        }
    ],
}
DELETE = object()


def mutated(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """BASE with the value at `path` replaced (or deleted)."""
    doc = copy.deepcopy(BASE)
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


def dump(doc: Any, fmt: str) -> str:
    return json.dumps(doc) if fmt == "json" else yaml.safe_dump(doc, sort_keys=False)


def recipe(name: str, version: str, deps: dict[str, str] | None = None, **extra: Any) -> Recipe:
    doc = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "ComponentDependencies": {
            dep: {"VersionRequirement": req} for dep, req in (deps or {}).items()
        },
        **extra,
    }
    return parse_recipe(json.dumps(doc), fmt="json")


def store(*recipes: Recipe) -> dict[str, list[Recipe]]:
    available: dict[str, list[Recipe]] = {}
    for item in recipes:
        available.setdefault(item.name, []).append(item)
    return available


def versions(resolved: dict[str, Recipe]) -> dict[str, str]:
    return {name: item.version for name, item in resolved.items()}


@pytest.fixture
def no_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


# --- parsing ------------------------------------------------------------------------------


def test_yaml_and_json_give_the_same_recipe() -> None:
    from_yaml = load_recipe(RECIPES / "hello.yaml")
    from_json = load_recipe(RECIPES / "hello.json")
    assert from_yaml.source == str(RECIPES / "hello.yaml")
    assert replace(from_yaml, source=None) == replace(from_json, source=None)

    # and the typed values are what the recipe says
    assert from_yaml.format_version == "2020-01-25"  # unquoted in YAML: a date, read as text
    assert from_yaml.version == "1.2.3-rc.1+build.5"
    assert from_yaml.dependencies == (
        Dependency("com.example.Lib", ">=1.0.0 <2.0.0", "SOFT"),
        Dependency("aws.greengrass.Nucleus", "^2.0.0", "HARD"),
    )
    assert from_yaml.default_configuration["Limits"] == {
        "rate": 10,
        "ratio": 0.5,
        "enabled": True,
        "tags": ["a", "b"],
        "none": None,
    }
    first = from_yaml.manifests[0]
    assert first.name == "Linux x86-64"
    assert first.platform == Platform("linux", "amd64", {"com.example.gpu": "*"})
    lifecycle = first.lifecycle
    assert lifecycle.setenv == {"GREETING": "hello", "PORT": "8080"}
    assert lifecycle.install is not None
    assert lifecycle.install.timeout == 300.0
    assert lifecycle.install.requires_privilege is True
    assert lifecycle.install.skipif == Skipif("exists", "/opt/hello/.installed")
    assert lifecycle.install.setenv == {"PIP_NO_CACHE_DIR": "1"}
    assert lifecycle.shutdown is not None and lifecycle.shutdown.script == "echo bye"
    assert lifecycle.recover is not None and lifecycle.recover.timeout == 30.5
    hello_py, models = first.artifacts
    assert hello_py.permission == Permission(read="ALL", execute="OWNER")
    assert hello_py.digest == "uAeSM2FWx7D3/gLu7yRhDS1SoQ0YEDl3REcdHcVzgYA="
    assert (models.unarchive, models.file_name) == ("ZIP", "models.zip")
    assert from_yaml.manifests[1].platform.os == "/darwin|windows/"
    assert from_yaml.manifests[2].platform == Platform()


def test_format_is_taken_from_the_extension_or_sniffed(tmp_path: Path) -> None:
    text = (RECIPES / "hello.json").read_text()
    (tmp_path / "recipe.txt").write_text(text)
    (tmp_path / "other.txt").write_text((RECIPES / "hello.yaml").read_text())
    sniffed_json = load_recipe(tmp_path / "recipe.txt")
    sniffed_yaml = load_recipe(tmp_path / "other.txt")
    assert replace(sniffed_json, source=None) == replace(sniffed_yaml, source=None)
    # a .json file is read as JSON even though YAML would accept it too
    (tmp_path / "bad.json").write_text(text.replace('"Says hello",', '"Says hello"'))
    with pytest.raises(RecipeError, match="not valid JSON at line 6"):
        load_recipe(tmp_path / "bad.json")
    with pytest.raises(RecipeError, match="cannot read recipe"):
        load_recipe(tmp_path / "missing.yaml")


def test_scenario_s3_recipes_parse() -> None:
    xgboost = load_recipe(RECIPES / "com.ml.xgboost-1.0.0.yaml")
    policies = xgboost.default_configuration["accessControl"]["aws.greengrass.ipc.pubsub"]
    assert policies["com.ml.xgboost:pubsub:1"]["operations"] == [
        "aws.greengrass#SubscribeToTopic",
        "aws.greengrass#PublishToTopic",
    ]
    assert policies["com.ml.xgboost:pubsub:1"]["resources"] == ["local/inference", "local/result"]
    run = xgboost.manifests[0].lifecycle.run
    assert run is not None and run.script.startswith("python3 -u {artifacts:path}/serve.py")
    assert [a.file_name for a in xgboost.manifests[0].artifacts] == ["serve.py", "model.json"]

    docker = load_recipe(RECIPES / "com.ml.xgboost-2.0.0-docker.yaml")
    assert docker.manifests[0].artifacts[0].is_docker
    assert docker.dependencies[0].name == "aws.greengrass.DockerApplicationManager"

    consumer = load_recipe(RECIPES / "com.ml.consumer-1.0.0.yaml")
    lifecycle = consumer.manifests[0].lifecycle
    assert lifecycle.install is not None
    assert lifecycle.install.script == "pip3 install --user numpy"
    assert lifecycle.run is not None
    assert lifecycle.run.script.startswith("python3 -u {artifacts:path}/consumer.py")
    assert [a.file_name for a in consumer.manifests[0].artifacts] == [
        "consumer.py",
        "samples.json",
    ]
    assert consumer.dependencies == (Dependency("com.ml.xgboost", "^1.0.0", "HARD"),)


def test_the_base_recipe_of_the_error_cases_is_valid() -> None:
    for fmt in ("yaml", "json"):
        parsed = parse_recipe(dump(BASE, fmt))
        assert parsed.ref == "com.example.Base=1.0.0"


ACL = ("ComponentConfiguration", "DefaultConfiguration", "accessControl")
ACL_PATH = "ComponentConfiguration.DefaultConfiguration.accessControl.aws.greengrass.ipc.pubsub.p1"
M0 = ("Manifests", 0)
LC = (*M0, "Lifecycle")
A0 = (*M0, "Artifacts", 0)

ERROR_CASES = [
    (("RecipeFormatVersion",), DELETE, "RecipeFormatVersion", "required, but missing"),
    (("RecipeFormatVersion",), "2021-01-01", "RecipeFormatVersion", "unsupported recipe format"),
    (("ComponentName",), "com example", "ComponentName", "invalid component name"),
    (("ComponentName",), "..", "ComponentName", "invalid component name"),
    (("ComponentVersion",), "1.0", "ComponentVersion", "not a semantic version"),
    (("ComponentVersion",), 1.0, "ComponentVersion", "expected a version string"),
    (
        ("ComponentDependencies", "com.example.Other", "VersionRequirement"),
        ">>1.0",
        "ComponentDependencies.com.example.Other.VersionRequirement",
        "not a valid npm-style version range",
    ),
    (
        ("ComponentDependencies", "com.example.Other", "DependencyType"),
        "hard",
        "ComponentDependencies.com.example.Other.DependencyType",
        "must be one of HARD, SOFT",
    ),
    (
        ("ComponentDependencies", "com.example.Other", "Version"),
        "1.0.0",
        "ComponentDependencies.com.example.Other.Version",
        "unknown dependency key",
    ),
    (
        ("ComponentDependencies", "com.example.Base"),
        {"VersionRequirement": "*"},
        "ComponentDependencies.com.example.Base",
        "cannot depend on itself",
    ),
    (
        (*ACL, "aws.greengrass.ipc.pubsub", "p1", "operations"),
        DELETE,
        f"{ACL_PATH}.operations",
        "required, but missing",
    ),
    (
        (*ACL, "aws.greengrass.ipc.pubsub", "p1", "operation"),
        ["x"],
        f"{ACL_PATH}.operation",
        "unknown authorization policy key",
    ),
    (
        (*ACL, "aws.greengrass.ipc.pubsub", "p1", "resources"),
        [],
        f"{ACL_PATH}.resources",
        "at least one",
    ),
    (
        ("ComponentConfiguration", "Defaults"),
        {},
        "ComponentConfiguration.Defaults",
        "unknown component configuration key",
    ),
    ((*M0, "Platform", "os"), "-linux", "Manifests[0].Platform.os", "invalid platform value"),
    ((*M0, "Platform", "os"), "/(/", "Manifests[0].Platform.os", "invalid regular expression"),
    ((*LC, "Run", "Timeout"), "soon", "Manifests[0].Lifecycle.Run.Timeout", "number of seconds"),
    ((*LC, "Run", "Timeout"), True, "Manifests[0].Lifecycle.Run.Timeout", "number of seconds"),
    ((*LC, "Run", "Timeout"), 0, "Manifests[0].Lifecycle.Run.Timeout", "more than 0"),
    (
        (*LC, "Install", "Skipif"),
        "whenever x",
        "Manifests[0].Lifecycle.Install.Skipif",
        "expected 'onpath <program>' or 'exists <file>'",
    ),
    (
        (*LC, "Install", "RequiresPrivilege"),
        "yes",
        "Manifests[0].Lifecycle.Install.RequiresPrivilege",
        "expected true or false",
    ),
    ((*LC, "Run", "Script"), DELETE, "Manifests[0].Lifecycle.Run.Script", "required"),
    ((*LC, "Run", "Retry"), 3, "Manifests[0].Lifecycle.Run.Retry", "unknown lifecycle step key"),
    ((*LC, "Install"), None, "Manifests[0].Lifecycle.Install", "expected a script"),
    ((*LC, "Bootstrap"), "reboot", "Manifests[0].Lifecycle.Bootstrap", "not supported"),
    ((*LC, "Startup"), "./start.sh", "Manifests[0].Lifecycle", "both Startup and Run"),
    ((*LC, "Setenv"), {"FLAG": True}, "Manifests[0].Lifecycle.Setenv.FLAG", "expected a string"),
    ((*A0, "URI"), DELETE, "Manifests[0].Artifacts[0].URI", "required, but missing"),
    ((*A0, "URI"), "ftp://host/app.py", "Manifests[0].Artifacts[0].URI", "unsupported artifact"),
    ((*A0, "URI"), "s3//bucket/app.py", "Manifests[0].Artifacts[0].URI", "malformed s3 URI"),
    (
        (*A0, "Digest"),
        hashlib.sha256(b"x").hexdigest(),
        "Manifests[0].Artifacts[0].Digest",
        "not a base64 SHA-256 digest",
    ),
    ((*A0, "Unarchive"), "TAR", "Manifests[0].Artifacts[0].Unarchive", "one of NONE, ZIP"),
    (
        (*A0, "Permission"),
        {"Write": "ALL"},
        "Manifests[0].Artifacts[0].Permission.Write",
        "unknown permission key",
    ),
    (
        (*M0, "Artifacts", 1, "URI"),
        "s3://other-bucket/app.py",
        "Manifests[0].Artifacts[1].URI",
        "already used by Artifacts[0]",
    ),
    ((*M0, "Artifactz"), [], "Manifests[0].Artifactz", "unknown manifest key"),
    (("Manifests",), {"a": 1}, "Manifests", "expected a list of manifests"),
    (("ComponentSource",), "arn:aws:lambda:x", "ComponentSource", "Lambda components"),
    (("ComponentType",), "aws.greengrass.lambda", "ComponentType", "not supported"),
    (("Component",), "x", "Component", "unknown recipe key"),
    (("Lifecycle",), {"linux": {"Instal": "x"}}, "Lifecycle.linux.Instal", "unknown lifecycle"),
]


@pytest.mark.parametrize("fmt", ["yaml", "json"])
@pytest.mark.parametrize(("where", "value", "path", "message"), ERROR_CASES)
def test_a_bad_field_is_reported_with_its_path(
    fmt: str, where: tuple[str | int, ...], value: Any, path: str, message: str
) -> None:
    with pytest.raises(RecipeError) as caught:
        parse_recipe(dump(mutated(where, value), fmt))
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: ")
    assert message in caught.value.message


def test_an_unknown_lifecycle_key_lists_the_known_ones() -> None:
    with pytest.raises(RecipeError) as caught:
        parse_recipe(dump(mutated((*LC, "Runn"), {"Script": "x"}), "yaml"))
    assert str(caught.value) == (
        "Manifests[0].Lifecycle.Runn: unknown lifecycle key; known: Setenv, Install, Startup,"
        " Run, Shutdown, Recover (did you mean Run?)"
    )
    with pytest.raises(RecipeError, match="keys are case-sensitive: write Run"):
        parse_recipe(dump(mutated((*LC, "run"), "x"), "yaml"))
    # in the top-level lifecycle, lower-case keys are selection keys, but not a misspelt Run
    with pytest.raises(RecipeError, match="keys are case-sensitive: write Run") as caught:
        parse_recipe(dump(mutated(("Lifecycle",), {"run": "x"}), "yaml"))
    assert caught.value.path == "Lifecycle.run"


def test_a_hex_digest_gets_a_hint() -> None:
    with pytest.raises(RecipeError, match="looks like hex"):
        parse_recipe(dump(mutated((*A0, "Digest"), hashlib.sha256(b"x").hexdigest()), "json"))


def test_syntax_errors_name_the_line() -> None:
    bad_yaml = "RecipeFormatVersion: '2020-01-25'\nComponentName: a\n  ComponentVersion: 1.0.0\n"
    with pytest.raises(RecipeError, match=r"<recipe>: not valid YAML at line 3") as caught:
        parse_recipe(bad_yaml)
    assert caught.value.path is None
    with pytest.raises(RecipeError, match=r"x.json: not valid JSON at line 2, column 1"):
        parse_recipe('{"a": 1\n"b": 2}', source="x.json")
    duplicate = dump(BASE, "yaml") + "ComponentName: again\n"
    line = duplicate.count("\n")
    with pytest.raises(RecipeError, match=rf"line {line}, column 1: duplicate key 'ComponentName'"):
        parse_recipe(duplicate)
    with pytest.raises(RecipeError, match="duplicate key 'a'"):
        parse_recipe('{"a": 1, "a": 2}')
    with pytest.raises(RecipeError, match="the recipe is empty"):
        parse_recipe("# nothing\n")
    with pytest.raises(RecipeError, match="expected a recipe"):
        parse_recipe("- a\n- b\n")


def test_an_unquoted_recipe_variable_in_yaml_gets_a_hint() -> None:
    head = "RecipeFormatVersion: '2020-01-25'\nComponentName: a\nComponentVersion: 1.0.0\n"
    text = head + "Manifests:\n  - Lifecycle:\n      Run: {artifacts:path}/run.sh\n"
    with pytest.raises(RecipeError, match="line 6") as caught:
        parse_recipe(text)
    assert "quote it" in str(caught.value)
    text = head + "Manifests:\n  - Lifecycle:\n      Run:\n        Script: {artifacts:path}\n"
    with pytest.raises(RecipeError) as caught:
        parse_recipe(text)
    assert caught.value.path == "Manifests[0].Lifecycle.Run.Script"


# --- manifests -----------------------------------------------------------------------------


def test_select_manifest_takes_the_first_that_matches() -> None:
    hello = load_recipe(RECIPES / "hello.yaml")
    # "*" also matches an attribute the device does not define
    assert select_manifest(hello, LINUX).manifest is hello.manifests[0]
    assert select_manifest(hello, Platform("darwin", "aarch64")).manifest is hello.manifests[1]
    assert select_manifest(hello, Platform("windows", "x86")).manifest is hello.manifests[1]
    other = select_manifest(hello, Platform("linux", "aarch64"))
    assert other.manifest is hello.manifests[2]
    assert other.lifecycle.run is not None and other.lifecycle.run.script == "echo any platform"
    assert (other.name, other.version) == ("com.example.HelloWorld", "1.2.3-rc.1+build.5")


def test_custom_platform_attributes_and_regexes() -> None:
    radio = recipe(
        "com.example.Radio",
        "1.0.0",
        Manifests=[
            {"Platform": {"os": "linux", "com.example.radio": "lora"}, "Lifecycle": {"Run": "a"}},
            {"Platform": {"os": "linux", "com.example.radio": "/.+/"}, "Lifecycle": {"Run": "b"}},
        ],
    )
    lora = Platform("linux", "arm", {"com.example.radio": "lora"})
    wifi = Platform("linux", "arm", {"com.example.radio": "wifi"})
    assert select_manifest(radio, lora).manifest is radio.manifests[0]
    assert select_manifest(radio, wifi).manifest is radio.manifests[1]
    with pytest.raises(RecipeError):  # /.+/ needs a non-blank value
        select_manifest(radio, Platform("linux", "arm"))


def test_no_matching_manifest_names_the_platforms() -> None:
    two = recipe(
        "com.example.Two",
        "1.0.0",
        Manifests=[
            {"Platform": {"os": "linux", "architecture": "amd64"}},
            {"Platform": {"os": "windows"}},
        ],
    )
    with pytest.raises(RecipeError) as caught:
        select_manifest(two, Platform("darwin", "aarch64"))
    assert caught.value.path == "Manifests"
    text = str(caught.value)
    assert "com.example.Two=1.0.0 has no manifest" in text
    assert "os=darwin, architecture=aarch64" in text
    assert "[0] os=linux, architecture=amd64; [1] os=windows" in text


def test_current_platform_uses_greengrass_names() -> None:
    here = current_platform()
    expected_os = {"linux": "linux", "darwin": "darwin", "win32": "windows"}.get(sys.platform)
    expected_arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "aarch64", "arm64": "aarch64"}
    assert here.os == (expected_os or here.os)
    assert here.architecture == expected_arch.get(platform.machine().lower(), here.architecture)
    assert here.architecture not in ("x86_64", "arm64", "i686", "")
    hello = load_recipe(RECIPES / "hello.yaml")
    expected = 0 if (here.os, here.architecture) == ("linux", "amd64") else None
    if expected is not None:  # this machine gets the Linux x86-64 manifest
        assert select_manifest(hello, here).manifest is hello.manifests[expected]


def test_global_lifecycle_selections() -> None:
    parsed = load_recipe(RECIPES / "global-lifecycle.yaml")
    linux = select_manifest(parsed, Platform("linux", "amd64")).lifecycle
    windows = select_manifest(parsed, Platform("windows", "amd64")).lifecycle
    darwin = select_manifest(parsed, Platform("darwin", "aarch64")).lifecycle
    assert linux.install is not None and linux.install.script == "apt-get install -y python3"
    assert windows.install is not None and windows.install.script == "winget install python"
    assert darwin.install is None  # the `all` selection has no Install
    assert [lc.run.script if lc.run else None for lc in (linux, windows, darwin)] == [
        "python3 app.py",
        "py -3 app.py",
        "python app.py",
    ]
    assert linux.run is not None and linux.run.timeout == 60.0
    assert linux.setenv == windows.setenv == darwin.setenv == {"MODE": "global"}
    assert parsed.global_lifecycle == darwin


def test_a_recipe_without_manifests_runs_anywhere() -> None:
    old = recipe("com.example.Old", "1.0.0", Lifecycle={"Run": "echo old"})
    component = select_manifest(old, Platform("plan9", "mips"))
    assert component.lifecycle.run is not None and component.lifecycle.run.script == "echo old"
    bare = select_manifest(recipe("com.example.Bare", "1.0.0"), LINUX)
    assert bare.lifecycle.run is None and bare.artifacts == ()


# --- versions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "requirement", "expected"),
    [
        ("1.2.3", "^1.2.0", True),
        ("2.0.0", "^1.2.0", False),
        ("1.5.0", ">=1.0.0 <2.0.0", True),
        ("1.0.0-rc.1", ">=1.0.0", False),
        ("1.2.9", "~1.2.0", True),
        ("1.3.0", "~1.2.0", False),
        ("3.1.0", "^1.0.0 || ^3.0.0", True),
        ("1.0.0+build.7", "1.0.0", True),
        ("4.0.0", "*", True),
    ],
)
def test_version_satisfies(version: str, requirement: str, expected: bool) -> None:
    assert version_satisfies(version, requirement) is expected


def test_version_satisfies_rejects_bad_input() -> None:
    with pytest.raises(RecipeError, match="'>>1'"):
        version_satisfies("1.0.0", ">>1")


def test_resolve_picks_the_highest_satisfying_version() -> None:
    available = store(*(recipe("com.example.A", v) for v in ("1.0.0", "1.4.0", "2.0.0")))
    assert versions(resolve_versions({"com.example.A": "^1.0.0"}, available)) == {
        "com.example.A": "1.4.0"
    }
    assert versions(resolve_versions({"com.example.A": "*"}, available)) == {
        "com.example.A": "2.0.0"
    }


def test_resolve_scenario_s3_transitively(no_docker: None) -> None:
    available = store(*(load_recipe(p) for p in sorted(RECIPES.glob("com.ml.*.yaml"))))
    resolved = resolve_versions({"com.ml.consumer": "^1.0.0"}, available)
    # xgboost 2.0.0 (docker) is outside ^1.0.0, so its Docker dependency is not needed
    assert versions(resolved) == {"com.ml.consumer": "1.0.0", "com.ml.xgboost": "1.0.0"}

    with pytest.raises(DeploymentError) as caught:
        resolve_versions({"com.ml.consumer": "^1.0.0", "com.ml.xgboost": "^2.0.0"}, available)
    assert str(caught.value).startswith(
        "no version of com.ml.xgboost satisfies every requirement (the deployment requires"
        " ^2.0.0, com.ml.consumer=1.0.0 requires ^1.0.0; available: 1.0.0, 2.0.0)"
    )


def test_resolve_revises_choices_and_drops_stale_requirements() -> None:
    available = store(
        recipe("com.example.A", "2.0.0", {"com.example.B": "^2.0.0"}),
        recipe("com.example.A", "1.0.0", {"com.example.B": "^1.0.0"}),
        recipe("com.example.B", "2.0.0", {"com.example.D": "^1.0.0"}),
        recipe("com.example.B", "1.0.0"),
        recipe("com.example.C", "1.0.0", {"com.example.A": "^1.0.0"}),
        recipe("com.example.D", "1.0.0"),
    )
    resolved = resolve_versions({"com.example.A": "*", "com.example.C": "*"}, available)
    # C pins A to 1.x, which wants B 1.x, which needs no D
    assert versions(resolved) == {
        "com.example.A": "1.0.0",
        "com.example.B": "1.0.0",
        "com.example.C": "1.0.0",
    }


def test_resolve_reports_missing_recipes_and_cycles() -> None:
    lonely = store(recipe("com.example.A", "1.0.0", {"com.example.Missing": "^1.0.0"}))
    with pytest.raises(DeploymentError, match=r"no recipe for com.example.Missing \(com.example"):
        resolve_versions({"com.example.A": "*"}, lonely)

    cyclic = store(
        recipe("com.example.A", "1.0.0", {"com.example.B": "*"}),
        recipe("com.example.B", "1.0.0", {"com.example.A": "*"}),
    )
    with pytest.raises(DeploymentError) as caught:
        resolve_versions({"com.example.A": "*"}, cyclic)
    assert str(caught.value).startswith(
        "dependency cycle: com.example.A=1.0.0 -> com.example.B=1.0.0 -> com.example.A=1.0.0"
    )

    with pytest.raises(DeploymentError, match=r"deployment's version range for com\.example\.A"):
        resolve_versions({"com.example.A": "one"}, cyclic)


def test_resolve_checks_builtins_and_leaves_them_out() -> None:
    hello = load_recipe(RECIPES / "hello.yaml")
    available = store(hello, recipe("com.example.Lib", "1.1.0"))
    resolved = resolve_versions({"com.example.HelloWorld": "^1.2.3-rc.1"}, available)
    assert versions(resolved) == {
        "com.example.HelloWorld": "1.2.3-rc.1+build.5",
        "com.example.Lib": "1.1.0",
    }


def test_resolve_lists_every_refused_builtin_at_once() -> None:
    needy = recipe(
        "com.example.Needy",
        "1.0.0",
        {
            "aws.greengrass.TokenExchangeService": "^2.0.0",
            "aws.greengrass.StreamManager": "*",
            "aws.greengrass.Nucleus": ">=2.5.0",
        },
    )
    with pytest.raises(DeploymentError) as caught:
        resolve_versions({"com.example.Needy": "*", "aws.greengrass.Teleporter": "*"}, store(needy))
    text = str(caught.value)
    assert text.startswith("3 AWS-provided dependencies cannot run on this device")
    assert (
        "aws.greengrass.TokenExchangeService ^2.0.0 (required by com.example.Needy=1.0.0):"
        " needs AWS credentials: not available on a modelyard device" in text
    )
    assert "aws.greengrass.StreamManager" in text
    assert "aws.greengrass.Teleporter * (required by the deployment): unknown AWS-provided" in text
    assert "aws.greengrass.Nucleus" not in text  # the agent itself


def test_docker_manager_depends_on_docker_being_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    available = store(*(load_recipe(p) for p in sorted(RECIPES.glob("com.ml.xgboost-*.yaml"))))
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(DeploymentError, match="needs Docker on the device: install docker"):
        resolve_versions({"com.ml.xgboost": "^2.0.0"}, available)

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    resolved = resolve_versions({"com.ml.xgboost": "^2.0.0"}, available)
    assert versions(resolved) == {"com.ml.xgboost": "2.0.0"}


# --- builtins ------------------------------------------------------------------------------


def test_check_builtin(no_docker: None) -> None:
    nucleus = check_builtin("aws.greengrass.Nucleus", ">=9.0.0")
    assert nucleus.provided and "modelyard agent" in nucleus.reason
    assert check_builtin("aws.greengrass.Cli", "^2.0.0").provided
    tes = check_builtin("aws.greengrass.TokenExchangeService", "^2.0.0")
    assert not tes.provided
    assert tes.reason == "needs AWS credentials: not available on a modelyard device"
    docker = check_builtin("aws.greengrass.DockerApplicationManager")
    assert (docker.provided, docker.reason) == (False, "needs Docker on the device: install docker")
    with pytest.raises(ValueError, match="not an AWS-provided component"):
        check_builtin("com.example.A", "*")

    statuses = check_builtins(
        {"aws.greengrass.Cli": {"a=1.0.0": "^2.0.0"}, "aws.greengrass.ShadowManager": {"b": "*"}}
    )
    assert [(s.name, s.provided, s.required_by) for s in statuses] == [
        ("aws.greengrass.Cli", True, ("a=1.0.0",)),
        ("aws.greengrass.ShadowManager", False, ("b",)),
    ]
    with pytest.raises(DeploymentError, match="1 AWS-provided dependency cannot run"):
        require_builtins({"aws.greengrass.ShadowManager": {"b": "*"}})


def test_docker_artifacts_need_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    component = select_manifest(load_recipe(RECIPES / "com.ml.xgboost-2.0.0-docker.yaml"), LINUX)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RecipeError) as caught:
        check_docker_artifacts(component)
    assert str(caught.value) == (
        "Manifests[0].Artifacts[0].URI: com.ml.xgboost's artifact"
        " docker:ghcr.io/modelyard/xgboost-serve:2.0.0 needs Docker on the device; none found on"
        " PATH (install docker, or use a manifest without docker: artifacts)"
    )
    (tmp_path / "docker").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "docker").chmod(0o755)
    check_docker_artifacts(component)  # no error once docker is on the PATH
    # a component without docker artifacts never needs it
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    check_docker_artifacts(
        select_manifest(load_recipe(RECIPES / "com.ml.xgboost-1.0.0.yaml"), LINUX)
    )


# --- digests -------------------------------------------------------------------------------


def test_artifact_digest_is_base64_of_the_hash(tmp_path: Path) -> None:
    data = b"model bytes " * 200_000  # more than one read chunk
    file = tmp_path / "model.bin"
    file.write_bytes(data)
    assert artifact_digest(file) == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert (
        artifact_digest(file, "SHA-512") == base64.b64encode(hashlib.sha512(data).digest()).decode()
    )
    with pytest.raises(ArtifactError, match="unsupported digest algorithm"):
        artifact_digest(file, "MD5")


def test_a_digest_mismatch_is_rejected_with_the_path(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    app = artifacts / "app.py"
    app.write_text("print('hello')\n")
    good = base64.b64encode(hashlib.sha256(app.read_bytes()).digest()).decode()
    doc = mutated((*A0, "Digest"), good)
    doc["Manifests"][0]["Artifacts"].pop()  # data.json: no digest, and absent
    component = select_manifest(parse_recipe(json.dumps(doc)), LINUX)
    verify_component_artifacts(component, artifacts)  # matches: no error

    app.write_text("print('tampered')\n")
    with pytest.raises(ArtifactError) as caught:
        verify_component_artifacts(component, artifacts)
    bad = artifact_digest(app)
    assert caught.value.path == "Manifests[0].Artifacts[0].Digest"
    assert good in str(caught.value) and bad in str(caught.value)
    assert str(app) in str(caught.value)
    with pytest.raises(ArtifactError, match="is missing: no file") as caught:
        verify_artifact(artifacts / "gone.py", component.artifacts[0], field="X.Digest")
    assert caught.value.path == "X.Digest"


# --- the import rule -----------------------------------------------------------------------


def test_the_recipe_module_imports_nothing_else_of_modelyard() -> None:
    code = (
        "import sys, modelyard.edge.agent.recipe, modelyard.edge.agent.variables\n"
        "print('\\n'.join(m for m in sys.modules if m.startswith('modelyard')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = result.stdout.split()
    assert "modelyard.edge.agent.recipe" in loaded
    outside = [
        m
        for m in loaded
        if m not in ("modelyard", "modelyard.edge") and not m.startswith("modelyard.edge.agent")
    ]
    assert outside == []
