"""The register step on the driver's side: resolve it, check its gate, prepare the packaging.

The driver resolves everything that needs the run's state here (metrics from outputs, gate
thresholds, which files of which outputs make the package, the lineage), checks the gate before
any packaging, and runs the packaging as an attempt in a child process
(`modelyard.registry.register_step`). When that succeeds, the driver records the version with
`modelyard.registry.service.record_version` in the transaction that completes the step.
Nothing here imports MLflow.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.errors import ConfigError, ExpressionError
from modelyard.executors.base import Executor, StepTask
from modelyard.executors.contracts import modelyard_environment
from modelyard.pipeline.expressions import Expression
from modelyard.pipeline.model import EVIDENCE_OUTPUT, REGISTER_OUTPUT, REGISTER_VALUES, Step
from modelyard.pipeline.registration import EvidenceSpec, Registration
from modelyard.pipeline.templates import render_value
from modelyard.registry.gates import GateReport, ResolvedRule, metric_directions, resolve_rules
from modelyard.settings import Settings
from modelyard.store import runs as db
from modelyard.store.artifacts import ArtifactRef

from .evaluation import evaluate, expression_context
from .preparation import ResolvedInput, fresh_workdir, resolve_input
from .runtime import Runtime

# The usual file names inside a step's output folder, and the endings that may stand in for them.
_USUAL_FILES = {
    "preprocessor": ("preprocessor.joblib", (".joblib", ".pkl", ".pickle")),
    "booster": ("xgboost-model.json", (".json", ".ubj", ".model", ".bst")),
}


@dataclass(frozen=True)
class PackageInput:
    ref: ArtifactRef
    file: str | None  # the file inside a dir artifact (None: the artifact itself)
    # a file artifact (a project path) is materialized under its own name: libraries may go by
    # the ending (.json or .ubj for XGBoost)
    filename: str | None = None


@dataclass(frozen=True)
class ChampionSide:
    """The version the candidate's evidence compares with, as the child process needs it."""

    label: str  # "abalone/3 (@champion)"
    ref: str  # "abalone/3"
    package: ArtifactRef
    metrics: dict[str, Any]
    params: dict[str, Any]
    lineage: dict[str, Any]
    mlflow_run_url: str | None  # the page of its run on a tracking server, once pushed


@dataclass(frozen=True)
class PreparedEvidence:
    data: PackageInput  # the evaluation set: a CSV file, or a folder of them
    spec: EvidenceSpec
    champion: ChampionSide | None
    directions: dict[str, str]


@dataclass
class PreparedRegistration:
    runtime: Runtime
    run: db.RunRow
    step: Step
    registration: Registration
    metrics: dict[str, float]
    params: dict[str, Any]
    tags: dict[str, str]
    rules: list[ResolvedRule]
    inputs: dict[str, PackageInput]
    input_example: list[dict[str, Any]] | None
    lineage: dict[str, Any]
    evidence: PreparedEvidence | None = None
    cache_key: str | None = None  # registration is a side effect: it is never cached

    @property
    def actor(self) -> str:
        return f"run {self.run.id}"

    def check_gate(self) -> GateReport:
        from modelyard.registry.service import check_gate

        with self.runtime.db.begin() as conn:
            return check_gate(
                conn, self.run.project, self.registration.model, self.rules, self.metrics
            )

    def executor(self) -> Executor:
        from modelyard.executors.local import LocalProcessExecutor

        return LocalProcessExecutor()

    def task_for_attempt(self, settings: Settings, number: int) -> StepTask:
        run, step = self.run, self.step
        workdir = fresh_workdir(settings, run.id, step.name, number)
        files: dict[str, str] = {}
        for name, package_input in self.inputs.items():
            target = workdir / "inputs" / name
            if package_input.ref.kind == "file":
                target = target / (package_input.filename or name)
            path = self.runtime.store.materialize(package_input.ref, target)
            files[name] = str(path / package_input.file if package_input.file else path)
        outputs = {REGISTER_OUTPUT: workdir / "outputs" / REGISTER_OUTPUT}
        evidence = None
        if self.evidence is not None:
            evidence = self._evidence_params(workdir)
            outputs[EVIDENCE_OUTPUT] = workdir / "outputs" / EVIDENCE_OUTPUT
        registration = self.registration
        params: dict[str, Any] = {
            "kind": "mlflow_model" if registration.mlflow_model is not None else "pipeline",
            "model": registration.model,
            **files,
            "columns": list(registration.columns) if registration.columns else None,
            "input_example": self.input_example,
            "requirements": list(registration.requirements),
            "metadata": {
                "model": registration.model,
                "project": run.project,
                "pipeline": run.pipeline,
                "run_id": run.id,
                "step": step.name,
            },
            "evidence": evidence,
        }
        for output in outputs.values():
            output.mkdir(parents=True)
        task_file = workdir / "task.json"
        project_dir = Path(run.project_dir)
        task = StepTask(
            run_id=run.id,
            step=step.name,
            attempt=number,
            kind="register",
            project_dir=project_dir,
            cwd=project_dir,
            workdir=workdir,
            log_path=settings.logs_dir / f"run-{run.id}" / step.name / f"attempt-{number}.log",
            inputs={name: Path(path) for name, path in files.items()},
            outputs=outputs,
            params=params,
            values=[REGISTER_OUTPUT],
            argv=[sys.executable, "-m", "modelyard.registry.register_step", str(task_file)],
            timeout=step.timeout,
        )
        task.env = modelyard_environment(task)
        task_file.write_text(task.to_json(), encoding="utf-8")
        return task

    def _evidence_params(self, workdir: Path) -> dict[str, Any]:
        """Materialize the evaluation set and the champion's package; say what to compare."""
        evidence = self.evidence
        assert evidence is not None
        store = self.runtime.store
        data = evidence.data
        target = workdir / "inputs" / "evaluation"
        if data.ref.kind == "file":
            target = target / (data.filename or "evaluation.csv")
        path = store.materialize(data.ref, target)
        champion = None
        if evidence.champion is not None:
            side = evidence.champion
            package = store.materialize(side.package, workdir / "inputs" / "champion")
            champion = {
                "label": side.label,
                "ref": side.ref,
                "mlflow_run_url": side.mlflow_run_url,
                "package": str(package),
                "metrics": side.metrics,
                "params": side.params,
                "lineage": side.lineage,
            }
        return {
            "model": self.registration.model,
            "data": str(path / data.file if data.file else path),
            "file": None,  # a folder's file was chosen on the driver's side
            "label": evidence.spec.label,
            "candidate": {
                "label": f"candidate (run {self.run.id})",
                "metrics": self.metrics,
                "params": self.params,
                "lineage": self.lineage,
            },
            "champion": champion,
            "directions": evidence.directions,
        }


def not_registered(registration: Registration, reason: str) -> dict[str, Any]:
    """The values of a register step whose gate refused the version."""
    values: dict[str, Any] = dict.fromkeys(REGISTER_VALUES)
    return values | {"registered": False, "model": registration.model, "reason": reason}


def registered(registration: Registration, version: int, digest: str) -> dict[str, Any]:
    values: dict[str, Any] = dict.fromkeys(REGISTER_VALUES)
    return values | {
        "registered": True,
        "model": registration.model,
        "version": version,
        "package_digest": digest,
    }


def prepare_registration(
    runtime: Runtime, run: db.RunRow, step: Step, steps: dict[str, db.StepRow]
) -> PreparedRegistration:
    """Resolve a register step against the run; a ConfigError says what is wrong."""
    registration = step.registration
    assert registration is not None
    context = expression_context(run, steps)

    def render(what: str, value: Any) -> Any:
        def value_of(expression: Expression) -> Any:
            return evaluate(expression, context, runtime.store)

        try:
            return render_value(value, value_of)
        except ExpressionError as exc:
            raise ConfigError(f"register step '{step.name}' {what}: {exc.message}") from None

    def number(what: str, value: Any) -> float:
        rendered = render(what, value)
        if isinstance(rendered, str):
            with contextlib.suppress(ValueError):  # a number rendered inside text
                rendered = float(rendered)
        if (
            isinstance(rendered, bool)
            or not isinstance(rendered, int | float)
            or not math.isfinite(rendered)
        ):
            raise ConfigError(
                f"register step '{step.name}': {what} is {rendered!r}, not a number",
                hint="refer to a number, e.g. ${{ json(steps.evaluate.outputs.metrics, "
                "'evaluation.json').mse }}",
            )
        return float(rendered)

    metrics = {name: number(f"metric '{name}'", v) for name, v in registration.metrics.items()}
    rules = resolve_rules(registration.gate, number)
    for rule in rules:
        if rule.better_than is not None and rule.direction is None:
            raise ConfigError(
                f"register step '{step.name}': gate rule on '{rule.metric}' does not say "
                "whether lower or higher is better",
                hint="add direction: lower or direction: higher",
            )
    # as JSON (a reference to an output is recorded as its digest): they are stored with the version
    extra = json.loads(json.dumps(render("params", registration.params), default=str))
    params = dict(run.params) | dict(extra)
    tags = {str(k): str(v) for k, v in render("tags", registration.tags).items()}
    root = Path(run.project_dir)
    inputs: dict[str, PackageInput] = {}
    for key, source in registration.package_sources().items():
        resolved = resolve_input(runtime, run, root, context, key, source)
        inputs[key] = _package_input(runtime, step, key, resolved, registration)
    example = render("input_example", registration.input_example)
    records = _input_example(step, registration, example)
    git = None
    if run.git_commit is not None or run.git_branch is not None or run.git_dirty is not None:
        git = {"commit": run.git_commit, "dirty": run.git_dirty, "branch": run.git_branch}
    lineage = {
        "run_id": run.id,
        "project": run.project,
        "pipeline": run.pipeline,
        "step": step.name,
        "git": git,
        "data": dict(run.data_versions or {}),
        "inputs": {key: value.ref.digest for key, value in inputs.items()},
    }
    evidence = None
    if registration.evidence is not None:
        spec = registration.evidence
        resolved = resolve_input(runtime, run, root, context, "evidence", spec.data)
        evidence = PreparedEvidence(
            data=_evaluation_input(runtime, step, spec, resolved),
            spec=spec,
            champion=_champion(runtime, run.project, registration.model, spec.compare_with),
            directions=metric_directions(metrics, rules),
        )
    return PreparedRegistration(
        runtime,
        run,
        step,
        registration,
        metrics,
        params,
        tags,
        rules,
        inputs,
        records,
        lineage,
        evidence,
    )


def _evaluation_input(
    runtime: Runtime, step: Step, spec: EvidenceSpec, resolved: ResolvedInput
) -> PackageInput:
    ref = resolved.ref
    if ref.kind == "value":
        raise ConfigError(
            f"register step '{step.name}': evidence data must be a CSV file or a folder of "
            "them, not a value",
            hint="refer to an output folder: ${{ steps.STEP.outputs.NAME }}",
        )
    if ref.kind == "file" or spec.file is None:
        return PackageInput(ref, None, resolved.filename)
    files = runtime.store.list_files(ref)
    if spec.file not in files:
        raise ConfigError(
            f"register step '{step.name}': the evidence data folder has no file '{spec.file}'",
            hint="its files are: " + (", ".join(files[:10]) or "(none)"),
        )
    return PackageInput(ref, spec.file)


def _champion(runtime: Runtime, project: str, model: str, alias: str) -> ChampionSide | None:
    """The version `alias` points at now, with its package's artifact ref; None if unset."""
    from modelyard.store import registry as rdb
    from modelyard.tracking.records import tracking_link

    with runtime.db.begin() as conn:
        found = rdb.get_model(conn, project, model)
        version = rdb.version_of_alias(conn, found.id, alias) if found is not None else None
        if version is None:
            return None
        package = db.get_artifact(conn, version.package_digest)
        url = None
        if version.run_id is not None:
            url = tracking_link(conn, version.run_id, runtime.settings).url
    if package is None:  # recorded before artifacts were indexed: its kind and size are known
        package = ArtifactRef(version.package_digest, "dir", version.package_size)
    return ChampionSide(
        label=f"{model}/{version.version} (@{alias})",
        ref=f"{model}/{version.version}",
        package=package,
        metrics=dict(version.metrics),
        params=dict(version.params),
        lineage=dict(version.lineage),
        mlflow_run_url=url,
    )


def _package_input(
    runtime: Runtime, step: Step, key: str, resolved: ResolvedInput, registration: Registration
) -> PackageInput:
    ref = resolved.ref
    if key == "mlflow_model":
        if ref.kind != "dir":
            raise ConfigError(
                f"register step '{step.name}': mlflow_model must be a folder (an MLflow model "
                f"with its MLmodel file), not a {ref.kind}",
                hint="refer to the output folder the model was saved into",
            )
        return PackageInput(ref, None)
    if ref.kind != "dir":
        return PackageInput(ref, None, resolved.filename)
    spec = registration.preprocessor if key == "preprocessor" else registration.booster
    assert spec is not None
    files = runtime.store.list_files(ref)
    what = "model" if key == "booster" else key
    if spec.file is not None:
        if spec.file not in files:
            raise ConfigError(
                f"register step '{step.name}': the {what} folder has no file '{spec.file}'",
                hint="its files are: " + (", ".join(files[:10]) or "(none)"),
            )
        return PackageInput(ref, spec.file)
    usual, endings = _USUAL_FILES[key]
    if usual in files:
        return PackageInput(ref, usual)
    candidates = [f for f in files if f.endswith(endings)]
    if len(candidates) == 1:
        return PackageInput(ref, candidates[0])
    raise ConfigError(
        f"register step '{step.name}': cannot tell which file of the {what} folder to package "
        f"(no {usual}; files: {', '.join(files[:10]) or '(none)'})",
        hint=f"name it: {what}: {{output: ..., file: NAME}}",
    )


def _input_example(
    step: Step, registration: Registration, example: Any
) -> list[dict[str, Any]] | None:
    """Records from raw rows (lists, in the order of `columns`) or records (mappings)."""
    if example is None:
        return None
    rows: list[Any] | None = None
    if isinstance(example, dict):
        rows = [example]
    elif isinstance(example, list) and example:
        nested = [isinstance(r, list | dict) for r in example]
        rows = example if all(nested) else [example] if not any(nested) else None
    if not rows:
        raise ConfigError(
            f"register step '{step.name}': input_example must be raw rows (lists of values in "
            f"the order of `columns`) or records (mappings), got {example!r:.80}",
            hint="write e.g. input_example: [[M, 0.455, 0.365, ...]]",
        )
    records = []
    columns = list(registration.columns or ())
    for index, row in enumerate(rows, start=1):
        if isinstance(row, dict):
            records.append({str(k): v for k, v in row.items()})
            continue
        if not columns:
            raise ConfigError(
                f"register step '{step.name}': input_example has raw rows but no `columns:` "
                "name their values",
                hint="add columns: [the raw input columns, in order]",
            )
        if len(row) != len(columns):
            raise ConfigError(
                f"register step '{step.name}': input_example row {index} has {len(row)} values;"
                f" columns has {len(columns)}",
                hint=f"give one value per column: {', '.join(columns)}",
            )
        records.append({c: _parsed(v) for c, v in zip(columns, row, strict=True)})
    return records


def _parsed(value: Any) -> Any:
    """A raw value as a CSV line would give it: numbers in text become numbers."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
