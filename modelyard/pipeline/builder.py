"""Define steps and pipelines in Python: the `@step` decorator and `PipelineBuilder`.

A Python-defined pipeline becomes the same `Pipeline` as one written in modelyard.yaml, so it is
linted, cached and recorded the same way. Reference it from the project file:

    pipelines:
      quick:
        define: flows:quick        # module:function, looked up in the project folder first

    # flows.py
    from modelyard import define_pipeline, step

    @step(outputs=["model"], values=["accuracy"])
    def train(data, model, depth: int = 3):
        ...
        return {"accuracy": 0.93}

    @define_pipeline(parameters={"depth": 3})
    def quick(p):
        prep = p.run("prepare", "python prepare.py --out ${{ outputs.data }}", outputs=["data"])
        p.call(train, inputs={"data": prep.outputs.data}, params={"depth": p.params.depth})

A decorated step is still a plain function: unit tests call it directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from modelyard.pipeline.model import (
    DEPLOY_VALUES,
    REGISTER_VALUES,
    Parameter,
    Pipeline,
    Retry,
    Step,
)
from modelyard.pipeline.params import infer_type

if TYPE_CHECKING:
    from modelyard.pipeline.registration import EvidenceSpec, GateRule, PackageFile

F = TypeVar("F", bound=Callable[..., Any])
STEP_ATTRIBUTE = "__modelyard_step__"
PIPELINE_ATTRIBUTE = "__modelyard_pipeline__"


@dataclass(frozen=True)
class StepDefaults:
    """What `@step` declares about a function; `PipelineBuilder.call` may override it."""

    outputs: tuple[str, ...] = ()
    values: tuple[str, ...] = ()
    executor: str = "process"
    retries: int = 0
    timeout: float | None = None
    cache: bool = True
    code: tuple[str, ...] = ()


def step(
    function: F | None = None,
    *,
    outputs: Iterable[str] = (),
    values: Iterable[str] = (),
    executor: str = "process",
    retries: int = 0,
    timeout: float | None = None,
    cache: bool = True,
    code: Iterable[str] = (),
) -> Any:
    """Mark a function as a pipeline step (usable bare, `@step`, or with options)."""
    defaults = StepDefaults(
        tuple(outputs), tuple(values), executor, retries, timeout, cache, tuple(code)
    )

    def mark(fn: F) -> F:
        setattr(fn, STEP_ATTRIBUTE, defaults)
        return fn

    return mark(function) if function is not None else mark


def define_pipeline(
    function: Callable[[PipelineBuilder], None] | None = None,
    *,
    parameters: Mapping[str, Any] | None = None,
    description: str = "",
    max_parallel: int | None = None,
) -> Any:
    """Mark `function(builder)` as a pipeline definition, with parameter defaults."""

    def mark(fn: Callable[[PipelineBuilder], None]) -> Callable[[PipelineBuilder], None]:
        setattr(fn, PIPELINE_ATTRIBUTE, (dict(parameters or {}), description, max_parallel))
        return fn

    return mark(function) if function is not None else mark


class _References:
    """`refs.name` -> the `${{ prefix.name }}` reference string."""

    def __init__(self, prefix: str, names: Iterable[str] | None = None):
        self._prefix = prefix
        self._names = set(names) if names is not None else None

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._names is not None and name not in self._names:
            known = ", ".join(sorted(self._names)) or "(none)"
            raise AttributeError(f"{self._prefix} has no '{name}'; known: {known}")
        return f"${{{{ {self._prefix}.{name} }}}}"


@dataclass(frozen=True)
class StepHandle:
    name: str
    output_names: tuple[str, ...] = ()
    value_names: tuple[str, ...] = ()

    @property
    def outputs(self) -> Any:
        return _References(f"steps.{self.name}.outputs", self.output_names)

    @property
    def values(self) -> Any:
        return _References(f"steps.{self.name}.values", self.value_names)

    @property
    def result(self) -> str:
        """A condition step's outcome, for use in later expressions."""
        return f"${{{{ steps.{self.name}.values.result }}}}"


@dataclass
class PipelineBuilder:
    name: str
    description: str = ""
    max_parallel: int | None = None
    parameters: dict[str, Parameter] = field(default_factory=dict)
    steps: dict[str, Step] = field(default_factory=dict)

    @property
    def params(self) -> Any:
        return _References("params", self.parameters)

    def parameter(
        self,
        name: str,
        default: Any = None,
        *,
        type: str | None = None,
        description: str = "",
        choices: Iterable[Any] | None = None,
        required: bool = False,
    ) -> str:
        self.parameters[name] = Parameter(
            name=name,
            type=type or infer_type(default),
            default=default,
            required=required,
            description=description,
            choices=tuple(choices) if choices is not None else None,
        )
        return f"${{{{ params.{name} }}}}"

    def call(
        self,
        function: Callable[..., Any],
        name: str | None = None,
        *,
        inputs: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        after: Iterable[str | StepHandle] = (),
        **overrides: Any,
    ) -> StepHandle:
        """Add a `python` step calling `function` (its `@step` declarations apply)."""
        module = getattr(function, "__module__", None)
        qualname = getattr(function, "__qualname__", "")
        if not module or module == "__main__" or "." in qualname or "<" in qualname:
            raise ValueError(
                f"{function!r} must be a top-level function of an importable module "
                "(not __main__, a lambda or a nested function)"
            )
        defaults: StepDefaults = getattr(function, STEP_ATTRIBUTE, StepDefaults())
        defaults = replace(defaults, **overrides)
        step_name: str = name or qualname
        return self._add(
            Step(
                name=step_name,
                kind="python",
                function=f"{module}:{qualname}",
                executor=defaults.executor,
                inputs=dict(inputs or {}),
                outputs=defaults.outputs,
                values=defaults.values,
                params=dict(params or {}),
                code=defaults.code,
                retry=Retry(max=defaults.retries),
                timeout=defaults.timeout,
                cache=defaults.cache,
                after=_names(after),
            )
        )

    def run(
        self,
        name: str,
        command: str | Iterable[str],
        *,
        inputs: Mapping[str, str] | None = None,
        outputs: Iterable[str] = (),
        values: Iterable[str] = (),
        params: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        contract: str = "modelyard",
        retries: int = 0,
        timeout: float | None = None,
        cache: bool = True,
        after: Iterable[str | StepHandle] = (),
    ) -> StepHandle:
        """Add a `run` step (a command under the files-in/files-out contract)."""
        return self._add(
            Step(
                name=name,
                kind="run",
                command=command if isinstance(command, str) else tuple(command),
                contract=contract,
                inputs=dict(inputs or {}),
                outputs=tuple(outputs),
                values=tuple(values),
                params=dict(params or {}),
                env=dict(env or {}),
                retry=Retry(max=retries),
                timeout=timeout,
                cache=cache,
                after=_names(after),
            )
        )

    def condition(
        self,
        name: str,
        expression: str,
        *,
        then: Iterable[str | StepHandle] = (),
        otherwise: Iterable[str | StepHandle] = (),
        after: Iterable[str | StepHandle] = (),
    ) -> StepHandle:
        return self._add(
            Step(
                name=name,
                kind="condition",
                condition=expression,
                then=_names(then),
                otherwise=_names(otherwise),
                after=_names(after),
            )
        )

    def fail(
        self, name: str, message: str, *, after: Iterable[str | StepHandle] = ()
    ) -> StepHandle:
        return self._add(Step(name=name, kind="fail", message=message, after=_names(after)))

    def approval(
        self,
        name: str,
        message: str = "",
        *,
        timeout: float | None = None,
        approves: str | StepHandle | None = None,
        alias_on_approval: str | None = None,
        after: Iterable[str | StepHandle] = (),
    ) -> StepHandle:
        """Add an approval step; with `approves` (a register step), the decision also approves
        or rejects the version that step registered (and an approval moves `alias_on_approval`
        to it)."""
        return self._add(
            Step(
                name=name,
                kind="approval",
                message=message,
                approval_timeout=timeout,
                approves=approves.name if isinstance(approves, StepHandle) else approves,
                alias_on_approval=alias_on_approval,
                after=_names(after),
            )
        )

    def register(
        self,
        name: str,
        model: str,
        *,
        preprocessor: str | PackageFile | None = None,
        booster: str | PackageFile | None = None,
        mlflow_model: str | None = None,
        columns: Iterable[str] | None = None,
        input_example: Any = None,
        requirements: Iterable[str] = (),
        metrics: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        approval_status: str = "pending",
        gate: Iterable[GateRule | Mapping[str, Any]] = (),
        alias_on_register: str | None = None,
        evidence: EvidenceSpec | Mapping[str, Any] | None = None,
        description: str = "",
        retries: int = 0,
        timeout: float | None = None,
        after: Iterable[str | StepHandle] = (),
    ) -> StepHandle:
        """Add a `register` step: package `preprocessor` + `booster` (or take `mlflow_model`),
        check the `gate` rules on `metrics`, and record a version of `model`; with `evidence`,
        also predict on an evaluation set with the candidate and the champion for the reviewer."""
        from modelyard.pipeline.registration import (
            EvidenceSpec,
            GateRule,
            PackageFile,
            Registration,
        )

        def package_file(value: str | PackageFile | None) -> PackageFile | None:
            return PackageFile(value) if isinstance(value, str) else value

        registration = Registration(
            model=model,
            description=description,
            preprocessor=package_file(preprocessor),
            booster=package_file(booster),
            columns=tuple(columns) if columns is not None else None,
            input_example=input_example,
            requirements=tuple(requirements),
            mlflow_model=mlflow_model,
            metrics=dict(metrics or {}),
            params=dict(params or {}),
            tags=dict(tags or {}),
            approval_status=approval_status,
            gate=tuple(r if isinstance(r, GateRule) else GateRule(**r) for r in gate),
            alias_on_register=alias_on_register,
            evidence=EvidenceSpec(**evidence) if isinstance(evidence, Mapping) else evidence,
        )
        return self._add(
            Step(
                name=name,
                kind="register",
                registration=registration,
                retry=Retry(max=retries),
                timeout=timeout,
                cache=False,
                after=_names(after),
            )
        )

    def deploy(
        self,
        name: str,
        model: str | StepHandle,
        *,
        endpoint: str,
        stage: str,
        replicas: int | None = None,
        autoscale: Mapping[str, Any] | None = None,
        rollout: Mapping[str, Any] | None = None,
        allow_unapproved: bool = False,
        retries: int = 0,
        timeout: float | None = None,
        after: Iterable[str | StepHandle] = (),
    ) -> StepHandle:
        """Add a `deploy` step: deploy the version register step `model` made to `endpoint` in
        `stage` and wait for the rollout. `autoscale` takes AutoscalePolicy's fields
        (min_replicas, max_replicas, target, ...), `rollout` RolloutPlan's (strategy,
        canary_percent, bake_seconds, ...); lint checks both."""
        from modelyard.pipeline.deployment import Deployment

        deployment = Deployment(
            model=model.name if isinstance(model, StepHandle) else model,
            endpoint=endpoint,
            stage=stage,
            replicas=replicas,
            autoscale=dict(autoscale) if autoscale is not None else None,
            rollout=dict(rollout) if rollout is not None else None,
            allow_unapproved=allow_unapproved,
        )
        return self._add(
            Step(
                name=name,
                kind="deploy",
                deployment=deployment,
                retry=Retry(max=retries),
                timeout=timeout,
                cache=False,
                after=_names(after),
            )
        )

    def _add(self, new: Step) -> StepHandle:
        if new.name in self.steps:
            raise ValueError(f"duplicate step name '{new.name}'")
        self.steps[new.name] = new
        values = {"register": REGISTER_VALUES, "deploy": DEPLOY_VALUES}.get(new.kind, new.values)
        return StepHandle(new.name, new.produced_outputs, values)

    def build(self) -> Pipeline:
        return Pipeline(
            name=self.name,
            steps=dict(self.steps),
            parameters=dict(self.parameters),
            description=self.description,
            max_parallel=self.max_parallel,
        )


def build_pipeline(name: str, definition: Callable[[PipelineBuilder], None]) -> Pipeline:
    """Run a `@define_pipeline` function (or any `function(builder)`) and return its pipeline."""
    parameters, description, max_parallel = getattr(definition, PIPELINE_ATTRIBUTE, ({}, "", None))
    builder = PipelineBuilder(name, description=description, max_parallel=max_parallel)
    for param_name, default in parameters.items():
        builder.parameter(param_name, default)
    definition(builder)
    if not builder.steps:
        raise ValueError(f"the definition of pipeline '{name}' added no steps")
    return builder.build()


def _names(items: Iterable[str | StepHandle]) -> tuple[str, ...]:
    return tuple(item.name if isinstance(item, StepHandle) else item for item in items)
