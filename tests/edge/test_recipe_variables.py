"""Recipe variables: `{artifacts:path}`, `{configuration:/...}`, qualified forms, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelyard.edge.agent.errors import RecipeError
from modelyard.edge.agent.model import Platform
from modelyard.edge.agent.platform import select_manifest
from modelyard.edge.agent.recipe import load_recipe
from modelyard.edge.agent.variables import (
    ComponentPaths,
    VariableContext,
    interpolate,
    interpolate_lifecycle,
)

RECIPES = Path(__file__).parent / "recipes"
LINUX = Platform(os="linux", architecture="amd64")
ROOT = "/var/lib/modelyard-agent"


def paths(name: str, version: str) -> ComponentPaths:
    return ComponentPaths(
        artifacts=f"{ROOT}/artifacts/{name}/{version}",
        decompressed=f"{ROOT}/artifacts-unarchived/{name}/{version}",
        work=f"{ROOT}/work/{name}",
    )


CONFIG: dict[str, Any] = {
    "Message": "world",
    "port": 8080,
    "ratio": 0.5,
    "enabled": True,
    "nothing": None,
    "server": {"host": "localhost", "tags": ["a", "b"]},
    "list": [10, {"x": 1}],
    "a/b": "slash",
    "m~n": "tilde",
}


def context(**overrides: Any) -> VariableContext:
    values: dict[str, Any] = {
        "component": "com.example.App",
        "paths": {
            "com.example.App": paths("com.example.App", "1.0.0"),
            "com.example.Dep": paths("com.example.Dep", "2.1.0"),
        },
        "configuration": {"com.example.App": CONFIG, "com.example.Dep": {"port": 9000}},
        "thing_name": "edge-device-7",
        "root_path": ROOT,
        "dependencies": frozenset({"com.example.Dep"}),
    }
    values.update(overrides)
    return VariableContext(**values)


def test_scenario_s3_consumer_run_script() -> None:
    consumer = select_manifest(load_recipe(RECIPES / "com.ml.consumer-1.0.0.yaml"), LINUX)
    xgboost = select_manifest(load_recipe(RECIPES / "com.ml.xgboost-1.0.0.yaml"), LINUX)
    ctx = VariableContext.for_component(
        consumer,
        paths={
            "com.ml.consumer": paths("com.ml.consumer", "1.0.0"),
            "com.ml.xgboost": paths("com.ml.xgboost", "1.0.0"),
        },
        configuration={
            "com.ml.consumer": consumer.recipe.default_configuration,
            "com.ml.xgboost": xgboost.recipe.default_configuration,
        },
        thing_name="edge-device-7",
        root_path=ROOT,
    )
    assert ctx.dependencies == frozenset({"com.ml.xgboost"})
    lifecycle = interpolate_lifecycle(consumer.lifecycle, ctx)
    assert lifecycle.run is not None
    assert lifecycle.run.script == (
        f"python3 -u {ROOT}/artifacts/com.ml.consumer/1.0.0/consumer.py"
        f" --samples {ROOT}/artifacts/com.ml.consumer/1.0.0/samples.json"
        " --topic local/inference"
    )
    assert lifecycle.install == consumer.lifecycle.install  # nothing to replace


def test_scenario_s3_xgboost_run_script_and_setenv() -> None:
    xgboost = select_manifest(load_recipe(RECIPES / "com.ml.xgboost-1.0.0.yaml"), LINUX)
    ctx = VariableContext.for_component(
        xgboost,
        paths={"com.ml.xgboost": paths("com.ml.xgboost", "1.0.0")},
        configuration={"com.ml.xgboost": xgboost.recipe.default_configuration},
        thing_name="edge-device-7",
        root_path=ROOT,
    )
    lifecycle = interpolate_lifecycle(xgboost.lifecycle, ctx)
    here = f"{ROOT}/artifacts/com.ml.xgboost/1.0.0"
    assert lifecycle.setenv == {"MODEL_PATH": f"{here}/model.json"}
    assert lifecycle.run is not None
    assert lifecycle.run.script == (
        f"python3 -u {here}/serve.py --requests local/inference --results local/result"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{artifacts:path}/app.py", f"{ROOT}/artifacts/com.example.App/1.0.0/app.py"),
        ("{artifacts:decompressedPath}/m", f"{ROOT}/artifacts-unarchived/com.example.App/1.0.0/m"),
        ("cd {work:path}", f"cd {ROOT}/work/com.example.App"),
        ("{iot:thingName}", "edge-device-7"),
        ("{kernel:rootPath}/bin", f"{ROOT}/bin"),
        ('echo "{configuration:/Message}"', 'echo "world"'),
        ("--port {configuration:/port}", "--port 8080"),
        ("{configuration:/ratio} {configuration:/enabled}", "0.5 true"),
        ("{configuration:/nothing}", "null"),
        ("{configuration:/server}", '{"host":"localhost","tags":["a","b"]}'),
        ("{configuration:/server/tags}", '["a","b"]'),
        ("{configuration:/list/1/x}", "1"),
        ("{configuration:/a~1b} {configuration:/m~0n}", "slash tilde"),
        # the recipe's own name, and a direct dependency's
        ("{com.example.App:configuration:/Message}", "world"),
        ("{com.example.Dep:configuration:/port}", "9000"),
        ("{com.example.Dep:artifacts:path}", f"{ROOT}/artifacts/com.example.Dep/2.1.0"),
        ("{com.example.Dep:work:path}", f"{ROOT}/work/com.example.Dep"),
    ],
)
def test_variables_resolve(text: str, expected: str) -> None:
    assert interpolate(text, context()) == expected


@pytest.mark.parametrize(
    "text",
    [
        "{configuration:/missing}",
        "{configuration:/server/port}",
        "{configuration:/list/7}",
        "{com.example.Dep:configuration:/host}",
    ],
)
def test_a_pointer_to_no_node_is_left_as_written(text: str) -> None:
    # the Greengrass recipe reference: "No node. ... doesn't replace the recipe variable"
    assert interpolate(f"run {text} now", context()) == f"run {text} now"


@pytest.mark.parametrize(
    "text",
    [
        "echo ${HOME} ${PORT:-8080} ${A:1}",
        "{ echo a; echo b; } > log",
        "awk '{print $1}' file",
        "python3 -c 'print({\"a\": 1})'",
        "${foo:bar}",  # shell, after a $: not a recipe variable
    ],
)
def test_shell_text_in_braces_is_left_alone(text: str) -> None:
    assert interpolate(text, context()) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{foo:bar}", "unknown recipe variable {foo:bar}: no namespace 'foo'"),
        ("{com.example.Dep:foo:bar}", "no namespace 'foo'"),
        ("{artifacts:paht}", "unknown recipe variable {artifacts:paht}"),
        ("{iot:thing}", "unknown recipe variable {iot:thing}"),
        ("{configuration:Message}", "a configuration key is a JSON pointer"),
        (
            "{com.example.Other:artifacts:path}",
            "com.example.Other is not a dependency of com.example.App",
        ),
        ("{com.example.Dep:iot:thingName}", "iot variables have no component-qualified form"),
    ],
)
def test_bad_variables_are_errors_naming_them(text: str, message: str) -> None:
    with pytest.raises(RecipeError) as caught:
        interpolate(f"run {text}", context(), path="Manifests[0].Lifecycle.Run.Script")
    assert caught.value.path == "Manifests[0].Lifecycle.Run.Script"
    assert message in caught.value.message


def test_a_dependency_without_known_paths_is_an_error() -> None:
    ctx = context(paths={"com.example.App": paths("com.example.App", "1.0.0")})
    with pytest.raises(RecipeError, match=r"knows no paths for com\.example\.Dep"):
        interpolate("{com.example.Dep:artifacts:path}", ctx)
    with pytest.raises(RecipeError, match=r"knows no configuration for com\.example\.Dep"):
        interpolate("{com.example.Dep:configuration:/x}", context(configuration={}))


def test_interpolate_lifecycle_names_the_field_in_errors() -> None:
    hello = select_manifest(load_recipe(RECIPES / "hello.yaml"), LINUX)
    ctx = context(
        component="com.example.HelloWorld",
        paths={"com.example.HelloWorld": paths("com.example.HelloWorld", "1.2.3")},
        configuration={"com.example.HelloWorld": hello.recipe.default_configuration},
    )
    lifecycle = interpolate_lifecycle(hello.lifecycle, ctx, path="Manifests[0].Lifecycle")
    assert lifecycle.run is not None
    assert lifecycle.run.script == (
        f'python3 -u {ROOT}/artifacts/com.example.HelloWorld/1.2.3/hello.py "world"'
    )
    assert lifecycle.install is not None and lifecycle.install.timeout == 300.0  # kept

    broken = context(paths={})  # the component's own paths are unknown
    with pytest.raises(RecipeError) as caught:
        interpolate_lifecycle(hello.lifecycle, broken, path="Manifests[0].Lifecycle")
    assert caught.value.path == "Manifests[0].Lifecycle.Install.Script"
