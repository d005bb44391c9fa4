"""Checks that need the project's files: inputs, scripts, code paths and python step functions."""

from __future__ import annotations

import ast
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

from modelyard.pipeline.lint import LintIssue
from modelyard.pipeline.model import Pipeline, Step
from modelyard.pipeline.templates import has_templates, split_command

# A command word with one of these endings is taken to be a script of the project.
SCRIPT_SUFFIXES = (".py", ".sh", ".bash", ".r", ".R", ".jl", ".js", ".rb", ".pl", ".ipynb")


def check_files(pipeline: Pipeline, root: Path) -> list[LintIssue]:
    issues: list[LintIssue] = []
    for step in pipeline.steps.values():
        here = ("steps", step.name)
        for name, value in step.inputs.items():
            if not has_templates(value) and not (root / value).exists():
                issues.append(
                    LintIssue(
                        "error",
                        (*here, "inputs", name),
                        f"input '{name}' of step '{step.name}': path '{value}' does not exist",
                        "paths are relative to the project folder; create it or fix the path",
                    )
                )
        for path in step.code:
            if not (root / path).exists():
                issues.append(
                    LintIssue(
                        "error",
                        (*here, "code"),
                        f"code path '{path}' of step '{step.name}' does not exist",
                        "list files or folders relative to the project folder",
                    )
                )
        if step.registration is not None:
            for key, source in step.registration.package_sources().items():
                if not has_templates(source) and not (root / source).exists():
                    issues.append(
                        LintIssue(
                            "error",
                            (*here, "register"),
                            f"{key} '{source}' of register step '{step.name}' does not exist",
                            "paths are relative to the project folder; or refer to a step "
                            "output: ${{ steps.STEP.outputs.NAME }}",
                        )
                    )
        if step.kind == "run":
            issues.extend(_check_scripts(step, root))
        if step.kind == "python":
            issues.extend(_check_function(step, root))
    return issues


def script_paths(step: Step, root: Path) -> list[str]:
    """Project-relative paths of the scripts a run step's command names (for lint and caching)."""
    words = _command_words(step)
    base = root / (step.workdir or "")
    found = []
    for word in words:
        if has_templates(word) or word.startswith("-"):
            continue
        if word.endswith(SCRIPT_SUFFIXES) or (("/" in word) and (base / word).is_file()):
            path = (base / word).resolve()
            try:
                found.append(str(path.relative_to(root.resolve())))
            except ValueError:
                continue  # an absolute tool such as /usr/bin/env is not project code
    return found


def _command_words(step: Step) -> list[str]:
    command = step.command
    if isinstance(command, tuple):
        return list(command)
    try:
        return split_command(command or "")
    except ValueError:
        return (command or "").split()


def _check_scripts(step: Step, root: Path) -> list[LintIssue]:
    issues = []
    for path in script_paths(step, root):
        if not (root / path).is_file():
            issues.append(
                LintIssue(
                    "error",
                    ("steps", step.name, "run"),
                    f"step '{step.name}' runs '{path}', which does not exist",
                    "create the script or fix its path (relative to the project folder"
                    + (f" / workdir '{step.workdir}'" if step.workdir else "")
                    + ")",
                )
            )
    return issues


def module_file(module: str, root: Path) -> Path | None:
    """The source file of `module`, looked up in the project first, without importing it."""
    relative = Path(*module.split("."))
    for candidate in (root / relative.with_suffix(".py"), root / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    spec = _find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _find_spec(module: str) -> ModuleSpec | None:
    """Like `importlib.util.find_spec`, but without importing the parent packages of `module`
    (their `__init__.py` is user code that may fail or have side effects)."""
    name, search, spec = "", None, None
    for part in module.split("."):
        if spec is not None and search is None:
            return None  # the parent is a module, not a package
        name = f"{name}.{part}" if name else part
        loaded = sys.modules.get(name)
        if loaded is not None:
            spec = getattr(loaded, "__spec__", None)
        else:
            spec = None
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                try:
                    spec = find(name, search) if find else None
                except (ImportError, ValueError):
                    spec = None
                if spec is not None:
                    break
        if spec is None:
            return None
        search = spec.submodule_search_locations
    return spec


def _check_function(step: Step, root: Path) -> list[LintIssue]:
    assert step.function is not None
    module, _, function = step.function.partition(":")
    here = ("steps", step.name, "python")
    source = module_file(module, root)
    if source is None:
        return [
            LintIssue(
                "error",
                here,
                f"step '{step.name}': module '{module}' not found",
                "modules are looked up in the project folder first, then in the installed "
                "packages; check the name (dots separate packages)",
            )
        ]
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except SyntaxError as exc:
        return [
            LintIssue(
                "error",
                here,
                f"step '{step.name}': {source}:{exc.lineno}: syntax error: {exc.msg}",
                "fix the Python syntax",
            )
        ]
    defined = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        defined |= {t.id for t in targets if isinstance(t, ast.Name)}
        if isinstance(node, ast.ImportFrom | ast.Import):
            defined |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
    if function not in defined:
        return [
            LintIssue(
                "error",
                here,
                f"step '{step.name}': '{function}' is not defined in {source}",
                "define the function at the top level of the module or fix the name",
            )
        ]
    return []
