"""Resolving a compute step before it runs: inputs to artifacts, references to values, the cache
key, and for each attempt a `StepTask` with its folders, command and environment."""

from __future__ import annotations

import hashlib
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.errors import ConfigError, ExpressionError
from modelyard.executors.base import Executor, StepTask
from modelyard.executors.contracts import env_name, modelyard_environment, sagemaker_contract
from modelyard.pipeline.cachekey import cache_key
from modelyard.pipeline.expressions import Expression
from modelyard.pipeline.model import DataSource, Step
from modelyard.pipeline.templates import (
    as_text,
    has_templates,
    render,
    split_command,
    whole_template,
)
from modelyard.project.checks import module_file, script_paths
from modelyard.settings import Settings
from modelyard.store import runs as db
from modelyard.store.artifacts import ArtifactRef, digest_file

from .evaluation import DataHandle, OutputHandle, evaluate, expression_context
from .runtime import Runtime

if TYPE_CHECKING:
    from modelyard.store.manifests import Manifest


@dataclass
class DataInput:
    """An input that is a data version: its files are copied from the source, checked."""

    source: DataSource
    manifest: Manifest


@dataclass
class ResolvedInput:
    ref: ArtifactRef  # for a data input: the manifest (its digest is the data version)
    filename: str | None  # for a file input: the name it is materialized under
    data: DataInput | None = None


@dataclass
class PreparedStep:
    runtime: Runtime
    run: db.RunRow
    step: Step
    context: dict[str, Any]
    inputs: dict[str, ResolvedInput]
    params: dict[str, Any]
    cache_key: str

    def executor(self) -> Executor:
        if self.step.kind == "python" and self.step.executor == "inline":
            from modelyard.executors.inline import InlineExecutor

            return InlineExecutor()
        from modelyard.executors.local import LocalProcessExecutor

        return LocalProcessExecutor()

    def task_for_attempt(self, settings: Settings, number: int) -> StepTask:
        step, run = self.step, self.run
        workdir = fresh_workdir(settings, run.id, step.name, number)
        inputs = {}
        manifests = {}
        for name, resolved in self.inputs.items():
            if resolved.data is not None:
                inputs[name] = self._materialize_data(name, resolved, workdir)
                manifests[name] = inputs[name].with_name(f"{name}.manifest.json")
                continue
            if resolved.filename is not None:
                dest = workdir / "inputs" / name / resolved.filename
            else:
                dest = workdir / "inputs" / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            inputs[name] = self.runtime.store.materialize(resolved.ref, dest)
        outputs = {name: workdir / "outputs" / name for name in step.outputs}
        for folder in outputs.values():
            folder.mkdir(parents=True)
        project_dir = Path(run.project_dir)
        task = StepTask(
            run_id=run.id,
            step=step.name,
            attempt=number,
            kind=step.kind,
            project_dir=project_dir,
            cwd=project_dir / (step.workdir or ""),
            workdir=workdir,
            log_path=settings.logs_dir / f"run-{run.id}" / step.name / f"attempt-{number}.log",
            inputs=inputs,
            outputs=outputs,
            params=self.params,
            values=list(step.values),
            function=step.function,
            timeout=step.timeout,
            shell=step.shell,
        )
        paths = {"inputs": {k: str(v) for k, v in inputs.items()}}
        paths["outputs"] = {k: str(v) for k, v in outputs.items()}
        env = modelyard_environment(task)
        env |= {f"MODELYARD_MANIFEST_{env_name(k)}": str(v) for k, v in manifests.items()}
        extra_args: list[str] = []
        if step.contract == "sagemaker":
            sm_env, extra_args = sagemaker_contract(_channels_as_folders(task))
            env |= sm_env
        env |= {k: as_text(self._render(v, paths, quote=False)) for k, v in step.env.items()}
        task.env = env
        if step.kind == "run":
            task.argv = self._command(paths) + extra_args
            if step.shell:
                task.argv = [" ".join([task.argv[0], *map(shlex.quote, extra_args)])]
        return task

    def _materialize_data(self, name: str, resolved: ResolvedInput, workdir: Path) -> Path:
        """The data version's files in `inputs/NAME/`, its manifest in `inputs/NAME.manifest.json`
        (beside the folder, so the folder holds exactly the data)."""
        from modelyard.store.manifests import materialize

        assert resolved.data is not None
        folder = workdir / "inputs" / name
        folder.parent.mkdir(parents=True, exist_ok=True)
        data = resolved.data
        materialize(
            data.manifest, data.source, Path(self.run.project_dir), folder, resolved.ref.digest
        )
        (folder.parent / f"{name}.manifest.json").write_bytes(data.manifest.to_bytes())
        return folder

    def _command(self, paths: dict[str, Any]) -> list[str]:
        command = self.step.command
        assert command is not None
        if self.step.shell:
            assert isinstance(command, str)
            return [as_text(self._render(command, paths, quote=True))]
        words = list(command) if isinstance(command, tuple) else split_command(command)
        return [as_text(self._render(word, paths, quote=False)) for word in words]

    def _render(self, text: str, paths: dict[str, Any], *, quote: bool) -> Any:
        context = self.context | paths
        if not has_templates(text):
            return text

        def value(expression: Expression) -> Any:
            result = evaluate(expression, context, self.runtime.store)
            return shlex.quote(as_text(result)) if quote else result

        return render(text, value)


def fresh_workdir(settings: Settings, run_id: int, step: str, attempt: int) -> Path:
    """The attempt's scratch folder, empty (what an earlier try of this attempt left is gone)."""
    workdir = settings.work_dir / f"run-{run_id}" / step / f"attempt-{attempt}"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    return workdir


def _channels_as_folders(task: StepTask) -> StepTask:
    """SageMaker channels are folders: a file input is given as the folder holding it."""
    inputs = {k: v if v.is_dir() else v.parent for k, v in task.inputs.items()}
    return StepTask(**{**task.__dict__, "inputs": inputs})


def prepare_step(
    runtime: Runtime, run: db.RunRow, step: Step, steps: dict[str, db.StepRow]
) -> PreparedStep:
    context = expression_context(run, steps)
    root = Path(run.project_dir)
    inputs = {
        name: resolve_input(runtime, run, root, context, name, v) for name, v in step.inputs.items()
    }
    try:
        params = {
            k: render(v, lambda e: evaluate(e, context, runtime.store))
            if isinstance(v, str) and has_templates(v)
            else v
            for k, v in step.params.items()
        }
    except ExpressionError as exc:
        raise ConfigError(f"step '{step.name}' params: {exc}") from None
    placeholders = {
        "inputs": {k: f"<input:{k}>" for k in step.inputs},
        "outputs": {k: f"<output:{k}>" for k in step.outputs},
    }
    stable = context | placeholders

    def render_stable(text: str) -> Any:
        return (
            render(text, lambda e: evaluate(e, stable, runtime.store))
            if has_templates(text)
            else text
        )

    command = step.command
    words = [command] if isinstance(command, str) else list(command or ())
    resolved = {
        "params": params,
        "command": [render_stable(w) for w in words],
        "env": {k: render_stable(v) for k, v in step.env.items()},
    }
    key = cache_key(
        step,
        code_digest=code_digest(step, root),
        resolved=resolved,
        input_digests={k: v.ref.digest for k, v in inputs.items()},
        environment_digest=run.environment_digest,
    )
    return PreparedStep(runtime, run, step, context, inputs, params, key)


def _resolve_data(runtime: Runtime, run: db.RunRow, name: str, handle: DataHandle) -> ResolvedInput:
    from modelyard.store.manifests import read_manifest

    definition = run.definition.get("data_sources", {}).get(handle.source)
    if definition is None:
        raise ConfigError(
            f"input '{name}': run {run.id} has no definition of data source '{handle.source}'",
            hint="start a new run: the project file declares the data sources",
        )
    manifest, ref = read_manifest(runtime.store, handle.digest)
    return ResolvedInput(ref, None, DataInput(DataSource.from_json(definition), manifest))


def resolve_input(
    runtime: Runtime,
    run: db.RunRow,
    root: Path,
    context: dict[str, Any],
    name: str,
    value: str,
) -> ResolvedInput:
    expression = whole_template(value)
    if expression is not None:
        handle = evaluate(expression, context, runtime.store)
        if isinstance(handle, DataHandle):
            return _resolve_data(runtime, run, name, handle)
        if not isinstance(handle, OutputHandle):
            raise ConfigError(
                f"input '{name}' must refer to a step output or a data source, "
                f"got {type(handle).__name__}",
                hint="write ${{ steps.STEP.outputs.NAME }} or ${{ data.SOURCE }}",
            )
        return ResolvedInput(handle.ref, None)
    path = root / value
    if not path.exists():
        raise ConfigError(
            f"input '{name}': '{value}' does not exist in {root}",
            hint="create it or fix the path in modelyard.yaml",
        )
    ref = runtime.store.put_path(path)
    return ResolvedInput(ref, path.name if ref.kind == "file" else None)


def code_digest(step: Step, root: Path) -> str:
    """A digest of the step's code: its scripts or its function's module, plus `code:` paths."""
    paths: list[Path] = [root / p for p in step.code]
    if step.kind == "run":
        paths += [root / p for p in script_paths(step, root)]
    elif step.function:
        module = module_file(step.function.partition(":")[0], root)
        if module is not None:
            paths.append(module)
    digest = hashlib.sha256()
    for path in sorted(set(paths)):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.is_file() and "__pycache__" not in file.parts:
                # paths relative to the project, so a moved or re-cloned project keeps its cache
                name = file.relative_to(root) if file.is_relative_to(root) else file
                digest.update(f"{name}\0{digest_file(file)}\n".encode())
    return "sha256:" + digest.hexdigest()
