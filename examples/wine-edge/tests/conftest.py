"""Fixtures for the wine-edge tests: the step scripts and component programs loaded as modules.

The steps and components are plain scripts (not a package), so they are loaded from their paths
under unique module names; nothing depends on the working directory. The steps import their
shared modules (``wine_io``, ``wine_model``) by plain name, so the steps folder is put on
``sys.path`` below: appended, not first, because this conftest runs in the project's whole test
session and another example's steps folder has a ``train.py`` and an ``evaluate.py`` too (those
names are never imported plainly, only by path, so the order does not matter for them).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE_DIR = Path(__file__).resolve().parents[1]
STEPS_DIR = EXAMPLE_DIR / "steps"
COMPONENTS_DIR = EXAMPLE_DIR / "components"
DATA_DIR = EXAMPLE_DIR / "data"

if str(STEPS_DIR) not in sys.path:
    sys.path.append(str(STEPS_DIR))


def load_module(module_name: str, path: Path) -> ModuleType:
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def prepare_step() -> ModuleType:
    return load_module("wine_step_prepare", STEPS_DIR / "prepare.py")


@pytest.fixture(scope="session")
def train_step() -> ModuleType:
    return load_module("wine_step_train", STEPS_DIR / "train.py")


@pytest.fixture(scope="session")
def evaluate_step() -> ModuleType:
    return load_module("wine_step_evaluate", STEPS_DIR / "evaluate.py")


@pytest.fixture(scope="session")
def bundle_step() -> ModuleType:
    return load_module("wine_step_bundle", STEPS_DIR / "bundle.py")


@pytest.fixture(scope="session")
def inference() -> ModuleType:
    return load_module("wine_component_inference", COMPONENTS_DIR / "xgboost" / "inference.py")


@pytest.fixture(scope="session")
def consumer() -> ModuleType:
    return load_module("wine_component_consumer", COMPONENTS_DIR / "consumer" / "consumer.py")


@pytest.fixture(scope="session")
def input_error() -> type[Exception]:
    """The steps' error class: the one of the plain ``wine_io`` module they all import."""
    error: type[Exception] = importlib.import_module("wine_io").InputError
    return error


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def components_dir() -> Path:
    return COMPONENTS_DIR


@pytest.fixture(scope="session")
def red_lines() -> list[str]:
    return (DATA_DIR / "winequality-red.csv").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="session")
def white_lines() -> list[str]:
    return (DATA_DIR / "winequality-white.csv").read_text(encoding="utf-8").splitlines()


@pytest.fixture
def small_data(tmp_path: Path, red_lines: list[str], white_lines: list[str]) -> Path:
    """A folder with the header and the first 150 rows of each colour's file."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "winequality-red.csv").write_text("\n".join(red_lines[:151]) + "\n")
    (folder / "winequality-white.csv").write_text("\n".join(white_lines[:151]) + "\n")
    return folder


@pytest.fixture
def run_script():
    """Run a step script as a subprocess, the way the pipeline runs it."""

    def run(name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(STEPS_DIR / f"{name}.py"), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    return run
