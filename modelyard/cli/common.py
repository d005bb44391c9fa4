"""What every command needs: the project, the runtime, and rendering of tables, times and JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelyard.engine.runtime import Runtime
    from modelyard.project.loader import Project


def project_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.project) if args.project else None


def load(args: argparse.Namespace) -> Project:
    """The validated project (errors name file:line)."""
    from modelyard.project.loader import load_project

    project = load_project(project_dir(args))
    for warning in project.warnings:
        print(str(warning), file=sys.stderr)
    return project


def runtime_for(args: argparse.Namespace, project: Project | None = None) -> Runtime:
    """The runtime of the project; commands about existing runs read only its `settings:`."""
    from modelyard.engine.runtime import Runtime
    from modelyard.project.loader import find_project_root, project_settings
    from modelyard.settings import Settings

    if project is not None:
        return Runtime(Settings.resolve(project.root, project.settings))
    root = find_project_root(project_dir(args))
    return Runtime(Settings.resolve(root, project_settings(root)))


def project_name(args: argparse.Namespace) -> str:
    """The project's name, for commands that only read or decide recorded state: they must keep
    working while the project file is being edited, so an invalid file falls back to the folder's
    name (the default name of a project)."""
    from modelyard.errors import ConfigError
    from modelyard.project.loader import find_project_root, load_project

    root = find_project_root(project_dir(args))
    try:
        return load_project(root, check_paths=False).name
    except ConfigError:
        return root.name


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON (stable fields)")


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def local_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def duration(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(end - start, 3)


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{rest:02.0f}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h{int(minutes):02d}m"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def print_file(path: Path, *, follow: Callable[[], bool] | None = None) -> None:
    """Print a file; with `follow`, keep printing what is appended while `follow()` is true, and
    once more after it turned false (what was written just before)."""
    position = 0
    while True:
        with open(path, "rb") as log:
            log.seek(position)
            chunk = log.read()
            position += len(chunk)
        if chunk:
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
        if follow is None:
            return
        if not follow():
            if not chunk:
                return
            continue
        time.sleep(0.3)  # polling a file for new lines, as `tail -f` does
