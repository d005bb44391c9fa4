"""Deployment documents (CreateDeployment's shape), local deployments as the CLI builds them,
planning what a deployment stops and starts, and the journal's files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from modelyard.edge.agent.configuration import ConfigurationUpdate
from modelyard.edge.agent.deployments import (
    DocumentError,
    NotDeployedError,
    changes,
    check_plan,
    dependencies_of,
    local_deployment,
    parse_deployment,
    parse_update_config,
    plan_deployment,
)
from modelyard.edge.agent.errors import DeploymentError, RecipeError
from modelyard.edge.agent.journal import (
    IN_PROGRESS,
    DeploymentRecord,
    DeviceState,
    Journal,
    JournalError,
)
from modelyard.edge.agent.model import Platform, Recipe
from modelyard.edge.agent.platform import select_manifest
from modelyard.edge.agent.recipe import parse_recipe
from modelyard.edge.agent.variables import ComponentPaths

LINUX = Platform(os="linux", architecture="amd64")


def make_recipe(
    name: str,
    version: str,
    *,
    deps: dict[str, tuple[str, str]] | None = None,
    config: dict[str, Any] | None = None,
    run: str = "echo hi",
) -> Recipe:
    document: dict[str, Any] = {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": version,
        "Manifests": [{"Lifecycle": {"Run": run}}],
    }
    if deps:
        document["ComponentDependencies"] = {
            dep: {"VersionRequirement": req, "DependencyType": kind}
            for dep, (req, kind) in deps.items()
        }
    if config is not None:
        document["ComponentConfiguration"] = {"DefaultConfiguration": config}
    return parse_recipe(json.dumps(document), fmt="json")


def available(*recipes: Recipe) -> dict[str, list[Recipe]]:
    found: dict[str, list[Recipe]] = {}
    for recipe in recipes:
        found.setdefault(recipe.name, []).append(recipe)
    return found


def document(components: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"deploymentId": "d-1", "components": components, **extra}


# --- the document ------------------------------------------------------------------------


def test_a_full_document_is_read_with_its_defaults() -> None:
    deployment = parse_deployment(
        document(
            {
                "com.example.A": {
                    "componentVersion": "1.2.0",
                    "configurationUpdate": {"merge": '{"level": "DEBUG"}', "reset": ["/x"]},
                },
                "com.example.B": {"componentVersion": "2.0.0-rc.1"},
            },
            deploymentName="fleet",
            targetArn="arn:aws:iot:eu-west-1:1:thinggroup/g",
            tags={"ignored": "by the device"},
        )
    )

    assert deployment.roots == {"com.example.A": "1.2.0", "com.example.B": "2.0.0-rc.1"}
    assert deployment.components["com.example.A"].update == ConfigurationUpdate(
        merge={"level": "DEBUG"}, reset=("/x",)
    )
    assert deployment.policies.failure_handling == "ROLLBACK"
    assert deployment.policies.update_action == "NOTIFY_COMPONENTS"
    assert deployment.policies.update_timeout == 60
    assert deployment.name == "fleet"


def test_policies_are_read() -> None:
    deployment = parse_deployment(
        document(
            {},
            deploymentPolicies={
                "failureHandlingPolicy": "DO_NOTHING",
                "componentUpdatePolicy": {
                    "action": "SKIP_NOTIFY_COMPONENTS",
                    "timeoutInSeconds": 5,
                },
                "configurationValidationPolicy": {"timeoutInSeconds": 7},
            },
        )
    )

    assert deployment.policies.failure_handling == "DO_NOTHING"
    assert deployment.policies.update_action == "SKIP_NOTIFY_COMPONENTS"
    assert deployment.policies.update_timeout == 5
    assert deployment.policies.validation_timeout == 7


@pytest.mark.parametrize(
    ("doc", "path", "message"),
    [
        ({"components": {}}, "deploymentId", "required"),
        ({"deploymentId": "../x", "components": {}}, "deploymentId", "invalid deployment id"),
        ({"deploymentId": "current", "components": {}}, "deploymentId", "reserved"),
        ({"deploymentId": "d"}, "components", "required"),
        (document({"a": {}}), 'components["a"].componentVersion', "required"),
        (
            document({"a": {"componentVersion": "^1.0"}}),
            'components["a"].componentVersion',
            "exact",
        ),
        (
            document({"a/b": {"componentVersion": "1.0.0"}}),
            'components["a/b"]',
            "invalid component",
        ),
        (
            document({"a": {"componentVersion": "1.0.0", "configurationUpdate": {"merge": "[1]"}}}),
            'components["a"].configurationUpdate.merge',
            "must be a JSON object",
        ),
        (
            document({"a": {"componentVersion": "1.0.0", "configurationUpdate": {"reset": "/x"}}}),
            'components["a"].configurationUpdate.reset',
            "list of JSON pointers",
        ),
        (
            document({"a": {"componentVersion": "1.0.0", "runWith": {"posixUser": "x"}}}),
            'components["a"].runWith',
            "not supported",
        ),
        (
            document({}, deploymentPolicies={"failureHandlingPolicy": "rollback"}),
            "deploymentPolicies.failureHandlingPolicy",
            "ROLLBACK or DO_NOTHING",
        ),
        (
            document({}, deploymentPolicies={"componentUpdatePolicy": {"timeoutInSeconds": 0}}),
            "deploymentPolicies.componentUpdatePolicy.timeoutInSeconds",
            "above 0",
        ),
        (document({}, artifactDirs=["relative"]), "artifactDirs[0]", "absolute"),
    ],
)
def test_document_errors_name_the_field(doc: Any, path: str, message: str) -> None:
    with pytest.raises(DocumentError) as caught:
        parse_deployment(doc)

    assert caught.value.path == path
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_a_misspelt_key_gets_a_suggestion() -> None:
    with pytest.raises(DocumentError) as caught:
        parse_deployment(document({"a": {"componentVersoin": "1.0.0"}}))

    assert caught.value.path == 'components["a"].componentVersoin'
    assert "did you mean componentVersion?" in str(caught.value)


# --- local deployments -------------------------------------------------------------------


def test_a_local_deployment_is_the_current_roots_plus_merge_minus_remove() -> None:
    doc = local_deployment(
        {"com.example.A": "1.0.0", "com.example.B": "1.0.0"},
        merge=["com.example.A=2.0.0", "com.example.C=1.0.0"],
        remove=["com.example.B"],
        update_config={"com.example.C": ConfigurationUpdate(merge={"k": 1}, reset=("/z",))},
        failure_policy="DO_NOTHING",
        notify_timeout=5,
        artifact_dirs=["/srv/artifacts"],
        deployment_id="local-1",
    )

    assert doc["deploymentId"] == "local-1"
    assert doc["components"] == {
        "com.example.A": {"componentVersion": "2.0.0"},
        "com.example.C": {
            "componentVersion": "1.0.0",
            "configurationUpdate": {"merge": '{"k":1}', "reset": ["/z"]},
        },
    }
    assert doc["deploymentPolicies"] == {
        "failureHandlingPolicy": "DO_NOTHING",
        "componentUpdatePolicy": {"action": "NOTIFY_COMPONENTS", "timeoutInSeconds": 5},
    }
    assert doc["artifactDirs"] == ["/srv/artifacts"]
    assert parse_deployment(doc).roots == {"com.example.A": "2.0.0", "com.example.C": "1.0.0"}


def test_local_deployment_mistakes() -> None:
    with pytest.raises(NotDeployedError) as missing:
        local_deployment({"com.example.A": "1.0.0"}, remove=["com.example.Nope"])
    assert missing.value.exit_code == 3
    assert "roots: com.example.A" in str(missing.value)

    with pytest.raises(DocumentError) as bad_merge:
        local_deployment({}, merge=["com.example.A"])
    assert bad_merge.value.path == "--merge"

    with pytest.raises(DocumentError) as stray:
        local_deployment({}, update_config={"com.example.A": ConfigurationUpdate(merge={"a": 1})})
    assert "--merge com.example.A=VERSION" in str(stray.value)

    with pytest.raises(DocumentError) as both:
        local_deployment({"a": "1.0.0"}, merge=["a=2.0.0"], remove=["a"])
    assert "both merged and removed" in str(both.value)


def test_the_clis_update_config_format() -> None:
    updates = parse_update_config(
        {"com.example.A": {"MERGE": {"level": "DEBUG"}, "RESET": ["/limits"]}}
    )
    assert updates == {
        "com.example.A": ConfigurationUpdate(merge={"level": "DEBUG"}, reset=("/limits",))
    }

    with pytest.raises(DocumentError) as caught:
        parse_update_config({"com.example.A": {"merge": {}}}, source="cfg.json")
    assert caught.value.path == "cfg.json.com.example.A.merge"
    assert "keys are case-sensitive: write MERGE" in str(caught.value)


# --- planning ------------------------------------------------------------------------------


def test_plan_resolves_dependencies_configuration_and_what_restarts() -> None:
    lib1 = make_recipe("com.example.Lib", "1.0.0", config={"size": 1})
    lib2 = make_recipe("com.example.Lib", "1.1.0", config={"size": 2, "new": True})
    app = make_recipe(
        "com.example.App", "1.0.0", deps={"com.example.Lib": ("^1.0.0", "HARD")}, config={"x": 1}
    )
    soft = make_recipe("com.example.Soft", "1.0.0", deps={"com.example.Lib": ("^1.0.0", "SOFT")})
    current = DeviceState(
        roots={"com.example.App": "1.0.0", "com.example.Soft": "1.0.0", "com.example.Old": "1.0.0"},
        components={
            "com.example.App": "1.0.0",
            "com.example.Lib": "1.0.0",
            "com.example.Soft": "1.0.0",
            "com.example.Old": "1.0.0",
        },
        configuration={"com.example.Lib": {"size": 5}, "com.example.App": {"x": 1}},
    )
    deployment = parse_deployment(
        document(
            {
                "com.example.App": {"componentVersion": "1.0.0"},
                "com.example.Soft": {"componentVersion": "1.0.0"},
                "com.example.Lib": {"componentVersion": "1.1.0"},
            }
        )
    )

    plan = plan_deployment(deployment, current, available(lib1, lib2, app, soft), platform=LINUX)

    assert plan.target.components == {
        "com.example.App": "1.0.0",
        "com.example.Lib": "1.1.0",
        "com.example.Soft": "1.0.0",
    }
    # the stored size survives the new version; its new default key is added
    assert plan.target.configuration["com.example.Lib"] == {"size": 5, "new": True}
    # Lib changes: its HARD dependent App restarts with it, its SOFT dependent Soft does not
    assert plan.start == ("com.example.App", "com.example.Lib")
    assert plan.stop == ("com.example.App", "com.example.Lib", "com.example.Old")
    assert plan.target.last_deployment_id == "d-1"


def test_a_configuration_change_alone_restarts_the_component() -> None:
    app = make_recipe("com.example.App", "1.0.0", config={"x": 1})
    state = DeviceState(
        roots={"com.example.App": "1.0.0"},
        components={"com.example.App": "1.0.0"},
        configuration={"com.example.App": {"x": 1}},
    )
    same = parse_deployment(document({"com.example.App": {"componentVersion": "1.0.0"}}))
    merged = parse_deployment(
        document(
            {
                "com.example.App": {
                    "componentVersion": "1.0.0",
                    "configurationUpdate": {"merge": '{"x": 2}'},
                }
            }
        )
    )

    unchanged = plan_deployment(same, state, available(app), platform=LINUX)
    changed = plan_deployment(merged, state, available(app), platform=LINUX)
    broken = plan_deployment(
        same, state, available(app), platform=LINUX, unhealthy={"com.example.App"}
    )

    assert (unchanged.stop, unchanged.start) == ((), ())
    assert changed.start == ("com.example.App",)
    assert changed.target.configuration["com.example.App"] == {"x": 2}
    assert broken.start == ("com.example.App",)  # not running: the deployment restarts it


def test_a_removed_component_loses_its_configuration() -> None:
    app = make_recipe("com.example.App", "1.0.0", config={"x": 1})
    state = DeviceState(
        roots={}, components={}, configuration={"com.example.App": {"x": 9}}
    )  # left over from before it was removed
    deployment = parse_deployment(document({"com.example.App": {"componentVersion": "1.0.0"}}))

    plan = plan_deployment(deployment, state, available(app), platform=LINUX)

    assert plan.target.configuration["com.example.App"] == {"x": 1}


def test_plan_errors_come_from_resolution() -> None:
    deployment = parse_deployment(document({"com.example.Nope": {"componentVersion": "1.0.0"}}))

    with pytest.raises(DeploymentError) as caught:
        plan_deployment(deployment, DeviceState(), {}, platform=LINUX)

    assert "no recipe for com.example.Nope" in str(caught.value)


def test_changes_for_a_rollback() -> None:
    before = DeviceState(components={"a": "2.0.0", "b": "1.0.0", "new": "1.0.0"})
    after = DeviceState(components={"a": "1.0.0", "b": "1.0.0", "gone": "1.0.0"})
    deps: dict[str, Sequence[tuple[str, str]]] = {"b": [("a", "HARD")]}

    stop, start = changes(before, after, deps)

    assert set(stop) == {"a", "b", "new"}
    assert set(start) == {"a", "b", "gone"}


def test_check_plan_refuses_unrenderable_scripts_and_clashing_policies() -> None:
    bad = make_recipe("com.example.Bad", "1.0.0", run="echo {nope:thing}")
    components = {"com.example.Bad": bad}
    paths = {"com.example.Bad": ComponentPaths("/a", "/d", "/w")}
    selected = {name: select_manifest(r, LINUX) for name, r in components.items()}
    with pytest.raises(RecipeError) as caught:
        check_plan(selected, {"com.example.Bad": {}}, paths, thing_name="t", root_path="/r")
    assert "com.example.Bad=1.0.0" in str(caught.value)
    assert caught.value.path == "Lifecycle.Run.Script"

    policy = {
        "accessControl": {
            "aws.greengrass.ipc.pubsub": {
                "same-id": {"operations": ["aws.greengrass#PublishToTopic"], "resources": ["t"]}
            }
        }
    }
    one = make_recipe("com.example.One", "1.0.0")
    two = make_recipe("com.example.Two", "1.0.0")
    selected = {r.name: select_manifest(r, LINUX) for r in (one, two)}
    paths = {name: ComponentPaths("/a", "/d", "/w") for name in selected}
    with pytest.raises(DeploymentError) as clash:
        check_plan(
            selected,
            {"com.example.One": policy, "com.example.Two": policy},
            paths,
            thing_name="t",
            root_path="/r",
        )
    assert "already used by com.example.One" in str(clash.value)


def test_dependencies_leave_out_aws_provided_components() -> None:
    app = make_recipe(
        "com.example.App",
        "1.0.0",
        deps={"aws.greengrass.Nucleus": ("^2.0.0", "SOFT"), "com.example.Lib": ("*", "HARD")},
    )
    assert dependencies_of({"com.example.App": select_manifest(app, LINUX)}) == {
        "com.example.App": [("com.example.Lib", "HARD")]
    }


# --- the journal ---------------------------------------------------------------------------


def test_current_state_and_records_round_trip(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    assert journal.current() == DeviceState()
    state = DeviceState(
        roots={"a": "1.0.0"},
        components={"a": "1.0.0", "lib": "2.0.0"},
        configuration={"a": {"x": [1, {"y": None}]}, "lib": {}},
        last_deployment_id="d-1",
    )
    journal.write_current(state)
    record = DeploymentRecord("d-2", {"deploymentId": "d-2"}, status=IN_PROGRESS, phase="FETCHING")
    record.snapshot = state
    journal.save(record)

    assert journal.current() == state
    loaded = journal.record("d-2")
    assert loaded is not None
    assert (loaded.status, loaded.phase, loaded.snapshot) == (IN_PROGRESS, "FETCHING", state)
    assert [r.deployment_id for r in journal.records()] == ["d-2"]  # current.json is no record
    leftovers = [p.name for p in journal.folder.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []
    assert state.describe() == "a 1.0.0, lib 2.0.0"


def test_the_queue_keeps_order_and_reports_unreadable_files(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    first = journal.enqueue({"deploymentId": "first", "components": {}})
    second = journal.enqueue({"deploymentId": "second", "components": {}})
    (journal.queue_dir / "99999999999999999999-broken.json").write_text("{nope")
    (journal.queue_dir / ".tmp-abc-half.json").write_text("{")

    items = journal.queued()

    assert [i.deployment_id for i in items] == ["first", "second", "broken"]
    assert items[0].path == first and items[1].path == second
    assert items[2].document is None and items[2].error and "not valid JSON" in items[2].error
    journal.dequeue(first)
    assert [i.deployment_id for i in journal.queued()] == ["second", "broken"]
    assert journal.cleanup_temporary() == [journal.queue_dir / ".tmp-abc-half.json"]


def test_a_damaged_state_file_is_a_clear_error(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.ensure()
    journal.current_path.write_text('{"roots": {}, "components": {"a": {}}}')

    with pytest.raises(JournalError) as caught:
        journal.current()

    assert str(journal.current_path) in str(caught.value)
    assert "delete it" in str(caught.value)


def test_files_are_replaced_atomically(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write_current(DeviceState(components={"a": "1.0.0"}))
    inode = os.stat(journal.current_path).st_ino

    journal.write_current(DeviceState(components={"a": "2.0.0"}))

    # a new file renamed over the old one: a reader holding the old one sees it whole
    assert os.stat(journal.current_path).st_ino != inode
    assert journal.current().components == {"a": "2.0.0"}


def test_the_agents_modules_import_nothing_else_of_modelyard() -> None:
    code = (
        "import json, sys\n"
        "import modelyard.edge.agent.cli, modelyard.edge.agent.__main__\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('modelyard'))))\n"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo
    )
    loaded = json.loads(out.stdout)

    assert "modelyard.edge.agent.agent" in loaded and "modelyard.edge.agent.journal" in loaded
    outside = [m for m in loaded if m not in ("modelyard", "modelyard.edge")]
    assert [m for m in outside if not m.startswith("modelyard.edge.agent")] == []
