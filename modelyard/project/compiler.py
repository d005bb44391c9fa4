"""Validating modelyard.yaml with pydantic and compiling it into pipelines (the slow path).

`modelyard.project.loader` calls this only when the file changed since the last successful load.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelyard.errors import ConfigError
from modelyard.pipeline.dag import referenced_data
from modelyard.pipeline.deployment import Deployment
from modelyard.pipeline.lint import lint_pipeline
from modelyard.pipeline.model import DataSource, Parameter, Pipeline, Retry, Step
from modelyard.pipeline.params import infer_type
from modelyard.pipeline.registration import EvidenceSpec, GateRule, PackageFile, Registration
from modelyard.project import schema
from modelyard.project.problems import Problem, ProjectInvalid, locate_issue
from modelyard.project.yamlsource import YamlSource, load_yaml


@dataclass
class Compiled:
    """What a valid project file compiles to: plain data, cacheable as JSON."""

    name: str | None
    data_sources: dict[str, DataSource]
    settings: dict[str, Any]
    environment_lock: str | None
    pipelines: dict[str, Pipeline]
    lines: dict[tuple[str | int, ...], int]
    problems: list[Problem]  # lint findings: errors and warnings
    cacheable: bool


def compile_project(root: Path, file: Path, text: str) -> Compiled:
    """Validate and lint the file's text. Schema errors raise ProjectInvalid; lint findings are
    returned, so the caller reports them together with the file checks."""
    source = load_yaml(file, text)
    if source.data is None:
        source.data = {}
    if not isinstance(source.data, dict):
        raise ConfigError(
            "the file must be a mapping with keys such as 'pipelines'",
            where=f"{file}:1",
            hint="see `modelyard init` for an example project",
        )
    try:
        spec = schema.ProjectSpec.model_validate(source.data)
    except ValidationError as exc:
        raise ProjectInvalid([_locate_validation_error(source, e) for e in exc.errors()]) from None
    problems: list[Problem] = []
    pipelines = {}
    data_sources = {n: _compile_data_source(n, d) for n, d in spec.data_sources.items()}
    for name, pipeline_spec in spec.pipelines.items():
        if pipeline_spec.define:
            try:
                pipelines[name] = build_defined_pipeline(name, pipeline_spec.define, root)
            except ConfigError as exc:
                where = source.where(("pipelines", name, "define"))
                problems.append(Problem("error", where, exc.message, exc.hint or ""))
                continue
            triggers = tuple(pipeline_spec.triggers.data)
            pipelines[name] = replace(pipelines[name], data_triggers=triggers)
        else:
            pipelines[name] = compile_pipeline(name, pipeline_spec)
    for name, pipeline in pipelines.items():
        issues = lint_pipeline(pipeline, data_sources)
        problems += [locate_issue(source, name, i) for i in issues]
        pipelines[name] = with_data_sources(pipeline, data_sources)
    return Compiled(
        name=spec.name,
        data_sources=data_sources,
        settings=spec.settings,
        environment_lock=spec.environment.lock,
        pipelines=pipelines,
        lines=source.lines,
        problems=problems,
        # a pipeline defined in Python depends on code, not only on this file
        cacheable=not any(p.define for p in spec.pipelines.values())
        and not any(p.level == "error" for p in problems),
    )


def with_data_sources(pipeline: Pipeline, data_sources: dict[str, DataSource]) -> Pipeline:
    """The pipeline carrying the definitions of the data sources it reads or is triggered by."""
    used: set[str] = set(pipeline.data_triggers)
    for step in pipeline.steps.values():
        used |= referenced_data(step)
    frozen = {n: data_sources[n] for n in sorted(used) if n in data_sources}
    return replace(pipeline, data_sources=frozen)


def _compile_data_source(name: str, spec: schema.DataSourceSpec) -> DataSource:
    return DataSource(
        name=name,
        url=spec.url,
        include=tuple(spec.include),
        exclude=tuple(spec.exclude),
        date_prefix=spec.date_prefix,
        storage_options=dict(spec.storage_options),
    )


def build_defined_pipeline(name: str, target: str, root: Path) -> Pipeline:
    """Build a pipeline with its Python definition (`module:function`)."""
    from modelyard.pipeline.builder import build_pipeline
    from modelyard.project.imports import import_project_module

    module_name, _, attribute = target.partition(":")
    try:
        module = import_project_module(module_name, root)
        definition = getattr(module, attribute, None)
        if not callable(definition):
            raise ConfigError(
                f"'{attribute}' is not a function of module '{module_name}'",
                hint="define it with @modelyard.define_pipeline, or fix the name",
            )
        return build_pipeline(name, definition)
    except ConfigError:
        raise
    except ImportError as exc:
        raise ConfigError(
            f"cannot import '{module_name}': {exc}",
            hint="modules are looked up in the project folder first, then installed packages",
        ) from None
    except Exception as exc:  # the user's definition code failed: say where, without traceback
        raise ConfigError(
            f"defining pipeline '{name}' with {target} failed: {type(exc).__name__}: {exc}",
            hint="fix the pipeline definition function",
        ) from None


def compile_pipeline(name: str, spec: schema.PipelineSpec) -> Pipeline:
    parameters = {
        pname: Parameter(
            name=pname,
            type=p.type or infer_type(p.default),
            default=p.default,
            required=p.required,
            description=p.description,
            choices=tuple(p.choices) if p.choices is not None else None,
        )
        for pname, p in spec.parameters.items()
    }
    steps = {sname: _compile_step(sname, s) for sname, s in spec.steps.items()}
    return Pipeline(
        name=name,
        steps=steps,
        parameters=parameters,
        description=spec.description,
        max_parallel=spec.max_parallel,
        data_triggers=tuple(spec.triggers.data),
    )


def _compile_step(name: str, spec: Any) -> Step:
    common: dict[str, Any] = {
        "name": name,
        "description": spec.description,
        "after": tuple(spec.after),
    }
    if isinstance(spec, schema.RunStepSpec | schema.PythonStepSpec):
        common |= {
            "inputs": dict(spec.inputs),
            "outputs": tuple(spec.outputs),
            "values": tuple(spec.values),
            "params": dict(spec.params),
            "env": dict(spec.env),
            "code": tuple(spec.code),
            "retry": Retry(**spec.retries.model_dump()),
            "timeout": spec.timeout,
            "cache": spec.cache,
        }
    if isinstance(spec, schema.RunStepSpec):
        command = spec.run if isinstance(spec.run, str) else tuple(spec.run)
        return Step(
            kind="run",
            command=command,
            shell=spec.shell,
            contract=spec.contract,
            workdir=spec.workdir,
            **common,
        )
    if isinstance(spec, schema.PythonStepSpec):
        return Step(kind="python", function=spec.python, executor=spec.executor, **common)
    if isinstance(spec, schema.ConditionStepSpec):
        return Step(
            kind="condition",
            condition=spec.condition,
            then=tuple(spec.then),
            otherwise=tuple(spec.else_),
            **common,
        )
    if isinstance(spec, schema.FailStepSpec):
        return Step(kind="fail", message=spec.fail, **common)
    if isinstance(spec, schema.RegisterStepSpec):
        return Step(
            kind="register",
            registration=_compile_registration(spec.register_),
            retry=Retry(**spec.retries.model_dump()),
            timeout=spec.timeout,
            cache=False,  # registering is a side effect: never taken from the cache
            **common,
        )
    if isinstance(spec, schema.DeployStepSpec):
        return Step(
            kind="deploy",
            deployment=_compile_deployment(spec.deploy),
            retry=Retry(**spec.retries.model_dump()),
            timeout=spec.timeout,
            cache=False,  # deploying is a side effect: never taken from the cache
            **common,
        )
    assert isinstance(spec, schema.ApprovalStepSpec)
    return Step(
        kind="approval",
        message=spec.approval.message,
        approval_timeout=spec.approval.timeout,
        approves=spec.approval.approves,
        alias_on_approval=spec.approval.alias_on_approval,
        **common,
    )


def _compile_registration(spec: schema.RegisterBody) -> Registration:
    package = spec.package

    def package_file(value: str | schema.PackageFileSpec) -> PackageFile:
        if isinstance(value, str):
            return PackageFile(value)
        return PackageFile(value.output, value.file)

    return Registration(
        model=spec.model,
        description=spec.description,
        preprocessor=package_file(package.preprocessor) if package else None,
        booster=package_file(package.model) if package else None,
        columns=tuple(package.columns) if package and package.columns is not None else None,
        input_example=package.input_example if package else None,
        requirements=tuple(package.requirements) if package else (),
        mlflow_model=spec.mlflow_model,
        metrics=dict(spec.metrics),
        params=dict(spec.params),
        tags=dict(spec.tags),
        approval_status=spec.approval_status,
        gate=tuple(
            GateRule(
                metric=r.metric,
                min=r.min,
                max=r.max,
                better_than=r.better_than,
                direction=r.direction,
                margin=r.margin,
            )
            for r in spec.gate
        ),
        alias_on_register=spec.alias_on_register,
        evidence=EvidenceSpec(**spec.evidence.model_dump()) if spec.evidence else None,
    )


def _compile_deployment(spec: schema.DeployBody) -> Deployment:
    autoscale = None
    if spec.autoscale is not None:
        scaling = spec.autoscale
        # AutoscalePolicy's own names: the step builds the policy from them as they are
        autoscale = {
            "min_replicas": scaling.min,
            "max_replicas": scaling.max,
            "target": scaling.target,
            "scale_out_cooldown": scaling.cooldown,
            "scale_in_cooldown": scaling.cooldown,
            "window": scaling.window,
        }
    rollout = None
    if spec.rollout is not None:
        given = spec.rollout.model_dump(exclude_none=True)
        if "bake" in given:
            given["bake_seconds"] = given.pop("bake")
        if "strategy" in given:  # `all-at-once` as the CLI writes it
            given["strategy"] = given["strategy"].replace("-", "_")
        rollout = given
    return Deployment(
        model=spec.model,
        endpoint=spec.endpoint,
        stage=spec.stage,
        replicas=spec.replicas,
        autoscale=autoscale,
        rollout=rollout,
        allow_unapproved=spec.allow_unapproved,
    )


_STEP_TAGS = set(schema.STEP_KINDS)


def _locate_validation_error(source: YamlSource, error: Any) -> Problem:
    loc = list(error["loc"])
    # pydantic puts the discriminator tag of a step into the location: drop it
    if len(loc) >= 5 and loc[0] == "pipelines" and loc[2] == "steps" and loc[4] in _STEP_TAGS:
        del loc[4]
    loc = [{"else_": "else", "register_": "register"}.get(p, p) for p in loc]
    path = tuple(p for p in loc if isinstance(p, str | int))
    key = ".".join(str(p) for p in path) or "(top level)"
    kind = error["type"]
    message = error["msg"]
    if kind == "extra_forbidden":
        message = f"unknown key '{path[-1]}'"
        hint = "check the spelling; see the documented keys in the README"
    elif kind == "missing":
        hint = f"add the key '{path[-1]}'"
        message = f"missing key '{path[-1]}'"
    elif kind == "step_kind":
        hint = "write e.g. `run: python train.py` or `python: module:function`"
    elif kind == "string_pattern_mismatch":
        message = f"'{error.get('input')}' is not a valid value"
        hint = "names use letters, digits, '_' and '-' and start with a letter or '_'"
    else:
        hint = "correct the value"
    return Problem("error", source.where(path), f"{key}: {message}", hint)
