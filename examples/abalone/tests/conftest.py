"""Fixtures for the abalone step tests: the step scripts loaded as modules, and the data file.

The steps are plain scripts (not a package), so they are loaded from their paths under unique
module names; nothing depends on the working directory. They import their shared module
``abalone_io`` (``steps/abalone_io.py``) by its plain name, so the steps folder goes on
``sys.path`` below.
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
DATA_FILE = EXAMPLE_DIR / "data" / "abalone.data"

# The step scripts do `import abalone_io` / `from abalone_io import ...`. Run as
# `python steps/x.py`, Python puts the script's own folder (steps/) first on sys.path, so the
# import resolves there; loading a script by path with importlib (load_step below) does not, so
# the steps folder must be on sys.path here or those imports fail with ModuleNotFoundError. It is
# appended rather than put first: this conftest runs in the project's whole test session, and the
# folder's train.py / evaluate.py / preprocess.py must not shadow same-named installed modules.
if str(STEPS_DIR) not in sys.path:
    sys.path.append(str(STEPS_DIR))


def load_step(name: str) -> ModuleType:
    module_name = f"abalone_step_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, STEPS_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def preprocess_step() -> ModuleType:
    return load_step("preprocess")


@pytest.fixture(scope="session")
def train_step() -> ModuleType:
    return load_step("train")


@pytest.fixture(scope="session")
def evaluate_step() -> ModuleType:
    return load_step("evaluate")


@pytest.fixture(scope="session")
def abalone_file() -> Path:
    return DATA_FILE


@pytest.fixture(scope="session")
def abalone_lines() -> list[str]:
    return DATA_FILE.read_text(encoding="utf-8").splitlines()


@pytest.fixture
def run_script():
    """Run a step script as a subprocess, the way the pipeline runs it."""

    def run(name: str, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(STEPS_DIR / f"{name}.py"), *map(str, args)],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=120,
        )

    return run
