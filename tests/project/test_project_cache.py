"""The compiled-project cache: a valid, unchanged modelyard.yaml loads without re-validation,
and nothing that changed since is ever missed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelyard.project.loader import CACHE_FILE, ProjectInvalid, load_project
from modelyard.testing import write_project

PROJECT = """
pipelines:
  p:
    parameters: {n: 3}
    steps:
      a:
        run: python steps/a.py ${{ params.n }}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", PROJECT, {"steps/a.py": "print(1)\n"})


def _cache(root: Path) -> Path:
    return root / ".modelyard" / CACHE_FILE


def _modules_after_load(root: Path) -> set[str]:
    code = (
        "import sys; from pathlib import Path; from modelyard.project.loader import load_project;"
        f"load_project(Path({str(root)!r}));"
        "print(','.join(m for m in ('pydantic', 'yaml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(filter(None, out.stdout.strip().split(",")))


def test_unchanged_project_loads_from_the_cache_without_validation_libraries(root: Path) -> None:
    assert _modules_after_load(root) == {"pydantic", "yaml"}  # first load validates
    assert _cache(root).is_file()
    assert _modules_after_load(root) == set()  # second load: compiled copy


def test_an_edit_is_seen_at_once(root: Path) -> None:
    assert load_project(root).pipelines["p"].parameters["n"].default == 3
    (root / "modelyard.yaml").write_text(PROJECT.replace("{n: 3}", "{n: 4}"))
    assert load_project(root).pipelines["p"].parameters["n"].default == 4


def test_file_checks_run_on_a_cached_project(root: Path) -> None:
    load_project(root)
    (root / "steps" / "a.py").unlink()
    with pytest.raises(ProjectInvalid, match=r"steps/a\.py"):
        load_project(root)


def test_a_damaged_cache_is_ignored(root: Path) -> None:
    load_project(root)
    _cache(root).write_text("{not json")
    assert list(load_project(root).pipelines) == ["p"]


def test_an_invalid_project_is_not_cached(tmp_path: Path) -> None:
    bad = write_project(tmp_path / "bad", PROJECT.replace("run:", "runn:"))
    with pytest.raises(ProjectInvalid):
        load_project(bad)
    assert not _cache(bad).exists()
