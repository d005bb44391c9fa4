"""Importing a project's own Python modules (step functions, pipeline definitions).

The project folder comes first on sys.path. A module of the same name already imported from
another project (a long-lived process, tests) is dropped first, so each project gets its own code.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType


def import_project_module(name: str, root: Path) -> ModuleType:
    root = root.resolve()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    top = name.split(".")[0]
    loaded = sys.modules.get(top)
    local = (root / top).is_dir() or (root / f"{top}.py").is_file()
    if loaded is not None and local:
        origin = getattr(loaded, "__file__", None) or ""
        if not Path(origin).resolve().is_relative_to(root):
            for key in [k for k in sys.modules if k == top or k.startswith(top + ".")]:
                del sys.modules[key]
            importlib.invalidate_caches()
    return importlib.import_module(name)
