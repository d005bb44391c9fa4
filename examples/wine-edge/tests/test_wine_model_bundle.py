"""steps/train.py, evaluate.py and bundle.py on a slice of the data: the model, its report, and
the Greengrass bundle (recipes the agent accepts, artifacts matching their digests, samples with
the model's own predictions, the Docker variant)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest

from modelyard.edge.agent.digests import artifact_digest, verify_artifact
from modelyard.edge.agent.recipe import load_recipe
from modelyard.edge.agent.store import ComponentStore

SMALL = {"num_round": 10}


@pytest.fixture(scope="module")
def trained(prepare_step, train_step, data_dir, tmp_path_factory) -> Path:
    """Prepared splits of a 600-row slice, and a small model trained on them."""
    out = tmp_path_factory.mktemp("trained")
    source = out / "data"
    source.mkdir()
    for name in ("winequality-red.csv", "winequality-white.csv"):
        lines = (data_dir / name).read_text().splitlines()[:301]
        (source / name).write_text("\n".join(lines) + "\n")
    prepare_step.prepare(source, out / "train", out / "test", seed=1)
    train_step.train(out / "train", out / "model", train_step.Hyperparameters(**SMALL))
    return out


@pytest.fixture(scope="module")
def bundled(bundle_step, trained, components_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    bundle_step.bundle(trained / "model", trained / "test", components_dir, out, samples=5)
    return out


def test_train_and_evaluate(trained, train_step, evaluate_step, tmp_path):
    model = trained / "model" / "model.json"
    assert json.loads(model.read_text())["learner"]["feature_names"][-2:] == [
        "color_red",
        "color_white",
    ]
    report = evaluate_step.evaluate(trained / "model", trained / "test", tmp_path / "evaluation")
    assert json.loads((tmp_path / "evaluation" / "evaluation.json").read_text()) == report
    rmse = report["regression_metrics"]["rmse"]["value"]
    mae = report["regression_metrics"]["mae"]["value"]
    assert report["rows"] == 120  # 20% of 600
    assert 0 < mae <= rmse < 2.0 and math.isfinite(rmse)

    # a seed gives the same model, byte for byte
    train_step.train(trained / "train", tmp_path / "again", train_step.Hyperparameters(**SMALL))
    assert (tmp_path / "again" / "model.json").read_bytes() == model.read_bytes()


def test_metrics_go_to_the_tracking_file(trained, evaluate_step, tmp_path, monkeypatch):
    metrics_file = tmp_path / "metrics.jsonl"
    monkeypatch.setenv("MODELYARD_METRICS_FILE", str(metrics_file))
    evaluate_step.evaluate(trained / "model", trained / "test", tmp_path / "evaluation")
    lines = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    assert [line["metric"] for line in lines] == ["rmse", "mae"]


def test_evaluate_refuses_a_model_of_other_features(evaluate_step, input_error, trained, tmp_path):
    other = tmp_path / "model.json"
    text = (trained / "model" / "model.json").read_text().replace('"color_red"', '"red"')
    other.write_text(text)
    with pytest.raises(input_error, match="the model's features are"):
        evaluate_step.evaluate(other, trained / "test", tmp_path / "evaluation")
    with pytest.raises(input_error, match="no such model folder or file"):
        evaluate_step.evaluate(tmp_path / "none", trained / "test", tmp_path / "evaluation")


def test_the_bundle_is_what_the_agent_deploys(bundled, tmp_path):
    recipes = sorted(p.name for p in (bundled / "recipes").iterdir())
    assert recipes == ["com.ml.consumer-1.0.0.yaml", "com.ml.xgboost-1.0.0.yaml"]
    files = {
        "com.ml.xgboost": ["inference.py", "model.json"],
        "com.ml.consumer": ["consumer.py", "samples.json"],
    }
    for name, expected in files.items():
        recipe = load_recipe(bundled / "recipes" / f"{name}-1.0.0.yaml")
        folder = bundled / "artifacts" / name / "1.0.0"
        assert sorted(p.name for p in folder.iterdir()) == expected
        (manifest,) = recipe.manifests
        assert [a.file_name for a in manifest.artifacts] == expected
        for artifact in manifest.artifacts:
            assert artifact.algorithm == "SHA-256"
            assert artifact.digest == artifact_digest(folder / artifact.file_name)
            verify_artifact(folder / artifact.file_name, artifact)
        assert manifest.lifecycle.install is not None
        assert manifest.lifecycle.install.script.startswith(
            "python3 -m pip install --disable-pip-version-check -q "
        )
        assert manifest.lifecycle.run is not None
        assert manifest.lifecycle.run.script.startswith(
            f"python3 -u {{artifacts:path}}/{expected[0]}"
        )
    # the agent's store takes the folder as a whole
    store = ComponentStore(tmp_path / "agent")
    assert {r.ref for r in store.add_recipes(bundled / "recipes")} == {
        "com.ml.xgboost=1.0.0",
        "com.ml.consumer=1.0.0",
    }


def test_access_control_is_scenario_s3s(bundled):
    xgboost = load_recipe(bundled / "recipes" / "com.ml.xgboost-1.0.0.yaml")
    policies = xgboost.default_configuration["accessControl"]["aws.greengrass.ipc.pubsub"]
    (policy,) = policies.values()
    assert sorted(policy["operations"]) == [
        "aws.greengrass#PublishToTopic",
        "aws.greengrass#SubscribeToTopic",
    ]
    assert sorted(policy["resources"]) == ["local/inference", "local/result"]
    consumer = load_recipe(bundled / "recipes" / "com.ml.consumer-1.0.0.yaml")
    assert consumer.default_configuration["interval"] == 5
    assert "--interval {configuration:/interval}" in consumer.manifests[0].lifecycle.run.script


def test_expected_predictions_are_the_models_and_the_component_gives_them(
    bundled, inference: ModuleType, consumer: ModuleType
):
    samples = json.loads((bundled / "samples.json").read_text())
    expected = json.loads((bundled / "expected.json").read_text())
    assert len(samples) == len(expected) == 5
    assert {s["color_red"] for s in samples} == {0, 1}  # both colours are sampled
    assert (bundled / "artifacts/com.ml.consumer/1.0.0/samples.json").read_text() == (
        bundled / "samples.json"
    ).read_text()
    # what the deployed component answers the consumer's request, without an agent
    predict, features = inference.load_model(bundled / "artifacts/com.ml.xgboost/1.0.0/model.json")
    message = json.loads(json.dumps(consumer.build_request(samples)))
    answer = inference.handle(message, predict, features)
    assert answer == pytest.approx(expected, abs=1e-6)
    assert len(set(expected)) > 1  # not a constant model


def test_docker_variant(bundled, components_dir):
    recipe = load_recipe(components_dir / "xgboost" / "recipe-docker.yaml")
    assert recipe.ref == "com.ml.xgboost=1.0.0"
    (artifact,) = recipe.manifests[0].artifacts
    assert artifact.is_docker and artifact.uri == "docker:modelyard/wine-xgboost:1.0.0"
    run = recipe.manifests[0].lifecycle.run
    assert run is not None
    for needed in ("-e SVCUID", "-e AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "-v "):
        assert needed in run.script
    assert [d.name for d in recipe.dependencies] == ["aws.greengrass.DockerApplicationManager"]
    # the bundle's Docker device set: the docker recipe plus the consumer, and a build context
    assert sorted(p.name for p in (bundled / "recipes-docker").iterdir()) == [
        "com.ml.consumer-1.0.0.yaml",
        "com.ml.xgboost-1.0.0.yaml",
    ]
    bundled_docker = load_recipe(bundled / "recipes-docker" / "com.ml.xgboost-1.0.0.yaml")
    assert bundled_docker.manifests[0].artifacts[0].is_docker
    context = bundled / "docker" / "com.ml.xgboost"
    assert sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file()) == [
        "Dockerfile",
        "inference.py",
        "model.json",
        "modelyard/__init__.py",
        "modelyard/edge/__init__.py",
        "modelyard/edge/ipc.py",
    ]
    dockerfile = (context / "Dockerfile").read_text()
    assert "COPY inference.py model.json" in dockerfile and "COPY modelyard/" in dockerfile


def test_bundle_errors_are_clear(bundle_step, trained, components_dir, tmp_path):
    # a recipe naming a file that is nowhere
    components = tmp_path / "components"
    (components / "x").mkdir(parents=True)
    recipe = (components_dir / "consumer" / "recipe.yaml").read_text()
    (components / "x" / "recipe.yaml").write_text(recipe)
    with pytest.raises(bundle_step.InputError) as error:
        bundle_step.bundle(trained / "model", trained / "test", components, tmp_path / "b1")
    assert "Manifests[0].Artifacts[0].URI: no file consumer.py" in str(error.value)

    # a template with a mistake: the agent's own message, with the field path
    (components / "x" / "recipe.yaml").write_text(recipe.replace("Run:", "Runn:"))
    with pytest.raises(bundle_step.InputError) as error:
        bundle_step.bundle(trained / "model", trained / "test", components, tmp_path / "b2")
    assert "Manifests[0].Lifecycle.Runn: unknown lifecycle key" in str(error.value)

    (tmp_path / "b3").mkdir()
    (tmp_path / "b3" / "old").write_text("")
    with pytest.raises(bundle_step.InputError, match="must be new or empty"):
        bundle_step.bundle(trained / "model", trained / "test", components_dir, tmp_path / "b3")


def test_bundle_step_as_a_process(run_script, trained, components_dir, tmp_path):
    result = run_script(
        "bundle", "--model", trained / "model", "--test", trained / "test",
        "--components", components_dir, "--bundle", tmp_path / "bundle", "--samples", "0",
    )  # fmt: skip
    assert result.returncode == 2 and "--samples" in result.stderr
    result = run_script(
        "bundle", "--model", tmp_path / "nothing", "--test", trained / "test",
        "--components", components_dir, "--bundle", tmp_path / "bundle",
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"bundle: error: {tmp_path / 'nothing'}: no such model folder or file"
    )
