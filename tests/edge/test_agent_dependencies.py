"""The device agent runs with the core dependencies only (`pip install 'modelyard[agent]'`): the
package's metadata says so, and in an interpreter where every control-plane library is missing
the agent's modules import, its CLI answers and a recipe parses, while the `modelyard` command
says which extra to install instead of a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import requires
from pathlib import Path

import pytest

from modelyard.cli.main import CONTROL_PLANE_MODULES

RECIPES = Path(__file__).parent / "recipes"
# what must be absent too: the control plane's own dependencies, and the engines it uses
ABSENT = sorted(CONTROL_PLANE_MODULES | {"numpy", "pandas", "xgboost", "sklearn", "uvicorn"})
BLOCKER = f"""
import importlib.abc
import sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Absent())
"""


def run_without_control_plane(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(BLOCKER + textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )


def test_the_core_requirements_are_the_agents_only() -> None:
    declared = requires("modelyard") or []
    core = sorted(r.split(">")[0].split("=")[0] for r in declared if "extra ==" not in r)
    assert core == ["PyYAML", "psutil", "semantic-version"]
    assert any('extra == "control"' in r and r.startswith("SQLAlchemy") for r in declared)


def test_the_agent_works_where_the_control_plane_is_not_installed(tmp_path: Path) -> None:
    done = run_without_control_plane(
        f"""
        import importlib, pkgutil
        import modelyard.edge.agent as agent
        for module in pkgutil.iter_modules(agent.__path__):
            importlib.import_module("modelyard.edge.agent." + module.name)
        import modelyard.edge.ipc
        from modelyard.edge.agent.recipe import load_recipe
        recipe = load_recipe({str(RECIPES / "com.ml.consumer-1.0.0.yaml")!r})
        print("recipe", recipe.ref)
        from modelyard.edge.agent.cli import main
        try:
            main(["--help"])
        except SystemExit as exit:
            print("help exit", exit.code)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {ABSENT!r})
        print("loaded", loaded)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "recipe com.ml.consumer=1.0.0" in done.stdout
    assert "usage: modelyard-agent" in done.stdout and "help exit 0" in done.stdout
    assert "loaded []" in done.stdout


@pytest.mark.parametrize("command", [["validate"], ["runs"], ["endpoint", "list"]])
def test_the_control_plane_command_names_the_extra_to_install(
    tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "modelyard.yaml").write_text("name: shop\npipelines: {}\n")
    done = run_without_control_plane(
        f"""
        from modelyard.cli.main import main
        raise SystemExit(main({command!r}))
        """,
        tmp_path,
    )
    assert done.returncode == 7, done.stdout + done.stderr
    assert "pip install 'modelyard[control]'" in done.stderr
    assert "Traceback" not in done.stderr
