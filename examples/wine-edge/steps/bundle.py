"""Bundle the Greengrass components com.ml.xgboost and com.ml.consumer for an edge device.

Step contract (files in, files out)::

    python bundle.py --model DIR --test DIR --components DIR --bundle DIR [--samples 5]

``--components`` holds one folder per component with its ``recipe.yaml`` and source files
(``components/xgboost``, ``components/consumer``); ``--model`` the trained ``model.json``;
``--test`` the test split. Written to ``--bundle``, laid out as ``modelyard-agent deploy
--recipe-dir bundle/recipes --artifact-dir bundle/artifacts`` (and ``greengrass-cli deployment
create --recipeDir --artifactDir``) expect::

    recipes/<name>-<version>.yaml         each recipe.yaml, with every artifact's Digest and
                                          Algorithm (base64 SHA-256 of the file) written in
    artifacts/<name>/<version>/<file>     each file a recipe names: model.json and samples.json
                                          made here, the others copied from the component folder
    recipes-docker/<name>-<version>.yaml  the recipes of a Docker device: recipe-docker.yaml
                                          where a component has one, else its recipe as above
    docker/<name>/                        the image's build context, for a component with a
                                          Dockerfile: the Dockerfile, its files, and the IPC client
    samples.json                          test rows as records (the consumer's requests)
    expected.json                         the booster's own predictions for those rows

``expected.json`` is computed here from the test split's numbers, independently of the component
code, so a test can compare what the device answers with what the model should answer.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from wine_io import COLORS, MODEL_COLUMNS, InputError, positive_int, read_split, run_step
from wine_model import MODEL_FILE, load_booster, model_file, predict

import modelyard.edge.ipc
from modelyard.edge.agent.digests import artifact_digest, verify_artifact
from modelyard.edge.agent.errors import AgentError
from modelyard.edge.agent.model import Artifact, Recipe
from modelyard.edge.agent.recipe import load_recipe, parse_recipe

RECIPE = "recipe.yaml"
DOCKER_RECIPE = "recipe-docker.yaml"
SAMPLES_FILE = "samples.json"
EXPECTED_FILE = "expected.json"
ALGORITHM = "SHA-256"
# the image's `modelyard` package: only the IPC client, which needs nothing but the stdlib
_IPC_PACKAGE = {
    "modelyard/__init__.py": '"""modelyard\'s IPC client only (see edge/ipc.py)."""\n',
    "modelyard/edge/__init__.py": '"""modelyard\'s IPC client only (see ipc.py)."""\n',
}


def choose_samples(features: np.ndarray, count: int) -> list[int]:
    """Row indices of ``count`` test rows, red and white alternating while both last."""
    red_column = MODEL_COLUMNS.index("color_red")
    reds = [i for i in range(len(features)) if features[i, red_column] == 1]
    whites = [i for i in range(len(features)) if features[i, red_column] != 1]
    chosen: list[int] = []
    while len(chosen) < count and (reds or whites):
        for group in (reds, whites):
            if group and len(chosen) < count:
                chosen.append(group.pop(0))
    return chosen


def to_records(features: np.ndarray) -> list[dict[str, float | int]]:
    """Rows as records keyed by the model's column names (the colour flags as 0/1)."""
    return [
        {
            name: int(value) if name in COLORS else float(value)
            for name, value in zip(MODEL_COLUMNS, row, strict=True)
        }
        for row in features
    ]


def bundle_recipe(
    template: Path, made: dict[str, Path], out: Path, recipes_dir: Path
) -> tuple[Recipe, Path]:
    """Copy the artifacts of one recipe template, write the recipe with their digests."""
    text = _read(template)
    try:
        parse_recipe(text, source=str(template), fmt="yaml")  # the template's own mistakes
    except AgentError as exc:
        raise InputError(f"{template}: {exc}") from None
    document: dict[str, Any] = yaml.safe_load(text)
    name, version = document["ComponentName"], document["ComponentVersion"]
    artifacts_dir = out / "artifacts" / name / version
    for m, manifest in enumerate(document.get("Manifests") or []):
        for a, entry in enumerate(manifest.get("Artifacts") or []):
            artifact = Artifact(uri=entry["URI"].strip())
            if artifact.is_docker:
                continue  # an image: the agent checks it is on the device
            file = artifact.file_name
            source = made.get(file, template.parent / file)
            if not source.is_file():
                raise InputError(
                    f"{template}: Manifests[{m}].Artifacts[{a}].URI: no file {file} for "
                    f"{artifact.uri}; put it in {template.parent}"
                )
            target = artifacts_dir / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            entry["Digest"] = artifact_digest(target, ALGORITHM)
            entry["Algorithm"] = ALGORITHM
    recipe_file = recipes_dir / f"{name}-{version}.yaml"
    if recipe_file.exists():
        raise InputError(f"{template}: {name} {version} is already defined by another recipe")
    recipes_dir.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Written by steps/bundle.py from {template.parent.name}/{template.name}, with the "
        f"Digest of each file\n# in artifacts/{name}/{version}/.\n"
    )
    body = yaml.safe_dump(document, sort_keys=False, width=100, allow_unicode=True)
    recipe_file.write_text(header + body, encoding="utf-8")
    return _check(recipe_file, artifacts_dir), recipe_file


def _check(recipe_file: Path, artifacts_dir: Path) -> Recipe:
    """Read the written recipe back as the agent will, and verify its artifacts' digests."""
    try:
        recipe = load_recipe(recipe_file)
        for manifest in recipe.manifests:
            for artifact in manifest.artifacts:
                if not artifact.is_docker:
                    verify_artifact(artifacts_dir / artifact.file_name, artifact)
    except AgentError as exc:
        raise InputError(f"{recipe_file}: {exc}") from None
    return recipe


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None


def docker_context(component_dir: Path, recipe: Recipe, out: Path) -> Path:
    """The build context of a component's image: its Dockerfile, artifacts, the IPC client."""
    context = out / "docker" / recipe.name
    context.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(component_dir / "Dockerfile", context / "Dockerfile")
    artifacts_dir = out / "artifacts" / recipe.name / recipe.version
    for artifact in {a.file_name for m in recipe.manifests for a in m.artifacts if not a.is_docker}:
        shutil.copyfile(artifacts_dir / artifact, context / artifact)
    for relative, text in _IPC_PACKAGE.items():
        (context / relative).parent.mkdir(parents=True, exist_ok=True)
        (context / relative).write_text(text, encoding="utf-8")
    shutil.copyfile(modelyard.edge.ipc.__file__, context / "modelyard" / "edge" / "ipc.py")
    return context


def bundle(
    model_path: Path, test_path: Path, components: Path, out: Path, samples: int = 5
) -> list[Recipe]:
    """Write the bundle (see the module docstring); return the recipes of ``recipes/``."""
    components, out = Path(components), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: the bundle folder must be new or empty")
    folders = sorted(p.parent for p in components.glob(f"*/{RECIPE}"))
    if not folders:
        raise InputError(f"{components}: no component folders (*/{RECIPE})")
    booster = load_booster(model_path)
    features, _ = read_split(test_path, "test.csv")
    rows = features[choose_samples(features, samples)]
    out.mkdir(parents=True, exist_ok=True)
    (out / SAMPLES_FILE).write_text(json.dumps(to_records(rows), indent=1) + "\n")
    expected = [float(p) for p in predict(booster, rows)]
    (out / EXPECTED_FILE).write_text(json.dumps(expected) + "\n")
    made = {MODEL_FILE: model_file(model_path), SAMPLES_FILE: out / SAMPLES_FILE}

    recipes = []
    docker_recipes = []
    for folder in folders:
        recipe, recipe_file = bundle_recipe(folder / RECIPE, made, out, out / "recipes")
        recipes.append(recipe)
        docker_recipes.append((folder, recipe_file))
        if (folder / "Dockerfile").is_file():
            context = docker_context(folder, recipe, out)
            print(f"{recipe.ref}: Docker build context {context.relative_to(out)}")
        print(f"{recipe.ref}: {recipe_file.relative_to(out)}")
    if any((folder / DOCKER_RECIPE).is_file() for folder in folders):
        for folder, recipe_file in docker_recipes:
            target_dir = out / "recipes-docker"
            if (folder / DOCKER_RECIPE).is_file():
                docker, _ = bundle_recipe(folder / DOCKER_RECIPE, made, out, target_dir)
                print(f"{docker.ref} (Docker): recipes-docker/{docker.name}-{docker.version}.yaml")
            else:
                target_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(recipe_file, target_dir / recipe_file.name)
    print(f"{len(rows)} samples and the model's predictions for them: {expected}")
    return recipes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="folder with model.json")
    parser.add_argument("--test", required=True, type=Path, help="folder (or file) test.csv")
    parser.add_argument(
        "--components", required=True, type=Path, help="folder of component folders"
    )
    parser.add_argument("--bundle", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--samples", type=positive_int, default=5, help="test rows the consumer sends"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_step(
        "bundle", bundle, args.model, args.test, args.components, args.bundle, args.samples
    )


if __name__ == "__main__":
    sys.exit(main())
