"""Find and load a project: modelyard.yaml -> validated, linted `Project`.

Validating the file needs pydantic and PyYAML (~150 ms of imports). A project whose file has not
changed since its last successful load is read from a compiled copy in `.modelyard/` instead;
the checks that depend on other files (scripts, inputs, code paths) run every time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.errors import ConfigError, ProjectNotFound
from modelyard.pipeline.model import DataSource, Pipeline
from modelyard.project.checks import check_files
from modelyard.project.problems import Problem, ProjectInvalid, locate_issue
from modelyard.project.yamlsource import YamlSource, read_project_file
from modelyard.settings import STATE_DIR_NAME

PROJECT_FILE = "modelyard.yaml"
CACHE_FILE = "project.json"
# bump when the compiled form or the validation rules change, so old caches are ignored
CACHE_FORMAT = 5

__all__ = [
    "PROJECT_FILE",
    "Problem",
    "Project",
    "ProjectInvalid",
    "find_project_root",
    "load_project",
    "project_settings",
]


@dataclass
class Project:
    root: Path
    file: Path
    name: str
    settings: dict[str, Any]
    environment_lock: str | None
    pipelines: dict[str, Pipeline]
    warnings: list[Problem] = field(default_factory=list)
    data_sources: dict[str, DataSource] = field(default_factory=dict)

    def pipeline(self, name: str) -> Pipeline:
        try:
            return self.pipelines[name]
        except KeyError:
            known = ", ".join(self.pipelines) or "(none)"
            raise ConfigError(
                f"no pipeline named '{name}' in {self.file}",
                hint=f"the pipelines are: {known}",
            ) from None

    def data_source(self, name: str) -> DataSource:
        try:
            return self.data_sources[name]
        except KeyError:
            known = ", ".join(self.data_sources) or "(none: declare them under data_sources)"
            raise ConfigError(
                f"no data source named '{name}' in {self.file}",
                hint=f"the data sources are: {known}",
            ) from None


def find_project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: cwd or $MODELYARD_PROJECT) with the file."""
    if start is None:
        env = os.environ.get("MODELYARD_PROJECT")
        start = Path(env) if env else Path.cwd()
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    raise ProjectNotFound(
        f"no {PROJECT_FILE} in {start} or any folder above it",
        hint="run `modelyard init` to create a project here, or pass --project DIR",
    )


def load_project(root: Path | None = None, *, check_paths: bool = True) -> Project:
    root = find_project_root(root)
    file = root / PROJECT_FILE
    text = read_project_file(file)
    # the path is part of the key: cached messages name the file
    digest = hashlib.sha256(f"{file}\0{text}".encode()).hexdigest()
    cache = root / STATE_DIR_NAME / CACHE_FILE
    compiled = _read_cache(cache, digest)
    if compiled is None:
        from modelyard.project.compiler import compile_project

        result = compile_project(root, file, text)
        compiled = {
            "name": result.name,
            "data_sources": {n: d.to_json() for n, d in result.data_sources.items()},
            "settings": result.settings,
            "environment_lock": result.environment_lock,
            "pipelines": {n: p.to_json() for n, p in result.pipelines.items()},
            "lines": [[list(path), line] for path, line in result.lines.items()],
            "problems": [p.__dict__ for p in result.problems],
        }
        if result.cacheable:
            _write_cache(cache, digest, compiled)
    pipelines = {n: Pipeline.from_json(p) for n, p in compiled["pipelines"].items()}
    source = YamlSource(file, None, {tuple(path): line for path, line in compiled["lines"]})
    problems = [Problem(**p) for p in compiled["problems"]]
    if check_paths:
        problems += _file_problems(root, source, pipelines, compiled["environment_lock"])
    if any(p.level == "error" for p in problems):
        raise ProjectInvalid(problems)
    return Project(
        root=root,
        file=file,
        name=compiled["name"] or root.name,
        settings=compiled["settings"],
        environment_lock=compiled["environment_lock"],
        pipelines=pipelines,
        warnings=problems,
        data_sources={n: DataSource.from_json(d) for n, d in compiled["data_sources"].items()},
    )


def _file_problems(
    root: Path, source: YamlSource, pipelines: dict[str, Pipeline], lock: str | None
) -> list[Problem]:
    problems = []
    for name, pipeline in pipelines.items():
        problems += [locate_issue(source, name, i) for i in check_files(pipeline, root)]
    if lock and not (root / lock).is_file():
        problems.append(
            Problem(
                "error",
                source.where(("environment", "lock")),
                f"lock file '{lock}' does not exist",
                "create it (e.g. pip freeze > requirements.lock) or remove the setting",
            )
        )
    return problems


def _cache_key(digest: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("modelyard")
    except PackageNotFoundError:
        release = "unknown"
    return f"{CACHE_FORMAT}:{release}:{digest}"


def _read_cache(cache: Path, digest: str) -> dict[str, Any] | None:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != _cache_key(digest):
        return None
    compiled = data.get("compiled")
    return compiled if isinstance(compiled, dict) else None


def _write_cache(cache: Path, digest: str, compiled: dict[str, Any]) -> None:
    """Best effort and atomic: a failed write only costs the next load its speed."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache.with_name(f".{cache.name}.{os.getpid()}")
        temporary.write_text(json.dumps({"key": _cache_key(digest), "compiled": compiled}))
        os.replace(temporary, cache)
    except OSError:
        return


def project_settings(root: Path) -> dict[str, Any]:
    """Only the `settings:` section, for commands that act on recorded runs.

    They must keep working (to show, approve or cancel runs) while the file is being edited.
    """
    try:
        return load_project(root, check_paths=False).settings
    except ConfigError:
        pass
    # an invalid file: use its settings section if the YAML can be read at all
    from modelyard.project.yamlsource import load_yaml

    try:
        data = load_yaml(root / PROJECT_FILE).data
    except ConfigError:
        return {}
    settings = data.get("settings") if isinstance(data, dict) else None
    return settings if isinstance(settings, dict) else {}
