"""Write a throw-away project, open its runtime, and run a pipeline in-process."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelyard.engine.driver import Observer
from modelyard.engine.runtime import Runtime
from modelyard.project.loader import load_project
from modelyard.settings import Settings
from modelyard.store.runs import RunRow


def write_project(root: Path, project_yaml: str, files: Mapping[str, str] | None = None) -> Path:
    """Create `root` with modelyard.yaml (dedented) and the given files (path -> text)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "modelyard.yaml").write_text(textwrap.dedent(project_yaml))
    for relative, text in (files or {}).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def open_runtime(root: Path, database_url: str | None = None, **settings: Any) -> Runtime:
    """The runtime of the project at `root`, optionally on another metadata database."""
    values = dict(settings)
    if database_url:
        values["database_url"] = database_url
    return Runtime(Settings.resolve(root, values, environ={}))


def run_pipeline(
    runtime: Runtime,
    root: Path,
    pipeline: str,
    params: Mapping[str, Any] | None = None,
    observer: Observer | None = None,
    **options: Any,
) -> RunRow:
    """Load the project, create a run and drive it to its end (or its first approval)."""
    from modelyard.engine import service

    project = load_project(root)
    run_id = service.create_run(
        runtime, project, pipeline, params or {}, service.RunOptions(**options)
    )
    return service.drive_run(runtime, run_id, observer)
