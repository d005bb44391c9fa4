"""Importing a project's own Python modules (step functions, pipeline definitions).

The project folder comes first on sys.path. A module of the same name already imported from
another project (a long-lived process, tests) is dropped first, so each project gets its own code;
so are the project's modules when one of their files changed since it was imported, so an edited
step function runs its new code (its cache key already changed with the file).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

_lock = threading.Lock()
# module name -> (file, mtime_ns, size) of the project modules imported here
_stamps: dict[str, tuple[str, int, int]] = {}


def import_project_module(name: str, root: Path) -> ModuleType:
    root = root.resolve()
    with _lock:
        if not sys.path or sys.path[0] != str(root):
            with contextlib.suppress(ValueError):
                sys.path.remove(str(root))
            sys.path.insert(0, str(root))
        top = name.split(".")[0]
        loaded = sys.modules.get(top)
        local = (root / top).is_dir() or (root / f"{top}.py").is_file()
        if loaded is not None and local:
            origin = getattr(loaded, "__file__", None) or ""
            if not Path(origin).resolve().is_relative_to(root):
                _drop(k for k in sys.modules if k == top or k.startswith(top + "."))
        project = _project_modules(root)
        if any(_stamps.get(key) != _stamp(path) for key, path in project.items()):
            _drop(project)
        module = importlib.import_module(name)
        for key, path in _project_modules(root).items():
            _stamps.setdefault(key, _stamp(path))
        return module


def _project_modules(root: Path) -> dict[str, str]:
    """The imported Python modules found in the project folder itself: name -> file.

    Only modules at the path their name gives (`a/b.py`, `a/b/__init__.py`), so packages
    installed in a virtualenv inside the project are never counted.
    """
    found = {}
    for key, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if not origin or not origin.endswith(".py") or not origin.startswith(str(root)):
            continue
        base = root.joinpath(*key.split("."))
        if Path(origin) in (base.with_suffix(".py"), base / "__init__.py"):
            found[key] = origin
    return found


def _stamp(path: str) -> tuple[str, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (path, -1, -1)
    return (path, st.st_mtime_ns, st.st_size)


def _drop(names: Iterable[str]) -> None:
    for key in list(names):
        sys.modules.pop(key, None)
        _stamps.pop(key, None)
    importlib.invalidate_caches()
